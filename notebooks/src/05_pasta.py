# %% [markdown]
# # PASTA: which heads to steer, then steer them (SmolLM2-135M)
#
# PASTA (Zhang et al., ICLR 2024, "Tell Your Model Where to Attend") highlights a phrase of the
# prompt: on chosen heads, the attention to every other token is scaled by alpha = 0.01. Which
# heads is found by *profiling*: steer each head alone on a task where emphasis matters, rank
# the heads by the gain over the unsteered model, keep the top set of every task, intersected.
#
# 1. the two built-in tasks (counterfactual facts in context; an instruction to answer in
#    capital letters), split into profiling and evaluation halves,
# 2. a small profile (`interp.steering.pasta_profile.profile_heads`, what `interp pasta` runs),
#    restricted here to a few late layers so that it runs in seconds on a CPU,
# 3. steering one prompt with the profiled heads (`interp steer --pasta PHRASE --heads auto`),
# 4. evaluation-half accuracy: unsteered, profiled heads, as many random heads.
#
# `benchmarks/pasta_profile.py` runs the same code at scale (benchmarks/results/pasta.md); its
# profiled heads are scored here too. At notebook size the profile is too small to beat random
# heads; the benchmark's set is the one to judge PASTA by.

# %%
import json
import random
from pathlib import Path

import plotly.graph_objects as go
import torch

import interp
from interp.forward import generate
from interp.steering.edits import pasta_highlight
from interp.steering.pasta_profile import evaluate_heads, profile_heads
from interp.tasks.icl import wilson_interval
from interp.tasks.pasta_tasks import distinguishable, load_pasta_task, split

torch.set_num_threads(1)
model = interp.load_model("smollm2-135m", show_progress=False)
tasks = [load_pasta_task(name) for name in ("counterfactual", "uppercase")]
for task in tasks:
    profiling, evaluation = split(task, seed=0)
    print(task.name, len(profiling), "profiling /", len(evaluation), "evaluation items")
    print(repr(task.items[0].prompt), "| highlight:", repr(task.items[0].highlight))

# %% [markdown]
# ## A small profile: 4 items per task, the heads of layers 20-23 one by one

# %%
profile = profile_heads(model, tasks, n_items=4, layers=None, size=4,
                        only_layers=[20, 21, 22, 23], batch_size=36)
print("chosen heads", profile.heads, "k =", profile.k, f"({profile.seconds:.0f} s)")
print("unsteered on the profiling items", profile.baseline)

# %%
figure = go.Figure()
for name, rows in profile.head_gains.items():
    rows = sorted(rows, key=lambda r: (r[0], r[1]))
    figure.add_bar(x=[f"{r[0]}.{r[1]}" for r in rows], y=[r[2] for r in rows], name=name)
figure.update_layout(barmode="group", yaxis_title="margin gain, head steered alone",
                     xaxis_title="head", height=380)
figure.show()

# %% [markdown]
# ## Steer one prompt with the profiled heads

# %%
heads = profile.heads or [tuple(r[:2]) for r in profile.head_gains["counterfactual"][:4]]
for task in tasks:
    item = split(task, seed=0)[1][0]
    edit = pasta_highlight(model, item.prompt, item.highlight, heads, alpha=0.01)
    before, after = (generate(model, [item.prompt], max_new_tokens=3, edit=e)[0]
                     for e in (None, edit))
    print(repr(item.prompt[-60:]), "| highlight:", repr(item.highlight))
    print(f"  target {item.target!r}  without: {before.text!r}  with: {after.text!r}")

# %% [markdown]
# ## Evaluation halves (never profiled on): unsteered, profiled, random heads
#
# Four items and four layers are too few to find good heads; the set the benchmark profiled
# (16 items per task, every layer screened; benchmarks/results/pasta.json) is scored beside it.

# %%
benchmark = Path("../benchmarks/results/pasta.json")
benchmark_heads = [tuple(h) for h in json.loads(benchmark.read_text())["profile"]["heads"]]
print("benchmark-profiled heads", benchmark_heads)
all_heads = [(l, h) for l in range(model.n_layers) for h in range(model.n_heads)]
for task in tasks:
    items, _ = distinguishable(model, split(task, seed=0)[1][:16])
    for name, hs in (("unsteered", None), ("profiled", heads), ("benchmark", benchmark_heads),
                     ("random", random.Random(0).sample(all_heads, len(benchmark_heads)))):
        margin = evaluate_heads(model, items, hs)
        correct = int((margin > 0).sum())
        low, high = wilson_interval(correct, len(items))
        print(f"{task.name:<15} {name:<10} {correct}/{len(items)} [{low:.2f}, {high:.2f}] "
              f"mean margin {float(margin.mean()):+.2f}")
