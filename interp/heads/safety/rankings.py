"""The two ways to rank safety heads from one batched ablation scan (`ships_scan`).

- "ships" (the paper's, Zhou et al. 2024, "On the Role of Attention Heads in Large Language
  Model Safety", arXiv:2410.13708, `lib/SHIPS/get_ships.py`): the mean over the refused
  training prompts of KL(p_base || p_ablated) of the next-token distribution. It measures how
  much the head moves the distribution, in ANY direction: a head whose ablation makes the model
  refuse more, or changes which compliant token comes first, scores as high as one that
  carries refusal.
- "refusal_logodds" (directional, added here): the mean over the same prompts of the DROP in
  the refusal first-token log-odds when the head is ablated,

      drop[l, h] = mean_i ( logodds_i(unablated) - logodds_i(head l.h ablated) ),

  with logodds = log p(R) - log(1 - p(R)) over the refusal-start tokens R that
  `interp.refusal.calibrate_refusal_tokens` read off the model's own replies (Arditi et al.
  2024's refusal score; compliance = every other first token, the score the causal check's
  log-odds refusal rate thresholds). Positive: ablating the head lowers refusal. It comes from
  the same forwards as Ships (the scan computes both from each ablated row's last-position
  log-probabilities), so it costs nothing extra.

The detector's `rank_by` chooses which one becomes `HeadScores.scores`; both are kept in the
details ("ships", "refusal_logodds").
"""

from __future__ import annotations

import torch

from interp.errors import InvalidInput
from interp.heads.safety.ships import ShipsScan

RANKINGS: dict[str, str] = {
    "ships": "Ships: mean KL(p_base || p_ablated) of the next-token distribution (the paper's)",
    "refusal_logodds": "mean drop of the refusal first-token log-odds when the head is ablated",
}


def check_rank_by(rank_by: str) -> None:
    if rank_by not in RANKINGS:
        raise InvalidInput(f"unknown rank_by {rank_by!r}; use one of {tuple(RANKINGS)}")


def refusal_logodds_drop(scan: ShipsScan) -> torch.Tensor:
    """[L, H] mean over prompts of (base log-odds - ablated log-odds); 0 ("no effect") where
    not scanned, so a restricted scan's heads that RAISE refusal rank below unscanned ones. Needs a scan run with refusal tokens (`ships_scan(..., tokens=...)`)."""
    if scan.logodds is None or scan.base_logodds is None:
        raise InvalidInput("the refusal log-odds score needs refusal tokens: run the scan with "
                           "tokens=calibrate_refusal_tokens(...) (safety_analysis does), or rank "
                           "by 'ships'")
    drop = scan.base_logodds[:, None, None] - scan.logodds          # [n, L, H]
    return torch.nan_to_num(drop.mean(0), nan=0.0)


def ranking_scores(scan: ShipsScan) -> dict[str, torch.Tensor]:
    """{ranking name: [L, H] score} for every ranking the scan supports (higher = more safety)."""
    out = {"ships": scan.ships}
    if scan.logodds is not None:
        out["refusal_logodds"] = refusal_logodds_drop(scan)
    return out


def top_heads(scores: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """The k highest-scoring (layer, head) pairs of [L, H] scores, best first."""
    index = torch.topk(scores.flatten(), min(k, scores.numel())).indices
    return [(int(i) // scores.shape[1], int(i) % scores.shape[1]) for i in index]
