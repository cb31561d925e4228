"""Sahara: the greedy set of heads whose joint ablation shifts the harmful prompts' final
representations most.

After Zhou et al. 2024 (arXiv:2410.13708) and their reference code,
github.com/ydyjya/SafetyHeadAttribution (`lib/Sahara/attribution.py`, `lib/Sahara/svd.py`).
Written here from those definitions; no code is copied.

Stack the final-norm hidden state at the last position of every prompt into M [n_prompts,
d_model] (HF `hidden_states[-1]`, which is after the final norm); the shift of an ablation is
the principal angle, in degrees, between the top left singular vectors of M_base and M_ablated
(`svd.compute_subspace_similarity`, rank 1; for rank r > 1 the r angles are summed). Greedy
search: add the head whose ablation, together with the heads already chosen, shifts most from
the UNablated M; repeat `steps` times (`attribution.safety_head_attribution`). Every step is a
Ships scan (`ships_scan`) with the heads chosen so far ablated in the background.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from interp.errors import InvalidInput
from interp.heads.safety.ships import ShipsScan, ships_scan
from interp.models import Model
from interp.names import Head
from interp.tasks.base import PromptSet


def principal_angle(base: torch.Tensor, ablated: torch.Tensor, rank: int = 1) -> torch.Tensor:
    """Degrees between the top-`rank` left singular subspaces of base [n, d] and ablated [..., n, d].

    As `svd.compute_subspace_similarity` of the reference: U1[:, :r]^T U2[:, :r] has the cosines
    of the principal angles as singular values; angle = arccos, summed over the r angles.
    """
    if base.shape[-2] < 2:
        raise InvalidInput("Sahara needs at least 2 prompts (the singular vectors live in prompt "
                           "space; with one prompt every angle is 0)")
    u_base = torch.linalg.svd(base.double(), full_matrices=False).U[..., :rank]
    u_ablated = torch.linalg.svd(ablated.double(), full_matrices=False).U[..., :rank]
    cosines = torch.linalg.svdvals(u_base.transpose(-1, -2) @ u_ablated)
    return torch.rad2deg(torch.arccos(cosines.clamp(-1.0, 1.0))).sum(-1).float()


def sahara_shifts(scan: ShipsScan, unablated_hidden: torch.Tensor, rank: int = 1) -> torch.Tensor:
    """[L, H] angle of each scanned ablation (with the scan's background) from the unablated M."""
    angles = torch.zeros(scan.final_hidden.shape[:2])
    for layer in scan.layers:
        scanned = ~torch.isnan(scan.final_hidden[layer, :, 0, 0])
        if scanned.any():
            angles[layer, scanned] = principal_angle(unablated_hidden,
                                                     scan.final_hidden[layer, scanned], rank)
    return angles


@dataclass
class SaharaResult:
    """The greedy head set: heads[i] was added at step i, shifting the subspace by angles[i]."""

    heads: list[Head]
    angles: list[float]
    step_scores: list[torch.Tensor] = field(default_factory=list)  # [L, H] per step

    def to_json(self) -> dict:
        return {"heads": [list(h) for h in self.heads], "angles": self.angles}


def sahara(model: Model, prompts: PromptSet, steps: int = 3, method: str = "query_scale",
           eps: float = 1e-5, rank: int = 1, layers: list[int] | None = None,
           first_scan: ShipsScan | None = None, z_mean: torch.Tensor | None = None,
           candidates: int | None = None, progress=None) -> SaharaResult:
    """Greedy Sahara search for `steps` heads (lib/Sahara/attribution.py's `search_step`).

    first_scan: a `ships_scan` of the same prompts, method and eps with no background; its
        ablated hidden states are step 1's candidates, so Ships + Sahara share that scan.
    candidates: steps after the first consider only the heads with the `candidates` largest
        first-step angles (None: every head, as the reference; each step is then a full scan).
    """
    if steps < 1:
        raise InvalidInput(f"Sahara needs steps >= 1, got {steps}")
    chosen: list[Head] = []
    angles: list[float] = []
    step_scores = []
    scan = first_scan
    if scan is None or scan.background:
        scan = ships_scan(model, prompts, method, eps, layers, z_mean=z_mean)
    unablated = scan.base_hidden
    z_mean = scan.z_mean if z_mean is None else z_mean
    pool = None
    for step in range(steps):
        if step > 0:
            def step_progress(frac, msg, step=step):
                if progress is not None:
                    progress((step + frac) / steps, f"Sahara step {step + 1}/{steps}: {msg}")
            scan = ships_scan(model, prompts, method, eps, layers, background=chosen,
                              z_mean=z_mean, only=pool, progress=step_progress)
        shifts = sahara_shifts(scan, unablated, rank)
        if step == 0 and candidates is not None:
            pool = [(h["layer"], h["head"]) for h in top_entries(shifts, candidates)]
        if pool is not None:
            allowed = torch.zeros_like(shifts, dtype=torch.bool)
            allowed[tuple(torch.tensor(pool).T)] = True
            shifts = torch.where(allowed, shifts, torch.full((), float("-inf")))
        for layer, head in chosen:
            shifts[layer, head] = float("-inf")
        best = int(torch.argmax(shifts))
        chosen.append((best // model.n_heads, best % model.n_heads))
        angles.append(float(shifts.flatten()[best]))
        step_scores.append(torch.where(torch.isinf(shifts), torch.zeros(()), shifts))
    return SaharaResult(chosen, angles, step_scores)


def top_entries(scores: torch.Tensor, k: int) -> list[dict]:
    """The k largest entries of [L, H] scores: [{"layer", "head", "score" (4 decimals)}]."""
    values, index = torch.topk(scores.flatten(), min(k, scores.numel()))
    n_heads = scores.shape[1]
    return [{"layer": int(i) // n_heads, "head": int(i) % n_heads, "score": round(float(v), 4)}
            for v, i in zip(values, index)]

