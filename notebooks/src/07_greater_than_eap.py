# %% [markdown]
# # The greater-than circuit of SmolLM2-135M by EAP-IG
#
# Hanna et al. (2023) asked how GPT-2 completes "The war lasted from the year 1732 to the year 17"
# with a year after 32. SmolLM2 writes every digit as its own token, so the next token here is
# the *tens digit* of the end year; start years end in 9 (1739), so "tens digit > 3" is exactly
# "a year after 1739" (`interp/tasks/greater_than.py`). The metric is
# p(tens digit after) - p(not after); the corruption starts the war in year 01.
#
# 1. **Discover** with EAP-IG (Hanna et al. 2024): every edge of the model's graph (embeddings,
#    heads with their q/k/v inputs, MLPs, logits) scored from gradients averaged along the path
#    from corrupted to clean embeddings.
# 2. **Evaluate** as MIB does, on prompts disjoint from discovery: the top k% of edges kept,
#    every other edge patched from the corrupted run; f(k), CPR, CMD, random circuits.
# 3. **Look** at the circuit: the strongest edges, the heads, and where the MLPs sit.
#
# The same call is `interp circuit smollm2-135m --task greater-than --method eap-ig`. Sizes are
# small so the notebook runs in about a minute on a CPU; `benchmarks/circuits_eap.py` runs at scale.

# %%
import time

import torch

import interp
from circuits.discover import discover
from circuits.plots import edge_circuit_graph, faithfulness_figure
from interp.tasks.greater_than import greater_than_prompts

torch.set_num_threads(1)
started = time.perf_counter()
model = interp.load_model("smollm2-135m", show_progress=False)
example = greater_than_prompts(model, n=2, seed=0)
example.texts[0], model.to_str_tokens(example.tokens.token_lists()[0])[-6:]

# %% [markdown]
# ## 1-2. Discover on 8 prompts, evaluate on 8 others
#
# `n_random=1` random circuit per size; the k grid is MIB's.

# %%
result = discover(model, "greater-than", "eap-ig", n_discover=8, n_eval=8, n_random=1, steps=5)
print(f"CPR {result['cpr']:.3f}  CMD {result['cmd']:.3f}  random CMD {result['random_cmd']:.3f}  "
      f"({result['n_discover']} discovery / {result['n_eval']} evaluation prompts, "
      f"{result['seconds']:.0f} s)")
faithfulness_figure(result["faithfulness_curve"], result["random_curve"],
                    title="greater-than, EAP-IG: faithfulness against circuit size")

# %% [markdown]
# ## 3. The circuit's strongest edges and heads
#
# Scores are the first-order (integrated) drop of the metric when the edge is corrupted:
# positive edges carry what the clean prompt needs.

# %%
for edge in result["edges"][:12]:
    print(f"{edge['src']:>8} -> {edge['dst']:<12} {edge['score']:+.4f}")
top_heads = sorted(result["head_scores"], key=lambda h: -h["score"])[:8]
print("heads by total |edge score|:", ", ".join(f"{h['layer']}.{h['head']}" for h in top_heads))

# %%
edge_circuit_graph(result["edges"], model.n_layers, model.n_heads, top=60,
                   title="greater-than circuit of SmolLM2-135M (EAP-IG, top 60 edges)")

# %%
print(f"notebook ran in {time.perf_counter() - started:.0f} s")
