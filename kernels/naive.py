"""The definition, written the obvious way: the full [B, H, Nq, Nk] pattern. Tests only.

ACT is applied here in explicit steps (compute the pattern; when the sinks are to be found,
average each key's column over the queries that see it and threshold it; then rescale sink and
non-sink columns), which is what the one-pass forms in `reference` and `triton_attention`, and
the two passes of `kernels.act`, must equal.
"""
from __future__ import annotations

import torch

from .edits import LayerEdit
from .inputs import check_inputs, default_scale, query_is_real
from .masking import query_positions, visible
from .stats import AttentionStatsRequest


def naive_attention(q, k, v, *, causal: bool = True, scale: float | None = None,
                    key_padding_mask=None, sliding_window: int | None = None,
                    softcap: float | None = None, edit: LayerEdit | None = None,
                    stats: AttentionStatsRequest | None = None, backend: str = "naive"):
    """Same API as `attention`; returns (out [B,H,Nq,D], stats dict). Computes in float64."""
    d = check_inputs(q, k, v, key_padding_mask, sliding_window, edit, stats)
    B, H, Nq, Nk, G = d.batch, d.heads, d.n_queries, d.n_keys, d.group
    scale = default_scale(d.head_dim, scale)
    f = torch.float64
    qf = q.to(f)
    kf = k.to(f).repeat_interleave(G, dim=1)   # [B,H,Nk,D]
    vf = v.to(f).repeat_interleave(G, dim=1)
    s = qf @ kf.transpose(-1, -2) * scale      # [B,H,Nq,Nk]
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    if edit is not None and edit.key_bias is not None:
        s = s + edit.key_bias.to(f)[:, :, None, :]

    allowed = torch.ones(B, 1, Nq, Nk, dtype=torch.bool, device=q.device)
    vis = visible(query_positions(Nq, Nk, device=q.device), torch.arange(Nk, device=q.device),
                  causal, sliding_window)
    if vis is not None:
        allowed = allowed & vis
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask[:, None, None, :]
    s = s.masked_fill(~allowed, float("-inf"))
    has_key = allowed.any(-1)                                   # [B,1,Nq]
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)                # empty rows -> 0
    lse = torch.logsumexp(s, dim=-1)                            # [B,H,Nq]

    real = query_is_real(key_padding_mask, Nq)                 # [B,Nq] or None
    sink_mask = None
    if edit is not None and edit.act_beta is not None:
        beta = edit.act_beta.to(f).expand(B, H)                 # [B,H]
        if edit.sink_mask is not None:                          # [B,Nk] shared or [B,H,Nk]
            sink_mask = edit.sink_mask if edit.sink_mask.dim() == 3 else edit.sink_mask[:, None]
            sink_mask = sink_mask.expand(B, H, Nk)
        else:   # ACT's rule on this very pattern: mean over the valid queries that see the key
            seen = allowed if real is None else allowed & real[:, None, :, None]   # [B,1,Nq,Nk]
            mean = (p * seen).sum(-2) / seen.sum(-2).clamp_min(1)                  # [B,H,Nk]
            sink_mask = (mean > edit.act_tau) & seen.any(-2)
            if edit.act_exclude_first:
                for b, h in sink_mask.any(-1).nonzero().tolist():
                    sink_mask[b, h, sink_mask[b, h].nonzero()[0, 0]] = False
        sink_mask = sink_mask & (beta != 1.0)[..., None]         # heads without ACT: no sinks
        sink = sink_mask[:, :, None, :].to(f)                   # [B,H,1,Nk]
        beta = beta[:, :, None, None]                           # [B,H,1,1]
        rest = (p * (1 - sink)).sum(-1, keepdim=True)           # original non-sink mass
        movable = rest > 0                                      # a row all on sinks stays as it is
        # step 1: scale the sink columns by beta; step 2: renormalize the others so the row
        # sums to 1 again, i.e. hand (1 - beta) s back to them in proportion to p.
        new_sink = p * sink * beta
        c = torch.where(movable, (1 - new_sink.sum(-1, keepdim=True)) / rest.clamp_min(1e-300), 1.0)
        p_new = new_sink + p * (1 - sink) * c
        p = torch.where(movable, p_new, p)
        # non-sink entries kept their scores, so lse moves by -log c
        lse = lse - torch.log(torch.where(movable, c, 1.0)).squeeze(-1)

    out = p @ vf
    if edit is not None and edit.head_scale is not None:
        out = out * edit.head_scale.to(f)[None, :, None, None]
    out = out.to(q.dtype)

    result: dict[str, torch.Tensor] = {}
    if stats is None:
        return out, result
    f32 = torch.float32
    if stats.lse:
        result["lse"] = lse.to(f32)
    if stats.entropy:
        result["entropy"] = (-torch.special.xlogy(p, p).sum(-1)).to(f32)
    if stats.argmax:
        result["argmax"] = torch.where(has_key, p.argmax(-1), -1)
    if stats.key_mass:
        result["key_mass"] = (p * stats.key_mask[:, None, None, :]).sum(-1).to(f32)
    if stats.received:
        w = p if real is None else p * real[:, None, :, None]
        result["received"] = w.sum(-2).to(f32)
    if stats.gather_keys is not None:
        idx = stats.gather_keys                                  # [B,Nq,T]
        got = p.gather(-1, idx.clamp_min(0)[:, None].expand(B, H, -1, -1))
        result["gathered"] = torch.where(idx[:, None] >= 0, got, 0.0).to(f32)
    if stats.sinks:
        result["sinks"] = (torch.zeros(B, H, Nk, dtype=torch.bool, device=q.device)
                           if sink_mask is None else sink_mask)
    return out, result
