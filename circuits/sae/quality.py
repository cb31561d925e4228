"""How good an SAE is, on held-out tokens: the figures every trained SAE reports.

- explained_variance: 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over held-out vectors
  (1 - Gao et al.'s normalized MSE with the mean as baseline).
- l0: mean number of active features per vector.
- dead_fraction: share of features that never fire on the held-out vectors.
- loss_clean / loss_spliced / loss_zero_ablated: mean next-token cross-entropy of the model on the
  held-out windows, as is, with the SAE's reconstruction in place of the activation, and with the
  activation zeroed; loss_increase = spliced - clean; fraction_loss_recovered =
  (zero - spliced) / (zero - clean) (SAELens's "CE loss score").

Positions the SAE does not read (the first of each window, see `SAEConfig`) stay untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from circuits.sae.points import ActivationPoint, collect, edit_hooks, run_model
from circuits.sae.sae import SparseAutoencoder
from interp.models import Model


def flat_vectors(x: torch.Tensor, exclude_first_position: bool) -> torch.Tensor:
    """[b, pos, (heads,) d] -> [N, d]: every vector the SAE reads, first positions dropped."""
    if exclude_first_position:
        x = x[:, 1:]
    return x.reshape(-1, x.shape[-1])


def held_out_vectors(model: Model, point: ActivationPoint, windows: torch.Tensor,
                     exclude_first_position: bool, batch_size: int = 8):
    """Yield [N, d_in] SAE inputs from `windows` [n, ctx], one model batch at a time."""
    for start in range(0, windows.shape[0], batch_size):
        x = collect(model, windows[start:start + batch_size], [point])[point]
        yield flat_vectors(x.float(), exclude_first_position)


@torch.no_grad()
def reconstruction_stats(sae: SparseAutoencoder, batches) -> dict:
    """Explained variance, L0 and dead fraction over an iterable of [N, d_in] batches."""
    n, sum_x, sum_sq, err, l0 = 0, 0.0, 0.0, 0.0, 0.0
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    for x in batches:
        x_hat, f = sae(x)
        n += x.shape[0]
        sum_x = sum_x + x.double().sum(0)
        sum_sq += float(x.double().pow(2).sum())
        err += float((x - x_hat).double().pow(2).sum())
        active = f > 0
        l0 += float(active.sum())
        fired |= active.any(0)
    total = sum_sq - float((sum_x * sum_x).sum()) / n
    return {"explained_variance": 1.0 - err / total, "l0": l0 / n,
            "dead_fraction": 1.0 - float(fired.float().mean()), "n_vectors": n}


def _first_kept(exclude_first_position: bool):
    start = 1 if exclude_first_position else 0

    def replace(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        out = old.clone()
        out[:, start:] = new[:, start:]
        return out
    return replace


@torch.no_grad()
def spliced_losses(model: Model, sae: SparseAutoencoder, point: ActivationPoint,
                   windows: torch.Tensor, batch_size: int = 4) -> dict:
    """Next-token losses on `windows` [n, ctx]: clean, SAE spliced in, activation zeroed."""
    keep = _first_kept(sae.cfg.exclude_first_position)
    edits = {
        "loss_clean": None,
        "loss_spliced": lambda x: keep(x, sae(x.float())[0].to(x.dtype)),
        "loss_zero_ablated": lambda x: keep(x, torch.zeros_like(x)),
    }
    totals = dict.fromkeys(edits, 0.0)
    count = 0
    for start in range(0, windows.shape[0], batch_size):
        ids = windows[start:start + batch_size].to(model.device)
        for name, edit in edits.items():
            hooks = [] if edit is None else edit_hooks(model, {point: edit})
            logits = run_model(model, ids, hooks)
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(),
                                   reduction="sum")
            totals[name] += float(loss)
        count += ids[:, 1:].numel()
    out = {name: total / count for name, total in totals.items()}
    out["loss_increase"] = out["loss_spliced"] - out["loss_clean"]
    gap = out["loss_zero_ablated"] - out["loss_clean"]
    out["fraction_loss_recovered"] = (out["loss_zero_ablated"] - out["loss_spliced"]) / gap if gap else None
    out["n_loss_tokens"] = count
    return out


def sae_report(model: Model, sae: SparseAutoencoder, point: ActivationPoint,
               windows: torch.Tensor, loss_windows: int | None = None) -> dict:
    """All quality figures on held-out `windows`; the loss figures on the first `loss_windows`
    of them (each needs three full forwards: the costly part on a CPU)."""
    stats = reconstruction_stats(sae, held_out_vectors(
        model, point, windows, sae.cfg.exclude_first_position))
    loss_windows = windows.shape[0] if loss_windows is None else loss_windows
    losses = spliced_losses(model, sae, point, windows[:loss_windows]) if loss_windows else {}
    return {**stats, **losses}
