# %% [markdown]
# # ACT head search on SST-2 with SmolLM2-135M
#
# ACT (Yu et al., ICML 2024) scales the hidden attention sinks of chosen heads. Which heads is a
# search: each head calibrated alone on prompts from a train split, the helpful ones added
# greedily while a dev split improves. Here, at notebook size:
#
# 1. load SST-2 (train for calibration prompts and demonstrations, dev for the stop, test for
#    the score; all disjoint),
# 2. run the search (`interp.steering.act_search.search_heads`, what `interp calibrate` runs),
# 3. plot each screened head's effect alone (exact margin gain against its first-order estimate),
# 4. score baseline / ACT on all heads / ACT on the searched heads on test examples,
# 5. save the `Calibration` and apply it again from its JSON.
#
# **Sizes here are tiny** (6 calibration and 6 dev prompts, 3 screened heads, 24 test examples) so
# that the notebook executes in under a minute on a CPU; at this size the accuracies below are
# noise (read their intervals). The real figures come from `benchmarks/calibration.py`, which runs
# the same code at scale: see `benchmarks/results/calibration.md` (SmolLM2 0-shot, 800 SST-2 test
# examples: baseline 54.6%, ACT on the searched heads 69.1%, ACT on all heads 62.4%).

# %%
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")   # no progress-bar noise
import plotly.graph_objects as go
import torch

import interp
from interp.steering.act_eval import all_heads_edit
from interp.steering.act_search import Calibration, search_heads
from interp.tasks.icl import evaluate, load_task, sample

torch.set_num_threads(1)
model = interp.load_model("smollm2-135m", show_progress=False)
SST2 = Path("../../shared/data/icl/sst2")      # see ../shared/data/SOURCES.md
task, train = load_task(SST2 / "stsa.binary.train")
_, dev = load_task(SST2 / "stsa.binary.dev", task=task)
_, test = load_task(SST2 / "stsa.binary.test", task=task)
print(task.labels, len(train), len(dev), len(test))

# %% [markdown]
# ## The search (0-shot, 6 calibration and 6 dev prompts, 3 screened heads)

# %%
calibration = search_heads(model, task, train, dev, shots=0, n_calibration=6, n_dev=6,
                           screen=3, seed=0)
print("heads", calibration.heads, f"dev {calibration.baseline_dev_accuracy:.3f} -> "
      f"{calibration.dev_accuracy:.3f}", f"{calibration.search_seconds:.0f} s")

# %% [markdown]
# ## Each screened head alone: exact margin gain vs the first-order estimate

# %%
gains = calibration.head_gains            # [layer, head, accuracy gain, margin gain, estimate]
figure = go.Figure(go.Scatter(x=[g[4] for g in gains], y=[g[3] for g in gains],
                              mode="markers+text", text=[f"{g[0]}.{g[1]}" for g in gains],
                              textposition="top center"))
figure.update_layout(xaxis_title="first-order estimate of the margin gain",
                     yaxis_title="exact margin gain (calibration set)", height=400)
figure.show()

# %% [markdown]
# ## Scored on SST-2 test examples (Wilson 95% intervals)

# %%
examples = sample(test, 24, 0)
for name, edit in (("baseline", None), ("ACT all heads", all_heads_edit(model)),
                   ("ACT searched", calibration.edit(model))):
    result = evaluate(model, task, examples, train, shots=0, edit=edit)
    print(f"{name:<14} {result.accuracy:.3f} [{result.ci95[0]:.3f}, {result.ci95[1]:.3f}]",
          result.per_class)

# %% [markdown]
# ## Save, load, apply

# %%
path = Path(tempfile.mkdtemp()) / "cal.json"
calibration.save(path)
again = Calibration.load(path)
assert again == calibration
print(evaluate(model, task, examples[:4], train, shots=0, edit=again.edit(model)).accuracy)

# %% [markdown]
# ## What the calibration does to one prompt (the dashboard's steering playground)
#
# The sinks each calibrated head calibrates on one test prompt, and the label words' probabilities
# with and without it (`interp.steering.playground`, what the Steering page shows).

# %%
from interp.steering.playground import inspect_edit, sink_rows
from interp.tasks.icl import build_prompts

edit = calibration.edit(model) or all_heads_edit(model)   # no head kept: show ACT on every head
prompt = build_prompts(task, examples[:1], train, 0, 0)[0]
view = inspect_edit(model, prompt, edit, targets=(" positive", " negative"))
print(prompt)
print("logit(positive) - logit(negative): without %.3f, with %.3f" % view.logit_diff())
for row in sink_rows(view)[:10]:
    print(row["head"], list(zip(row["positions"], row["tokens"])))
