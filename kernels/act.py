"""ACT with a sink set per head, found in the call or given: a statistics pass, then the calibrated pass.

The kernels calibrate one sink set per prompt for a whole layer in one pass (a [B, Nk] mask,
`LayerEdit.shared_sinks`). ACT as its authors run it (Yu et al., ICML 2024; the released code,
GATECH-EIC/ACT `models/llama_modelling_aug.py`) finds the sinks per input and per head, from that
head's own attention in the same forward:

    alpha_j = sum_i p_ij / #{valid queries i that see key j}     (mean attention key j receives)
    sinks   = {j : alpha_j > tau}, minus the lowest-position sink when exclude_first

and then scales the sink columns by beta, handing the removed mass to the other keys in
proportion (the excluded first sink among them). A key's mean needs every later query row, so no
row can be calibrated before the whole layer has been seen: two passes. Both run only on the
(batch row, head) pairs that ACT touches, each pair an attention problem of its own (batch P,
one head, its KV head and its prompt's padding):

    1. statistics: the mass each key receives (no output), then the rule above -> [P, Nk] sinks
    2. the kernels' one-pass ACT on each pair with its own sink mask (pairs without a sink skip it)

and the layer's other heads run unedited (torch SDPA on CPU when no statistic is asked), so the
cost grows with the number of calibrated heads, not with the layer. Any backend plugs in as
`run` (the torch reference, the Triton kernel): the same two passes through its own kernels.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from .edits import LayerEdit
from .masking import queries_seeing
from .stats import AttentionStatsRequest


def needs_pairs(edit: LayerEdit | None, stats: AttentionStatsRequest | None) -> bool:
    """True when a call must go through `calibrated_attention`: ACT whose sinks are per head or
    still to be found, or a request for the `sinks` statistic."""
    per_head_act = edit is not None and edit.act_beta is not None and not edit.shared_sinks
    return per_head_act or (stats is not None and stats.sinks)


def sink_rule(received: torch.Tensor, seen_by: torch.Tensor, tau: float,
              exclude_first: bool) -> torch.Tensor:
    """ACT's sinks: received [..., Nk] (attention mass each key gets from the valid queries),
    seen_by [..., Nk] (how many valid queries see it) -> [..., Nk] bool, keys whose mean
    attention exceeds tau; with exclude_first the lowest-position sink is dropped."""
    sinks = (seen_by > 0) & (received > tau * seen_by)
    if exclude_first:
        sinks &= sinks.cumsum(-1) > 1
    return sinks


def calibrated_attention(run: Callable, q, k, v, *, causal: bool, scale: float | None,
                         key_padding_mask: torch.Tensor | None, sliding_window: int | None,
                         softcap: float | None, edit: LayerEdit | None,
                         stats: AttentionStatsRequest | None, **run_kwargs):
    """`attention`'s contract for edits the kernels do not take directly (see `needs_pairs`).

    run: a backend with `attention`'s signature plus `need_output` (reference_attention,
    triton_attention); it is only called with shared-sink edits and without `sinks`, so it
    never comes back here. q [B,H,Nq,D], k/v [B,Hkv,Nk,D] -> (out [B,H,Nq,D], stats).
    """
    B, H, Nq, _ = q.shape
    Hkv, Nk = k.shape[1], k.shape[2]
    want = stats if stats is not None else AttentionStatsRequest()
    inner = replace(want, sinks=False)
    common = dict(causal=causal, scale=scale, sliding_window=sliding_window, softcap=softcap,
                  **run_kwargs)
    key_bias = None if edit is None else edit.key_bias
    out, res = run(q, k, v, key_padding_mask=key_padding_mask,
                   edit=None if key_bias is None else LayerEdit(key_bias=key_bias),
                   stats=inner if inner.any else None, **common)
    sinks = torch.zeros(B, H, Nk, dtype=torch.bool, device=q.device) if want.sinks else None

    if edit is not None and edit.act_beta is not None:
        beta = edit.act_beta.to(q.device, torch.float32).expand(B, H)
        b_idx, h_idx = (beta != 1.0).nonzero(as_tuple=True)
        pairs = _Pairs(q, k, v, b_idx, h_idx, H // Hkv, key_padding_mask, key_bias)
        if edit.finds_sinks:
            found = pairs.received(run, common)                                   # [P, Nk]
            seen = queries_seeing(Nq, Nk, causal, sliding_window, key_padding_mask, q.device)
            pair_sinks = sink_rule(found, seen.expand(B, Nk)[b_idx], edit.act_tau,
                                   edit.act_exclude_first)
        elif edit.sink_mask.dim() == 2:
            pair_sinks = edit.sink_mask.to(q.device)[b_idx]
        else:
            pair_sinks = edit.sink_mask.to(q.device)[b_idx, h_idx]
        if sinks is not None:
            sinks[b_idx, h_idx] = pair_sinks
        # a pair without a sink is left as the unedited pass computed it
        keep = pair_sinks.any(-1).nonzero().squeeze(-1)
        if len(keep):
            sub = pairs.select(keep)
            out_p, res_p = sub.run(run, common, inner, pair_sinks[keep], beta[b_idx, h_idx][keep])
            out[sub.b, sub.h] = out_p[:, 0]
            for name, value in res_p.items():
                res[name][sub.b, sub.h] = value[:, 0]

    if edit is not None and edit.head_scale is not None:
        out = out * edit.head_scale.to(out.device, out.dtype)[None, :, None, None]
    if sinks is not None:
        res["sinks"] = sinks
    return out, {name: res[name] for name in want.names}


class _Pairs:
    """The (batch row, head) pairs ACT touches, gathered as a batch of single-head problems:
    q [P,1,Nq,D], k/v [P,1,Nk,D] (each pair's KV head), padding [P,Nk], key bias [P,1,Nk]."""

    def __init__(self, q, k, v, b, h, group, key_padding_mask, key_bias):
        self.b, self.h = b, h
        self.q, self.k, self.v = q[b, h][:, None], k[b, h // group][:, None], v[b, h // group][:, None]
        self.kpm = None if key_padding_mask is None else key_padding_mask[b]
        self.bias = None if key_bias is None else key_bias[b, h][:, None]

    def select(self, keep: torch.Tensor) -> "_Pairs":
        sub = object.__new__(_Pairs)
        sub.b, sub.h = self.b[keep], self.h[keep]
        sub.q, sub.k, sub.v = self.q[keep], self.k[keep], self.v[keep]
        sub.kpm = None if self.kpm is None else self.kpm[keep]
        sub.bias = None if self.bias is None else self.bias[keep]
        return sub

    def received(self, run, common) -> torch.Tensor:
        """[P, Nk]: the mass each key receives from the valid queries (pass 1, no output)."""
        edit = None if self.bias is None else LayerEdit(key_bias=self.bias)
        _, res = run(self.q, self.k, self.v, key_padding_mask=self.kpm, edit=edit,
                     stats=AttentionStatsRequest(received=True), need_output=False, **common)
        return res["received"][:, 0]

    def run(self, run, common, stats: AttentionStatsRequest, sinks: torch.Tensor,
            beta: torch.Tensor):
        """Pass 2: each pair calibrated with its own sinks [P, Nk] and beta [P]."""
        if stats.any:   # the per-prompt inputs of the statistics follow each pair's prompt
            stats = replace(stats,
                            key_mask=None if stats.key_mask is None else stats.key_mask[self.b],
                            gather_keys=None if stats.gather_keys is None else stats.gather_keys[self.b])
        edit = LayerEdit(key_bias=self.bias, sink_mask=sinks, act_beta=beta[:, None])
        return run(self.q, self.k, self.v, key_padding_mask=self.kpm, edit=edit,
                   stats=stats if stats.any else None, **common)
