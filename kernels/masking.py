"""Which keys a query may attend to: the one definition every backend follows.

Queries are the LAST Nq of the Nk key positions (decoding against a KV cache), so query i sits
at position `Nk - Nq + i`. Key j is visible to query i when all of:
    j < Nk, key_padding_mask[b, j] (if given),
    causal:          j <= pos_i
    sliding_window W: pos_i - j < W   (and j - pos_i < W when not causal)
This matches transformers' masks (`sliding_window_overlay`: kv_idx > q_idx - W).
"""
from __future__ import annotations

import torch


def query_positions(n_queries: int, n_keys: int, start: int = 0, stop: int | None = None,
                    device=None) -> torch.Tensor:
    """[stop - start] int64 positions of queries start..stop-1 among the keys."""
    stop = n_queries if stop is None else stop
    return torch.arange(start, stop, device=device) + (n_keys - n_queries)


def visible(q_pos: torch.Tensor, k_pos: torch.Tensor, causal: bool,
            sliding_window: int | None) -> torch.Tensor | None:
    """[Nq', Nk'] bool of (query, key) pairs allowed by causality and the window (None: all)."""
    allowed = None
    if causal:
        allowed = k_pos[None, :] <= q_pos[:, None]
    if sliding_window is not None:
        dist = q_pos[:, None] - k_pos[None, :]
        w = dist < sliding_window
        if not causal:
            w &= dist > -sliding_window
        allowed = w if allowed is None else allowed & w
    return allowed


def key_range(q_lo: int, q_hi: int, n_keys: int, causal: bool,
              sliding_window: int | None) -> tuple[int, int]:
    """Half-open range of key positions any query in positions [q_lo, q_hi) can see.

    Keys outside it need not be computed at all (causal and window block skipping).
    """
    lo, hi = 0, n_keys
    if causal:
        hi = min(n_keys, q_hi)
    if sliding_window is not None:
        lo = max(0, q_lo - sliding_window + 1)
        if not causal:
            hi = min(n_keys, q_hi - 1 + sliding_window)
    return lo, max(lo, hi)


def queries_seeing(n_queries: int, n_keys: int, causal: bool, sliding_window: int | None,
                   key_padding_mask: torch.Tensor | None, device=None) -> torch.Tensor:
    """[B, Nk] (or [1, Nk] without padding) float32: how many valid queries can see each key.

    A query is valid when its own position is a real token (the queries `received` sums over);
    the count is over query positions only, so it is the denominator of the mean attention a
    key receives (ACT's sink rule). O(Nk) with a cumulative sum over query positions.
    """
    if key_padding_mask is not None:
        valid = key_padding_mask.to(device=device, dtype=torch.float32).clone()
    else:
        valid = torch.ones(1, n_keys, dtype=torch.float32, device=device)
    valid[:, : n_keys - n_queries] = 0.0                         # positions that are not queries
    csum = torch.nn.functional.pad(valid.cumsum(-1), (1, 0))     # csum[:, p] = sum of valid[:, :p]
    j = torch.arange(n_keys, device=valid.device)
    reach = n_keys - 1 if sliding_window is None else sliding_window - 1
    hi = (j + reach).clamp_max(n_keys - 1)                       # causal: positions j .. j + reach
    lo = j if causal else (j - reach).clamp_min(0)               # else also j - reach .. j
    return csum[:, hi + 1] - csum[:, lo]
