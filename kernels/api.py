"""`attention`: one entry point, dispatching to the Triton kernel or the torch reference."""
from __future__ import annotations

import torch

from .edits import LayerEdit
from .reference import reference_attention
from .stats import AttentionStatsRequest

BACKENDS = ("auto", "reference", "triton")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = True,
              scale: float | None = None, key_padding_mask: torch.Tensor | None = None,
              sliding_window: int | None = None, softcap: float | None = None,
              edit: LayerEdit | None = None, stats: AttentionStatsRequest | None = None,
              backend: str = "auto") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Attention with declarative edits and O(N) statistics.

    q [B,H,Nq,D]; k, v [B,Hkv,Nk,D] (GQA when Hkv < H); the queries are the last Nq key
    positions (causal offset Nk - Nq). key_padding_mask [B,Nk] bool, True = real token.
    scale defaults to 1/sqrt(D); softcap applies cap * tanh(s / cap) before edits.
    Returns (out [B,H,Nq,D] in q's dtype, {stat name: tensor}) as described in `kernels.stats`.
    edit: a `LayerEdit`; ACT whose sinks are found in the call (act_tau) or given per head runs
    as a statistics pass then the calibrated pass (`kernels.act`), on either backend.

    backend: "auto" = Triton for CUDA tensors, the torch reference otherwise;
             "reference" / "triton" force one.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    use_triton = backend == "triton" or (backend == "auto" and q.is_cuda)
    kwargs = dict(causal=causal, scale=scale, key_padding_mask=key_padding_mask,
                  sliding_window=sliding_window, softcap=softcap, edit=edit, stats=stats)
    if use_triton:
        from .triton_attention import triton_attention   # triton imported only when used
        return triton_attention(q, k, v, **kwargs)
    return reference_attention(q, k, v, **kwargs)
