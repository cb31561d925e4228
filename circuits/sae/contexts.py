"""Top-activating contexts of SAE features: where in a text corpus each feature fires hardest.

    top_contexts(model, sae, [12, 40])   # {12: {"contexts": [{"text", "token", "activation"}], "density"}}

Windows are spread evenly over the corpus (the shipped novel unless the user names one, see
`circuits.sae.corpus`); the model runs each only up to the SAE's hook. A context is the
`before` tokens up to and including the firing token, which is also given alone.
"""

from __future__ import annotations

from pathlib import Path

import torch

from circuits.sae.corpus import corpus_windows
from circuits.sae.points import activation_point, collect
from circuits.sae.sae import SparseAutoencoder
from interp.errors import InvalidInput
from interp.models import Model


@torch.no_grad()
def top_contexts(model: Model, sae: SparseAutoencoder, features: list[int],
                 corpus: str | Path | None = None, n_windows: int = 32, context_size: int = 64,
                 n_top: int = 5, before: int = 12, batch_size: int = 8) -> dict[int, list[dict]]:
    """{feature: {"contexts": up to `n_top` of {"text", "token", "activation"}, strongest first,
    "density": the share of the windows' positions where the feature fires}}."""
    bad = [f for f in features if not 0 <= f < sae.d_sae]
    if bad:
        raise InvalidInput(f"features {bad} do not exist in this SAE ({sae.d_sae} features)")
    point = activation_point(model, sae.cfg.hook_name, sae.cfg.hook_head_index)
    sae.check_width(point.d_in, f"{point.label()} of {model.name}")
    train = corpus_windows(model, corpus, context_size, held_out_windows=0).train
    pick = torch.linspace(0, train.shape[0] - 1, min(n_windows, train.shape[0])).round().long()
    windows = train[pick]
    index = torch.tensor(features, dtype=torch.long)
    best_values = torch.full((len(features), n_top), -1.0)
    best_where = torch.zeros(len(features), n_top, 2, dtype=torch.long)
    fired = torch.zeros(len(features))
    first = 1 if sae.cfg.exclude_first_position else 0
    n_positions = 0
    for start in range(0, windows.shape[0], batch_size):
        x = collect(model, windows[start:start + batch_size], [point])[point].float()
        acts = sae.encode(x)[..., index]  # [b, pos, (H,) n]
        if acts.ndim == 4:  # per-head SAEs: a position's activation is its strongest head's
            acts = acts.amax(2)
        acts[:, :first] = 0
        fired += (acts > 0).flatten(0, 1).float().sum(0)
        n_positions += acts.shape[0] * (acts.shape[1] - first)
        flat = acts.flatten(0, 1)  # [b * pos, n]
        values, where = flat.topk(min(n_top, flat.shape[0]), dim=0)  # [n_top, n]
        rows = torch.stack([where // acts.shape[1] + start, where % acts.shape[1]], -1)
        merged_v = torch.cat([best_values, values.T], 1)
        merged_w = torch.cat([best_where, rows.transpose(0, 1)], 1)
        order = merged_v.argsort(1, descending=True)[:, :n_top]
        best_values = merged_v.gather(1, order)
        best_where = merged_w.gather(1, order[..., None].expand(-1, -1, 2))
    out = {}
    for i, feature in enumerate(features):
        contexts = []
        for value, (row, pos) in zip(best_values[i].tolist(), best_where[i].tolist()):
            if value <= 0:
                continue
            ids = windows[row, max(0, pos - before): pos + 1].tolist()
            contexts.append({"text": model.tokenizer.decode(ids),
                             "token": model.tokenizer.decode([ids[-1]]),
                             "activation": round(value, 4)})
        out[feature] = {"contexts": contexts, "density": float(fired[i]) / max(1, n_positions)}
    return out
