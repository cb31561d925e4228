"""Argument checks shared by every backend, so they all reject the same things the same way."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .edits import LayerEdit
from .stats import AttentionStatsRequest


class Dims(NamedTuple):
    batch: int
    heads: int        # query heads H
    kv_heads: int     # key/value heads Hkv (H % Hkv == 0)
    n_queries: int
    n_keys: int
    head_dim: int

    @property
    def group(self) -> int:
        """Query heads per key/value head (GQA)."""
        return self.heads // self.kv_heads


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 key_padding_mask: torch.Tensor | None, sliding_window: int | None,
                 edit: LayerEdit | None, stats: AttentionStatsRequest | None) -> Dims:
    """Validate shapes; q [B,H,Nq,D], k/v [B,Hkv,Nk,D], Nq <= Nk."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("q, k, v must be 4-D: q [B,H,Nq,D], k/v [B,Hkv,Nk,D]")
    B, H, Nq, D = q.shape
    _, Hkv, Nk, _ = k.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[3] != D:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if H % Hkv:
        raise ValueError(f"{H} query heads are not a multiple of {Hkv} key/value heads")
    if Nq > Nk:
        raise ValueError(f"more queries ({Nq}) than keys ({Nk}): queries are the last Nq keys")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError("q, k, v must share a dtype")
    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (B, Nk) or key_padding_mask.dtype != torch.bool:
            raise ValueError(f"key_padding_mask must be bool [B, Nk] = {(B, Nk)}")
    if sliding_window is not None and sliding_window < 1:
        raise ValueError("sliding_window must be >= 1")
    if edit is not None:
        if edit.key_bias is not None and tuple(edit.key_bias.shape) != (B, H, Nk):
            raise ValueError(f"key_bias must be [B,H,Nk] = {(B, H, Nk)}")
        if edit.head_scale is not None and tuple(edit.head_scale.shape) != (H,):
            raise ValueError(f"head_scale must be [H] = {(H,)}")
        if edit.sink_mask is not None and (
                tuple(edit.sink_mask.shape) not in ((B, Nk), (B, H, Nk))
                or edit.sink_mask.dtype != torch.bool):
            raise ValueError(f"sink_mask must be bool [B,Nk] = {(B, Nk)} or [B,H,Nk] = {(B, H, Nk)}")
        if edit.act_beta is not None and tuple(edit.act_beta.shape) not in ((H,), (B, H)):
            raise ValueError(f"act_beta must be [H] = {(H,)} or [B,H] = {(B, H)}")
    if stats is not None:
        stats.check(B, Nq, Nk)
    return Dims(B, H, Hkv, Nq, Nk, D)


def default_scale(head_dim: int, scale: float | None) -> float:
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)


def query_is_real(key_padding_mask: torch.Tensor | None, n_queries: int) -> torch.Tensor | None:
    """[B, Nq] bool: whether each query's own position is a real token (None: all are)."""
    if key_padding_mask is None:
        return None
    return key_padding_mask[:, key_padding_mask.shape[1] - n_queries:]
