"""ACT with a sink set per head, found in the call or given: a statistics pass, then the calibrated pass.

The kernels calibrate one sink set per prompt for a whole layer in one pass (a [B, Nk] mask,
`LayerEdit.shared_sinks`). ACT as its authors run it (Yu et al., ICML 2024; the released code,
GATECH-EIC/ACT `models/llama_modelling_aug.py`) finds the sinks per input and per head, from that
head's own attention in the same forward:

    alpha_j = sum_i p_ij / #{valid queries i that see key j}     (mean attention key j receives)
    sinks   = {j : alpha_j > tau}, minus the lowest-position sink when exclude_first

and then scales the sink columns by beta, handing the removed mass to the other keys in
proportion (the excluded first sink among them). A key's mean needs every later query row, so no
row can be calibrated before the whole layer has been seen: two passes, on the (batch row, head)
pairs that ACT touches only, each pair an attention problem of its own (batch P, one head, its
KV head and its prompt's padding), while the layer's other heads run unedited (torch SDPA on CPU):

    1. statistics, no output: the mass each key receives and each row's lse -> [P, Nk] sinks
    2. pairs with a sink past the first: out' = c out + (beta - c) sum_sink p_j v_j, with
       c = (1 - beta s) / (1 - s), from the unedited output and the few sink columns' p = exp(s - lse)
       (fp32, no statistic asked, every row keeping >= 1% non-sink mass); otherwise the kernels'
       one-pass ACT on the pair with its own sink mask, which also gives every statistic.

Any backend plugs in as `run` (the torch reference, the Triton kernel): the same passes through
its own kernels.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from .edits import LayerEdit
from .inputs import default_scale
from .masking import queries_seeing, query_positions, visible
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
    B, H, Nq, D = q.shape
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
        pair_inputs = (q, k, v, H // Hkv, key_padding_mask, key_bias)
        lse = None
        if edit.finds_sinks:   # pass 1
            found, lse = _Pairs(b_idx, h_idx, *pair_inputs).statistics(run, common)
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
        pairs = _Pairs(b_idx[keep], h_idx[keep], *pair_inputs)
        pair_sinks, pair_beta = pair_sinks[keep], beta[b_idx, h_idx][keep]
        if len(keep) and lse is not None and not inner.any and out.dtype == torch.float32:
            # pass 2, cheap: correct the unedited output from the sink columns alone
            fixed, exact = pairs.correct(out[pairs.b, pairs.h], lse[keep], pair_sinks, pair_beta,
                                         default_scale(D, scale), common)
            out[pairs.b[exact], pairs.h[exact]] = fixed[exact]
            redo = (~exact).nonzero().squeeze(-1)
            pairs, pair_sinks, pair_beta = pairs.select(redo), pair_sinks[redo], pair_beta[redo]
        if len(pairs.b):   # pass 2: the kernels' one-pass ACT, with every statistic
            out_p, res_p = pairs.run(run, common, inner, pair_sinks, pair_beta)
            out[pairs.b, pairs.h] = out_p[:, 0]
            for name, value in res_p.items():
                res[name][pairs.b, pairs.h] = value[:, 0]

    if edit is not None and edit.head_scale is not None:
        out = out * edit.head_scale.to(out.device, out.dtype)[None, :, None, None]
    if sinks is not None:
        res["sinks"] = sinks
    return out, {name: res[name] for name in want.names}


# Below this non-sink mass a row's correction (c = (1 - beta s) / (1 - s) times the unedited
# output's non-sink part) would amplify fp32 rounding by more than 1/_MIN_REST: such pairs take
# the exact pass instead.
_MIN_REST = 1e-2


class _Pairs:
    """The (batch row, head) pairs ACT touches, gathered as a batch of single-head problems:
    q [P,1,Nq,D], k/v [P,1,Nk,D] (each pair's KV head), padding [P,Nk], key bias [P,1,Nk]."""

    def __init__(self, b, h, q, k, v, group, key_padding_mask, key_bias):
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

    def statistics(self, run, common) -> tuple[torch.Tensor, torch.Tensor]:
        """Pass 1, no output: ([P, Nk] mass each key receives from the valid queries,
        [P, Nq] each row's log-normalizer)."""
        edit = None if self.bias is None else LayerEdit(key_bias=self.bias)
        _, res = run(self.q, self.k, self.v, key_padding_mask=self.kpm, edit=edit,
                     stats=AttentionStatsRequest(received=True, lse=True), need_output=False,
                     **common)
        return res["received"][:, 0], res["lse"][:, 0]

    def correct(self, out, lse, sinks, beta, scale, common) -> tuple[torch.Tensor, torch.Tensor]:
        """Pass 2 from the sink columns alone: out [P,Nq,D] unedited, lse [P,Nq], sinks [P,Nk],
        beta [P] -> (calibrated out [P,Nq,D], [P] bool: the pairs whose rows all keep enough
        non-sink mass for the correction to be exact to fp32).

        With S = sum_sink p_j v_j and s = sum_sink p_j: out' = c out + (beta - c) S,
        c = (1 - beta s) / (1 - s), the one-pass ACT written as a correction.
        """
        P, Nq = lse.shape
        Nk = sinks.shape[-1]
        m = int(sinks.sum(-1).max())
        cols = torch.sort(sinks.to(torch.int8), dim=-1, descending=True, stable=True).indices[:, :m]
        valid = sinks.gather(1, cols)                                          # [P, m]
        k_c = self.k[:, 0].gather(1, cols[..., None].expand(-1, -1, self.k.shape[-1]))
        v_c = self.v[:, 0].gather(1, cols[..., None].expand(-1, -1, self.v.shape[-1]))
        s = (self.q[:, 0].float() * scale) @ k_c.float().transpose(1, 2)      # [P, Nq, m]
        if common["softcap"] is not None:
            s = torch.tanh(s / common["softcap"]) * common["softcap"]
        if self.bias is not None:
            s = s + self.bias[:, 0].gather(1, cols)[:, None, :]
        seen = visible(query_positions(Nq, Nk, device=s.device), cols.flatten(), common["causal"],
                       common["sliding_window"])                              # [Nq, P*m]
        seen = valid[:, None, :] if seen is None else \
            seen.view(Nq, P, m).transpose(0, 1) & valid[:, None, :]
        if self.kpm is not None:
            seen = seen & self.kpm.gather(1, cols)[:, None, :]
        p = torch.where(seen, torch.exp(s - lse[..., None]), 0.0)             # [P, Nq, m]
        s_mass = p.sum(-1, keepdim=True)
        rest = 1.0 - s_mass
        movable = (rest > 0) & (s_mass > 0)
        c = torch.where(movable, (1.0 - beta[:, None, None] * s_mass) / torch.where(movable, rest, 1.0), 1.0)
        b = torch.where(movable, beta[:, None, None], 1.0)
        fixed = c * out.float() + (b - c) * (p @ v_c.float())
        exact = ~(movable & (rest < _MIN_REST)).flatten(1).any(-1)
        return fixed.to(out.dtype), exact

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
