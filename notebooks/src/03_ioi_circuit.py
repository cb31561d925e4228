# %% [markdown]
# # The IOI circuit of SmolLM2-135M
#
# Indirect Object Identification (Wang et al. 2022, "Interpretability in the Wild"): after
# "While Lena and Oscar were at the park, Oscar handed a lamp to" a model should say " Lena",
# the name that is not repeated. This notebook
#
# 1. builds IOI prompts and their ABC corruption (three fresh names) and measures the logit
#    difference IO - S,
# 2. sweeps every attention head with attribution patching and checks the strongest heads with
#    exact activation patching,
# 3. discovers the circuit by path patching, backwards from the logits, and measures its
#    faithfulness against random circuits of the same size.
#
# Everything here is the library the CLI (`interp patch`, `interp circuit`) and the dashboard
# call. Prompt counts are small so the notebook runs in about a minute on a CPU; the benchmarks
# (`benchmarks/patching.py`, `benchmarks/ioi_circuit.py`) run the same code on 200+ prompts.

# %%
import time

import plotly.graph_objects as go
import torch

import interp
from circuits.evaluate import faithfulness, random_baseline, template_means
from circuits.ioi import DiscoveryConfig, discover_ioi_circuit
from interp.patching import activation_patch
from interp.patching.activation import final_logits_and_cache
from interp.patching.attribution import attribution_patch, correlation
from interp.tasks.ioi import ioi_prompts

started = time.perf_counter()
model = interp.load_model("smollm2-135m", show_progress=False)
prompts = ioi_prompts(model, n=8, seed=0)  # ABBA and BABA alternate; corruption: ABC
for text, meta in list(zip(prompts.texts, prompts.metadata))[:3]:
    print(f"{text!r} -> {meta['io']!r}   corrupted: {meta['corrupted_text']!r}")

# %% [markdown]
# ## Logit difference IO - S, clean and corrupted

# %%
rows = torch.arange(len(prompts))
clean, _ = final_logits_and_cache(model, prompts.tokens, [])
corrupted, _ = final_logits_and_cache(model, prompts.corrupted, [])
clean_diff = clean[rows, prompts.answers] - clean[rows, prompts.wrong_answers]
corrupted_diff = corrupted[rows, prompts.answers] - corrupted[rows, prompts.wrong_answers]
print(f"clean:     {clean_diff.mean():.2f} +- {clean_diff.std():.2f}  (IO wins on "
      f"{(clean_diff > 0).float().mean():.0%} of prompts)")
print(f"corrupted: {corrupted_diff.mean():.2f} +- {corrupted_diff.std():.2f}")

# %% [markdown]
# ## A head sweep
# Noising: each head's output on the corrupted prompt is patched into the clean run; 1 = no
# effect, 0 = as bad as the corrupted run, above 1 = the head was working against the answer.
# Attribution patching estimates all 270 heads from one backward pass; exact activation
# patching of the last four layers (36 heads, batched: every row of a forward patches another
# head), where the name movers sit, checks it.

# %%
estimate = attribution_patch(model, prompts, "heads", direction="noise")
late = list(range(26, 30))
exact = activation_patch(model, prompts, "heads", direction="noise", layers=late)
agreement = correlation(exact.values, estimate.values[late[0]:])
print(f"attribution: {estimate.seconds:.1f}s for 270 heads; exact: {exact.seconds:.1f}s for "
      f"{len(late) * model.n_heads} heads; Pearson r = {agreement['pearson']:.2f} over those")
fig = go.Figure(go.Heatmap(z=estimate.values.numpy(), colorscale="RdBu", zmid=1,
                           hovertemplate="L%{y} H%{x}: %{z:.2f}<extra></extra>"))
fig.update_layout(title="Attribution patching, noising (1 = no effect)", xaxis_title="head",
                  yaxis_title="layer", width=450, height=600)
fig.show()
exact.top(6, by_magnitude=True)

# %% [markdown]
# ## Discovering the circuit
# Wang et al.'s method, backwards from the logits: level 1 path-patches every head straight into
# the logits (name movers lower the logit difference when corrupted, negative name movers raise
# it); level 2 into the name movers' queries at END (S-inhibition heads); level 3 into the
# S-inhibition heads' values at S2 (induction heads attend S2 -> S1+1, duplicate-token heads
# S2 -> S1); level 4 into the induction heads' keys at S1+1 (previous-token heads). Each level
# screens all heads with a first-order estimate and verifies the strongest with exact path
# patching. 8 prompts keep this quick; `interp circuit` uses more.

# %%
config = DiscoveryConfig(n_prompts=8, screen_k=8, evaluate=False, edges=False)
circuit, stages = discover_ioi_circuit(model, config)
print(circuit.summary())
{f"{c.layer}.{c.head}": circuit.evaluation["evidence"][f"{c.layer}.{c.head}"]["end->IO"]
 for c in circuit.heads if c.role == "name_mover"}  # name movers attend END -> IO

# %% [markdown]
# ## Faithfulness
# Every head outside the circuit is mean-ablated (its output replaced by its mean over the ABC
# prompts of the same template, position by position); faithfulness is the share of the full
# model's logit difference the circuit keeps. Random circuits of the same size are the baseline.

# %%
held_out = ioi_prompts(model, n=8, seed=1000)
means = template_means(model, held_out)
faithful = faithfulness(model, held_out, circuit, means)
baseline = random_baseline(model, held_out, len(circuit), n=5, means=means, f_model=faithful["F_model"])
print(f"{len(circuit)} of {model.n_total_heads} heads keep {faithful['faithfulness']:.0%} of the "
      f"logit difference ({faithful['F_circuit']:.2f} of {faithful['F_model']:.2f}); random "
      f"circuits of that size: {baseline['mean']:.0%} +- {baseline['std']:.0%}")
fig = go.Figure([go.Bar(x=["circuit"], y=[faithful["faithfulness"]], name="discovered"),
                 go.Bar(x=[f"random {i}" for i in range(len(baseline["values"]))],
                        y=baseline["values"], name="random, same size")])
fig.update_layout(title="Faithfulness F(C) / F(M)", yaxis_tickformat=".0%", width=600, height=350)
fig.show()
print(f"notebook time: {time.perf_counter() - started:.0f}s")
