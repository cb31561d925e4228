# %% [markdown]
# # Head scans: which heads induct, sink, retrieve, stream — and do they matter?
#
# Every detector in `interp.heads` scores all heads of a model with one `HeadScores`
# ([n_layers, n_heads]) computed from attention statistics streamed out of the attention kernel
# (never the N x N pattern). `verify` then ablates the top-k heads and k random heads and
# measures the behaviour the detector claims. Small sizes here so the notebook runs in seconds;
# `benchmarks/scans.py` runs the same calls at scale.

# %%
import plotly.graph_objects as go
import torch

import interp
from interp.heads import DETECTORS, get_detector, verify

# One torch thread: on a small shared CPU (2 cores here), OpenMP threads that spin-wait for a
# core held by another process made these small forwards several times slower than one thread.
torch.set_num_threads(1)

model = interp.load_model("smollm2-135m", show_progress=False)
for detector in DETECTORS.values():
    print(f"{detector.name:16s} {detector.description}")


def heatmap(scores, title):
    fig = go.Figure(go.Heatmap(z=scores.scores.numpy(), colorscale="Viridis",
                               hovertemplate="layer %{y} head %{x}<br>score %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer", width=420, height=520)
    fig.show()


# %% [markdown]
# ## Induction heads
# TransformerLens's `head_detector` "mul" score (attention on the token after an earlier
# occurrence of the current token), averaged over repeated random-token sequences.

# %%
induction = get_detector("induction").scan(model, params={"n_prompts": 4, "max_tokens": 96, "prompts": "repeated"})
heatmap(induction, "induction score")
induction.top(5)

# %% [markdown]
# The streamed score equals TransformerLens's own `detect_head` on the same tokens (which caches
# every pattern): the difference is float rounding.

# %%
from transformer_lens.head_detector import detect_head

from interp.tasks.repeated_tokens import repeated_tokens

one = repeated_tokens(model, 1, half=24, seed=7).tokens


class SameTokens:  # what detect_head needs of a model, on our token ids
    cfg = model.bridge.cfg
    to_tokens = staticmethod(lambda seq: one.input_ids)
    run_with_cache = staticmethod(model.bridge.run_with_cache)


ours = get_detector("induction").scan(model, prompts=one)
reference = detect_head(SameTokens(), "unused", "induction_head")
print("max |ours - TransformerLens| =", float((ours.scores - reference).abs().max()))

# %% [markdown]
# ## Attention sinks
# Gu et al.'s alpha_1: the mean attention each head gives the first token; Sink_1^0.3 is the
# fraction of heads with alpha_1 > 0.3. SmolLM2 prepends no BOS, so the first token is whatever
# the text starts with — and still collects the attention. Later tokens with alpha > 0.1 are
# listed with their text.

# %%
sink = get_detector("sink").scan(model, params={"n_prompts": 3, "max_tokens": 128})
heatmap(sink, "first-token attention (alpha_1)")
print("Sink_1^0.3 =", round(sink.info["sink_fraction"], 3), "| first tokens:", sink.info["first_tokens"])
{token: record["count"] for token, record in list(sink.info["later_sink_tokens"].items())[:6]}

# %% [markdown]
# ## Streaming heads
# The share of attention on 4 sink tokens plus the most recent W keys; heads above 0.9 could
# drop the rest of their KV cache (DuoAttention's streaming heads).

# %%
streaming = get_detector("streaming").scan(model, params={"n_prompts": 1, "max_tokens": 320, "windows": (32, 128)})
{f"W={w}": f"{100 * f:.0f}% of heads streaming" for w, f in streaming.info["streaming_fraction"].items()}

# %% [markdown]
# ## Retrieval heads
# Wu et al.: while the model answers a needle-in-a-haystack question greedily, a head scores when
# its top-1 key is inside the needle and the generated token is the token there.

# %%
retrieval = get_detector("retrieval").scan(
    model, params={"context_lengths": (400,), "depths": (50.0,), "n_needles": 1, "max_new_tokens": 24})
test = retrieval.info["tests"][0]
print(f"Q: {test['question']}\nA: {test['response']!r} (ROUGE-1 recall {test['recall']})")
print("heads > 0.1:", retrieval.info["n_retrieval_heads"], "| top:", retrieval.top_heads(5))

# %% [markdown]
# ## Causal checks
# Ablate (zero ablation of `hook_z`) the top-5 heads, then 5 random heads, and measure the
# behaviour: the loss on the second half of repeated random tokens for induction heads, the
# next-token loss with the first-token key masked for sink heads.

# %%
rows = []
for scores in (induction, sink):
    v = verify(model, scores, k=5, ablation="zero", n_random=2, n_prompts=2, max_tokens=64)
    rows.append({"detector": v["detector"], "behaviour": v["behaviour"], "clean": round(v["baseline"], 3),
                 "top-5": round(v["top_k"], 3), "random-5": [round(x, 3) for x in v["random_k"]],
                 "effect ratio": round(v["ratio"], 1)})
rows

# %% [markdown]
# ## One call for the CLI, the dashboard and scripts
# `run_scan` runs several detectors (optionally verified), each stored as its own run as soon as it
# finishes (an interrupted scan keeps what it finished);
# `scan_json` is the JSON `interp scan --json` writes.

# %%
import tempfile

from interp.heads.scan import run_scan, scan_json
from interp.store import Store

store = Store(f"{tempfile.mkdtemp()}/results.sqlite")
result = run_scan(model, "previous_token,duplicate_token",
                  params={"previous_token": {"n_prompts": 2, "max_tokens": 64},
                          "duplicate_token": {"n_prompts": 2, "max_tokens": 64}}, store=store)
print("stored runs", result.run_ids)
summary = scan_json(model, result.scores)
{name: entry["top"][:3] for name, entry in summary["detectors"].items()}
