# %% [markdown]
# # Circuits with sparse autoencoders on SmolLM2-135M
#
# 1. **Train an SAE** on the residual stream with the workbench's own trainer (TopK, unit-norm
#    decoder, activations streamed from the shipped corpus) and read its quality figures.
# 2. **Head codes** (O'Neill & Bui 2024): one small SAE shared by every head, trained on a few
#    IOI prompts and their negatives; a head's score is the number of its codes seen only on
#    positives. Compared with the path-patching circuit of the same model (ROC-AUC).
# 3. **A sparse feature circuit** (Marks et al. 2025) between two residual SAEs: feature nodes,
#    error nodes, edges, faithfulness, and what each feature responds to in the corpus.
#
# Every call is the library the CLI and the dashboard use (`circuits.sae`). Sizes are small so
# the notebook runs in about a minute on a CPU; `benchmarks/sae.py` runs the same code at scale.

# %%
import time

import plotly.graph_objects as go
import torch

import json
from pathlib import Path

import interp
from circuits.circuit import Circuit
from circuits.sae import FitConfig, discover_feature_circuit, sae_heads, top_contexts, train_sae
from interp.tasks.ioi import ioi_prompts

torch.manual_seed(0)
started = time.perf_counter()
model = interp.load_model("smollm2-135m", show_progress=False)

# %% [markdown]
# ## 1. SAEs on the residual stream entering blocks 8 and 14
#
# `train_sae` streams windows of the corpus through the model (stopping after the hook's layer),
# trains on shuffled batches, and reports on held-out windows: explained variance, L0, dead
# features and the next-token loss with the reconstruction spliced in.

# %%
saes = {}
for layer in (8, 14):
    saes[layer] = train_sae(model, f"blocks.{layer}.hook_resid_pre", features=512, k=32,
                            tokens=6144, batch_size=256, context_size=64, held_out_windows=2,
                            loss_windows=1, fit_config=FitConfig(lr=4e-3), show_progress=False)
report = saes[8].report
{key: round(report[key], 3) if isinstance(report[key], float) else report[key]
 for key in ("explained_variance", "l0", "dead_fraction", "loss_clean", "loss_spliced",
             "loss_increase", "fraction_loss_recovered", "tokens_trained")}

# %% [markdown]
# With 6k training tokens (a higher learning rate than the default, which is set for 100k+
# tokens) the SAE is rough; `benchmarks/sae.py` trains on the whole novel
# (~160k tokens) and reports the figures at scale. The files are SAELens's layout
# (`cfg.json` + `sae_weights.safetensors`): `circuits.sae.save_sae(sae, folder)`.

# %% [markdown]
# ## 2. Head codes on IOI, against the path-patching circuit
#
# The reference is the path-patching circuit recorded by `benchmarks/ioi_circuit.py` (Wang et
# al.'s method on SmolLM2; notebook 03 runs the same discovery at small settings). Without it,
# `sae_heads(..., reference="path", store=store)` discovers one and keeps it in the store.

# %%
runs = json.loads(Path("../benchmarks/results/ioi_circuit.json").read_text())["runs"]
recorded = next(r for r in runs if r["row"]["model"] == "smollm2-135m" and r["row"]["receivers"] == "paper")
reference_heads = sorted(Circuit.from_json(recorded["circuit"]).head_set)
result = sae_heads(model, "ioi", n_prompts=32, n_sae_examples=10, reference=reference_heads,
                   faithfulness=False)
print(f"{len(reference_heads)} path-patching heads; head codes: ROC-AUC {result['roc_auc']:.3f}, "
      f"average precision {result['average_precision']:.3f} "
      f"(chance {result['chance_average_precision']:.3f}); {result['discovery_seconds']:.1f} s")

# %%
scores = torch.tensor([h["score"] for h in result["head_scores"]]).view(model.n_layers, model.n_heads)
marks = [[("●" if (l, h) in set(reference_heads) else "") for h in range(model.n_heads)]
         for l in range(model.n_layers)]
go.Figure(go.Heatmap(z=scores.T.tolist(), text=list(map(list, zip(*marks))), texttemplate="%{text}",
                     colorscale="Blues", colorbar={"title": "codes only<br>on positives"}),
          layout={"title": "Head-code scores (● = in the path-patching circuit)",
                  "xaxis_title": "layer", "yaxis_title": "head", "height": 350})

# %% [markdown]
# ## 3. A sparse feature circuit between the two residual SAEs
#
# Node effects by attribution patching (`method="atp"`; the paper's integrated gradients is
# `method="ig"`), edges from block-8 features to block-14 features, and faithfulness on
# separate prompts as nodes are added (everything outside the circuit takes its corrupted value).

# %%
found = discover_feature_circuit(model, ioi_prompts(model, n=6, seed=1),
                                 ioi_prompts(model, n=6, seed=1001), [saes[8], saes[14]],
                                 method="atp", nodes_per_point=5, k_percents=(0.1, 1, 10, 100),
                                 n_random=1)
for node in found.nodes:
    print(f"{node['id']:<40} effect {node['score']:+.3f}")
curve = found.evaluation["faithfulness_curve"]
[(p["k"], round(p["faithfulness"], 3)) for p in curve]

# %%
strongest = sorted(found.edges, key=lambda e: -abs(e["score"]))[:8]
for edge in strongest:
    print(f"{edge['src']:<36} -> {edge['dst']:<36} {edge['score']:+.4f}")

# %% [markdown]
# What do the circuit's block-14 features respond to? Their strongest contexts in the corpus:

# %%
features = [n["feature"] for n in found.nodes if n["layer"] == 14 and n["feature"] is not None][:2]
for feature, found_contexts in top_contexts(model, saes[14].sae, features, n_windows=8, n_top=3).items():
    print(f"feature {feature} (fires on {found_contexts['density']:.1%} of positions)")
    for c in found_contexts["contexts"]:
        print(f"   {c['activation']:6.2f}  ...{c['text']!r}")
print(f"notebook ran in {time.perf_counter() - started:.0f} s")
