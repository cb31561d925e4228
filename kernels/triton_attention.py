"""Fused attention in Triton: FlashAttention-2 forward with edits and O(N) statistics.

Two kernels and their launcher; `reference.reference_attention` is the torch definition they
are tested against (under TRITON_INTERPRET=1 on CPU).

`_attn_fwd`: one program per (query block, batch x head). It streams the visible key blocks
once, with the usual online softmax (running max m, running sum l, output accumulator), in
base 2 (scores pre-multiplied by log2 e, so exp2 does the work). Alongside it keeps, per row:
    argmax     the running max's key index (free: the max is needed anyway)
    entropy    t = sum_j e_j s_j, rescaled like l; at the end H = lse - t / l
    key mass   sum_j e_j over the key set, rescaled like l
ACT in one pass: the removal of mass from sinks depends on the row's final sink mass s, known
only at the end. So the sums are kept separately for sink and non-sink keys (l_s, l_n, t_s,
t_n, acc_s, acc_n, ...); at the end of the row the sinks get weight beta / L and the others
(L - beta l_s) / (l_n L), L = l_s + l_n. That is exactly "sinks times beta, the removed mass to
the others in proportion", i.e. a per-row bias log(beta (1 - s) / (1 - beta s)) on the sinks.
The sink accumulator only costs a second dot product in key blocks that contain a sink.

`_attn_received`: the mass each key receives, sum_i p_ij over valid queries. Like the backward
pass it walks keys in the outer loop and queries in the inner one, recomputing p_ij from the
stored lse (and the ACT bias of each row): O(N) memory, no pattern.

Both kernels and the gathered probabilities get their scores from one function, `_edit_scores`
(scale, softcap, key bias, visibility), so all three see bit-identical scores. ACT with a sink
set per head, or with sinks to find in the call, runs as two launches per `kernels.act`.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .act import calibrated_attention, needs_pairs
from .edits import LayerEdit
from .inputs import check_inputs, default_scale
from .stats import AttentionStatsRequest

# The kernels work in base 2 (exp2, log2): scores are multiplied by log2(e) once, results go
# back to natural-log units by ln(2). constexpr, so the kernels can read them.
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _dot(a, b, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b with fp32 accumulation. UPCAST: feed fp32 operands; the Triton 3.9 interpreter
    computes bf16 dots wrongly, and bf16 x bf16 products are exact in fp32 anyway."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=DOT_PREC)


@triton.jit
def _edit_scores(s, key_idx, q_pos, b, h, Nk, sm_scale, softcap, window,
                 BIAS, stride_bias_b, stride_bias_h, stride_bias_n, KPM, stride_kpm_b, stride_kpm_n,
                 IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
                 HAS_PAD: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Raw dot products q.k -> scores in base-2 units, -inf where the key is invisible (or out of
    range). Elementwise: key_idx and q_pos broadcast against s, as [1, BLOCK_N] and [BLOCK_M, 1]
    for a tile, or as [BLOCK_M] each for one gathered key per row."""
    if HAS_SOFTCAP:
        x = s * (sm_scale / softcap)
        # tanh(x) = 1 - 2 / (exp(2x) + 1): finite for any x (exp overflow gives 1)
        s = softcap * (1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)) * LOG2E
    else:
        s = s * (sm_scale * LOG2E)
    in_keys = (key_idx >= 0) & (key_idx < Nk)
    key_safe = tl.where(in_keys, key_idx, 0)
    if HAS_BIAS:
        s += tl.load(BIAS + b.to(tl.int64) * stride_bias_b + h * stride_bias_h
                     + key_safe * stride_bias_n, mask=in_keys, other=0.0) * LOG2E
    visible = in_keys
    if IS_CAUSAL:
        visible = visible & (key_idx <= q_pos)
    if HAS_WINDOW:
        dist = q_pos - key_idx
        visible = visible & (dist < window)
        if not IS_CAUSAL:
            visible = visible & (dist > -window)
    if HAS_PAD:
        real = tl.load(KPM + b.to(tl.int64) * stride_kpm_b + key_safe * stride_kpm_n,
                       mask=in_keys, other=0)
        visible = visible & (real != 0)
    return tl.where(visible, s, float("-inf"))


@triton.jit
def _scores(q, kt, key_idx, q_pos, b, h, Nk, sm_scale, softcap, window,
            BIAS, stride_bias_b, stride_bias_h, stride_bias_n, KPM, stride_kpm_b, stride_kpm_n,
            IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
            HAS_PAD: tl.constexpr, HAS_BIAS: tl.constexpr, DOT_PREC: tl.constexpr,
            UPCAST: tl.constexpr):
    """Scores of a [BLOCK_M, BLOCK_N] tile: q [BLOCK_M, BLOCK_D], kt [BLOCK_D, BLOCK_N];
    key_idx [BLOCK_N]; q_pos [BLOCK_M]. Shared by both kernels."""
    return _edit_scores(_dot(q, kt, DOT_PREC, UPCAST), key_idx[None, :], q_pos[:, None], b, h,
                        Nk, sm_scale, softcap, window,
                        BIAS, stride_bias_b, stride_bias_h, stride_bias_n,
                        KPM, stride_kpm_b, stride_kpm_n,
                        IS_CAUSAL, HAS_WINDOW, HAS_SOFTCAP, HAS_PAD, HAS_BIAS)


@triton.jit
def _gathered_scores(q, k_base, stride_kn, stride_kd, offs_d, d_ok, key_idx, q_pos, b, h, Nk,
                     sm_scale, softcap, window,
                     BIAS, stride_bias_b, stride_bias_h, stride_bias_n,
                     KPM, stride_kpm_b, stride_kpm_n,
                     IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
                     HAS_SOFTCAP: tl.constexpr, HAS_PAD: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Scores of one key per row: key_idx [BLOCK_M] (-1 or out of range: -inf), q [BLOCK_M, BLOCK_D]."""
    ok = (key_idx >= 0) & (key_idx < Nk)
    kg = tl.load(k_base + tl.where(ok, key_idx, 0)[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                 mask=ok[:, None] & d_ok[None, :], other=0.0)
    raw = tl.sum(q.to(tl.float32) * kg.to(tl.float32), 1)
    return _edit_scores(raw, key_idx, q_pos, b, h, Nk, sm_scale, softcap, window,
                        BIAS, stride_bias_b, stride_bias_h, stride_bias_n,
                        KPM, stride_kpm_b, stride_kpm_n,
                        IS_CAUSAL, HAS_WINDOW, HAS_SOFTCAP, HAS_PAD, HAS_BIAS)


@triton.jit
def _key_range(start_m, Nq, Nk, window, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """Key blocks [lo, hi) that queries of block start_m can see (block-aligned lo)."""
    off = Nk - Nq
    first_pos = start_m * BLOCK_M + off
    last_pos = tl.minimum(start_m * BLOCK_M + BLOCK_M, Nq) - 1 + off
    lo = 0
    hi = Nk
    if IS_CAUSAL:
        hi = tl.minimum(Nk, last_pos + 1)
    if HAS_WINDOW:
        lo = tl.maximum(0, first_pos - window + 1)
        lo = (lo // BLOCK_N) * BLOCK_N
        if not IS_CAUSAL:
            hi = tl.minimum(Nk, last_pos + window)
    return lo, hi


@triton.jit
def _attn_fwd(
    Q, K, V, Out,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    KPM, stride_kpm_b, stride_kpm_n,                     # [B,Nk] int8, 1 = real token
    BIAS, stride_bias_b, stride_bias_h, stride_bias_n,   # [B,H,Nk] fp32 key bias
    SINK, stride_sink_b, stride_sink_n,                  # [B,Nk] int8 ACT sinks
    BETA, stride_beta_b, HSCALE,                         # [H] or [B,H] fp32; [H] fp32
    KSET, stride_kset_b, stride_kset_n,                  # [B,Nk] int8 key set (key mass)
    GIDX, stride_g_b, stride_g_n, stride_g_t, T,         # [B,Nq,T] int64 keys to gather
    LSE, ENT, AMAX, KMASS, ACTB,                         # [B,H,Nq] row outputs, contiguous
    GOUT,                                                # [B,H,Nq,T] fp32
    H, G, Nq, Nk, sm_scale, softcap, window,
    IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    HAS_PAD: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ACT: tl.constexpr,
    HAS_HSCALE: tl.constexpr, WANT_OUT: tl.constexpr, WANT_LSE: tl.constexpr, WANT_ENT: tl.constexpr,
    WANT_ARGMAX: tl.constexpr, WANT_KMASS: tl.constexpr, WANT_GATHER: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    kvh = h // G
    b64 = b.to(tl.int64)

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q_pos = offs_m + (Nk - Nq)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    row_ok = offs_m < Nq
    q = tl.load(Q + b64 * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn
                + offs_d[None, :] * stride_qd, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    k_base = K + b64 * stride_kb + kvh * stride_kh
    v_base = V + b64 * stride_vb + kvh * stride_vh

    NEG_INF = float("-inf")
    m_i = tl.full([BLOCK_M], NEG_INF, tl.float32)
    l_n = tl.zeros([BLOCK_M], tl.float32)        # sum of exp2(s - m), non-sink keys (all if no ACT)
    acc_n = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    t_n = tl.zeros([BLOCK_M], tl.float32)        # sum of exp2(s - m) * s
    k_n = tl.zeros([BLOCK_M], tl.float32)        # sum of exp2(s - m) over the key set
    best_n = tl.full([BLOCK_M], NEG_INF, tl.float32)
    arg_n = tl.full([BLOCK_M], -1, tl.int64)
    # the same for sink keys (ACT only)
    l_s = tl.zeros([BLOCK_M], tl.float32)
    acc_s = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    t_s = tl.zeros([BLOCK_M], tl.float32)
    k_s = tl.zeros([BLOCK_M], tl.float32)
    best_s = tl.full([BLOCK_M], NEG_INF, tl.float32)
    arg_s = tl.full([BLOCK_M], -1, tl.int64)

    lo, hi = _key_range(start_m, Nq, Nk, window, BLOCK_M, BLOCK_N, IS_CAUSAL, HAS_WINDOW)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        in_keys = offs_n < Nk
        kt = tl.load(k_base + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                     mask=in_keys[None, :] & d_ok[:, None], other=0.0)
        s = _scores(q, kt, offs_n, q_pos, b, h, Nk, sm_scale, softcap, window,
                    BIAS, stride_bias_b, stride_bias_h, stride_bias_n,
                    KPM, stride_kpm_b, stride_kpm_n,
                    IS_CAUSAL, HAS_WINDOW, HAS_SOFTCAP, HAS_PAD, HAS_BIAS, DOT_PREC, UPCAST)

        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == NEG_INF, 0.0, m_new)   # rows with nothing visible yet
        alpha = tl.exp2(m_i - m_use)
        p = tl.exp2(s - m_use[:, None])                  # 0 where invisible
        if WANT_OUT:
            v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                        mask=in_keys[:, None] & d_ok[None, :], other=0.0)
        if HAS_ACT:
            sink = tl.load(SINK + b64 * stride_sink_b + offs_n * stride_sink_n,
                           mask=in_keys, other=0) != 0
            p_n = tl.where(sink[None, :], 0.0, p)
        else:
            p_n = p
        l_n = l_n * alpha + tl.sum(p_n, 1)
        if WANT_OUT:
            acc_n = acc_n * alpha[:, None] + _dot(p_n.to(v.dtype), v, DOT_PREC, UPCAST)
        if WANT_ENT:
            s_fin = tl.where(s == NEG_INF, 0.0, s)       # p * s with p = 0, s = -inf is NaN
            t_n = t_n * alpha + tl.sum(p_n * s_fin, 1)
        if WANT_KMASS:
            kset = tl.load(KSET + b64 * stride_kset_b + offs_n * stride_kset_n,
                           mask=in_keys, other=0) != 0
            k_n = k_n * alpha + tl.sum(tl.where(kset[None, :], p_n, 0.0), 1)
        if WANT_ARGMAX:
            s_n = s
            if HAS_ACT:
                s_n = tl.where(sink[None, :], NEG_INF, s)
            blk_best = tl.max(s_n, 1)
            blk_arg = tl.argmax(s_n, 1).to(tl.int64) + start_n
            better = blk_best > best_n                   # strict: the first maximum wins
            best_n = tl.where(better, blk_best, best_n)
            arg_n = tl.where(better, blk_arg, arg_n)
        if HAS_ACT:
            p_s = p - p_n
            l_s = l_s * alpha + tl.sum(p_s, 1)
            if WANT_OUT:
                acc_s = acc_s * alpha[:, None]
                if tl.max(sink.to(tl.int32), 0) > 0:     # sinks are rare: one dot where they are
                    acc_s += _dot(p_s.to(v.dtype), v, DOT_PREC, UPCAST)
            if WANT_ENT:
                t_s = t_s * alpha + tl.sum(p_s * s_fin, 1)
            if WANT_KMASS:
                k_s = k_s * alpha + tl.sum(tl.where(kset[None, :], p_s, 0.0), 1)
            if WANT_ARGMAX:
                s_s = tl.where(sink[None, :], s, NEG_INF)
                blk_best_s = tl.max(s_s, 1)
                blk_arg_s = tl.argmax(s_s, 1).to(tl.int64) + start_n
                better_s = blk_best_s > best_s
                best_s = tl.where(better_s, blk_best_s, best_s)
                arg_s = tl.where(better_s, blk_arg_s, arg_s)
        m_i = m_new

    # ---- end of row: combine sink and non-sink sums --------------------------------------
    L = l_n + l_s
    has = L > 0.0
    L_safe = tl.where(has, L, 1.0)
    if HAS_ACT:
        beta = tl.zeros([BLOCK_M], tl.float32) + tl.load(BETA + b64 * stride_beta_b + h)
        movable = (l_n > 0.0) & (beta != 1.0)
        w_s = tl.where(movable, beta / L_safe, 1.0 / L_safe)
        w_n = tl.where(movable, (L - beta * l_s) / (tl.where(l_n > 0.0, l_n, 1.0) * L_safe),
                       1.0 / L_safe)
        # log2 of the sinks' extra weight; -inf when beta = 0 (sinks get nothing)
        ratio = w_s / w_n
        act_b2 = tl.where(movable, tl.where(ratio > 0.0, tl.log2(tl.maximum(ratio, 1e-30)),
                                            float("-inf")), 0.0)
    else:
        w_s = 1.0 / L_safe
        w_n = w_s
        act_b2 = tl.zeros([BLOCK_M], tl.float32)
    w_n = tl.where(has, w_n, 0.0)
    w_s = tl.where(has, w_s, 0.0)
    if WANT_OUT:
        out = acc_n * w_n[:, None]
        if HAS_ACT:
            out += acc_s * w_s[:, None]
        if HAS_HSCALE:
            out = out * tl.load(HSCALE + h)
        tl.store(Out + b64 * stride_ob + h * stride_oh + offs_m[:, None] * stride_on
                 + offs_d[None, :] * stride_od, out.to(Out.dtype.element_ty),
                 mask=row_ok[:, None] & d_ok[None, :])

    # non-sink keys keep their scores, so p'_j = w_n exp2(s_j - m) = exp2(s_j - lse2)
    lse2 = tl.where(has, m_i - tl.log2(tl.where(has, w_n, 1.0)), NEG_INF)
    row_out = bh.to(tl.int64) * Nq + offs_m
    if WANT_LSE:
        tl.store(LSE + row_out, lse2 * LN2, mask=row_ok)
        if HAS_ACT:
            tl.store(ACTB + row_out, act_b2 * LN2, mask=row_ok)
    if WANT_ENT:
        # E_p'[s'] = w_n t_n + w_s (t_s + b2 l_s); b2 l_s w_s is 0 when w_s is (beta = 0)
        e_s = w_n * t_n
        if HAS_ACT:
            sink_mass = w_s * l_s
            e_s += w_s * t_s + tl.where(sink_mass > 0.0, act_b2, 0.0) * sink_mass
        ent = tl.where(has, tl.maximum((lse2 - e_s) * LN2, 0.0), 0.0)
        tl.store(ENT + row_out, ent, mask=row_ok)
    if WANT_ARGMAX:
        arg = arg_n
        if HAS_ACT:
            sink_wins = (best_s + act_b2 > best_n) | ((best_s + act_b2 == best_n) & (arg_s < arg_n))
            arg = tl.where(sink_wins & (best_s > NEG_INF), arg_s, arg_n)
        tl.store(AMAX + row_out, tl.where(has, arg, -1), mask=row_ok)
    if WANT_KMASS:
        km = w_n * k_n
        if HAS_ACT:
            km += w_s * k_s
        tl.store(KMASS + row_out, km, mask=row_ok)
    if WANT_GATHER:
        # p' at T given keys per row: one gathered key vector per row and t
        for t in range(0, T):
            idx = tl.load(GIDX + b64 * stride_g_b + offs_m * stride_g_n + t * stride_g_t,
                          mask=row_ok, other=-1)
            sg = _gathered_scores(q, k_base, stride_kn, stride_kd, offs_d, d_ok, idx, q_pos, b, h,
                                  Nk, sm_scale, softcap, window,
                                  BIAS, stride_bias_b, stride_bias_h, stride_bias_n,
                                  KPM, stride_kpm_b, stride_kpm_n,
                                  IS_CAUSAL, HAS_WINDOW, HAS_SOFTCAP, HAS_PAD, HAS_BIAS)
            if HAS_ACT:
                ok = (idx >= 0) & (idx < Nk)
                g_sink = tl.load(SINK + b64 * stride_sink_b + tl.where(ok, idx, 0) * stride_sink_n,
                                 mask=ok, other=0) != 0
                sg = tl.where(g_sink, sg + act_b2, sg)
            pg = tl.where(has, tl.exp2(sg - tl.where(has, lse2, 0.0)), 0.0)
            tl.store(GOUT + row_out * T + t, pg, mask=row_ok)


@triton.jit
def _attn_received(
    Q, K,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    KPM, stride_kpm_b, stride_kpm_n,
    BIAS, stride_bias_b, stride_bias_h, stride_bias_n,
    SINK, stride_sink_b, stride_sink_n,
    LSE, ACTB,                                           # [B,H,Nq] from _attn_fwd
    RECV,                                                # [B,H,Nk] fp32
    H, G, Nq, Nk, sm_scale, softcap, window,
    IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    HAS_PAD: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ACT: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    """received[b, h, j] = sum over valid queries i of p'_ij, p' recomputed from the lse."""
    start_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    kvh = h // G
    b64 = b.to(tl.int64)
    off = Nk - Nq

    offs_n = start_n * BLOCK_N + tl.arange(0, BLOCK_N)
    in_keys = offs_n < Nk
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    kt = tl.load(K + b64 * stride_kb + kvh * stride_kh + offs_n[None, :] * stride_kn
                 + offs_d[:, None] * stride_kd, mask=in_keys[None, :] & d_ok[:, None], other=0.0)
    if HAS_ACT:
        sink = tl.load(SINK + b64 * stride_sink_b + offs_n * stride_sink_n,
                       mask=in_keys, other=0) != 0

    # queries that can see this key block
    first_key = start_n * BLOCK_N
    last_key = tl.minimum(first_key + BLOCK_N, Nk) - 1
    q_lo = 0
    q_hi = Nq
    if IS_CAUSAL:
        q_lo = tl.maximum(0, first_key - off)
    if HAS_WINDOW:
        q_hi = tl.minimum(Nq, last_key + window - off)
        if not IS_CAUSAL:
            q_lo = tl.maximum(0, first_key - window + 1 - off)
    q_lo = (q_lo // BLOCK_M) * BLOCK_M

    acc = tl.zeros([BLOCK_N], tl.float32)
    q_base = Q + b64 * stride_qb + h * stride_qh
    row_base = bh.to(tl.int64) * Nq
    for start_m in range(q_lo, q_hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < Nq
        q = tl.load(q_base + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                    mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        q_pos = offs_m + off
        s = _scores(q, kt, offs_n, q_pos, b, h, Nk, sm_scale, softcap, window,
                    BIAS, stride_bias_b, stride_bias_h, stride_bias_n,
                    KPM, stride_kpm_b, stride_kpm_n,
                    IS_CAUSAL, HAS_WINDOW, HAS_SOFTCAP, HAS_PAD, HAS_BIAS, DOT_PREC, UPCAST)
        lse2 = tl.load(LSE + row_base + offs_m, mask=row_ok, other=float("-inf")) * LOG2E
        valid = row_ok & (lse2 > float("-inf"))
        if HAS_PAD:   # a query counts when its own position is a real token
            q_real = tl.load(KPM + b64 * stride_kpm_b + q_pos * stride_kpm_n, mask=row_ok, other=0)
            valid = valid & (q_real != 0)
        if HAS_ACT:
            act_b2 = tl.load(ACTB + row_base + offs_m, mask=row_ok, other=0.0) * LOG2E
            s = tl.where(sink[None, :], s + act_b2[:, None], s)
        p = tl.exp2(s - tl.where(valid, lse2, 0.0)[:, None])
        p = tl.where(valid[:, None], p, 0.0)
        acc += tl.sum(p, 0)
    tl.store(RECV + bh.to(tl.int64) * Nk + offs_n, acc, mask=in_keys)


def _blocks(head_dim: int, n_queries: int, has_act: bool) -> dict:
    """Tile sizes and launch parameters (no autotuning: predictable, and the interpreter is slow).

    ACT keeps a second [BLOCK_M, D] accumulator for the sinks; at large head dims the query tile
    shrinks so that both stay in registers.
    """
    if _interpreting():
        return dict(BLOCK_M=16, BLOCK_N=16, num_warps=1, num_stages=1)
    bm = 16 if n_queries <= 16 else 64 if n_queries <= 64 else 128   # decoding: few rows
    if head_dim > 128:
        return dict(BLOCK_M=32 if has_act else 64, BLOCK_N=32, num_warps=4, num_stages=2)
    if head_dim > 64:
        if has_act:
            return dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3)
        return dict(BLOCK_M=bm, BLOCK_N=64, num_warps=8, num_stages=3)
    return dict(BLOCK_M=bm, BLOCK_N=64, num_warps=4, num_stages=3)


def triton_attention(q, k, v, *, causal: bool = True, scale: float | None = None,
                     key_padding_mask: torch.Tensor | None = None,
                     sliding_window: int | None = None, softcap: float | None = None,
                     edit: LayerEdit | None = None, stats: AttentionStatsRequest | None = None,
                     backend: str = "triton", block_m: int | None = None,
                     block_n: int | None = None, need_output: bool = True):
    """Launcher; same contract as `kernels.attention`. q [B,H,Nq,D], k/v [B,Hkv,Nk,D].

    Runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1 (tests).
    block_m / block_n override the tile sizes (tests use them to hit tile edges).
    need_output: False skips the PV products when only statistics are wanted (out is None).
    ACT with per-head sinks, or sinks to find in the call, goes through `kernels.act`.
    """
    if not q.is_cuda and not _interpreting():
        raise RuntimeError("the Triton backend needs CUDA tensors "
                           "(or TRITON_INTERPRET=1 set before import, for tests on CPU)")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"unsupported dtype {q.dtype}")
    d = check_inputs(q, k, v, key_padding_mask, sliding_window, edit, stats)
    if needs_pairs(edit, stats):
        return calibrated_attention(
            triton_attention, q, k, v, causal=causal, scale=scale,
            key_padding_mask=key_padding_mask, sliding_window=sliding_window, softcap=softcap,
            edit=edit, stats=stats, block_m=block_m, block_n=block_n)
    B, H, Nq, Nk, D = d.batch, d.heads, d.n_queries, d.n_keys, d.head_dim
    sm_scale = default_scale(D, scale)
    want = stats if stats is not None else AttentionStatsRequest()
    dev, f32 = q.device, torch.float32
    out = torch.empty(B, H, Nq, D, dtype=q.dtype, device=dev) if need_output else \
        torch.empty(1, dtype=q.dtype, device=dev)

    def i8(mask):   # bool -> int8 without a copy
        return mask.contiguous().view(torch.int8)

    dummy = out
    kpm = i8(key_padding_mask) if key_padding_mask is not None else None
    bias = edit.key_bias.to(dev, f32) if edit is not None and edit.key_bias is not None else None
    sink = i8(edit.sink_mask.to(dev)) if edit is not None and edit.sink_mask is not None else None
    beta = edit.act_beta.to(dev, f32).contiguous() if sink is not None else None   # [H] or [B,H]
    hscale = edit.head_scale.to(dev, f32).contiguous() if edit is not None and edit.head_scale is not None else None
    kset = i8(want.key_mask.to(dev)) if want.key_mass else None
    gidx = want.gather_keys.to(dev, torch.int64) if want.gather_keys is not None else None
    T = 0 if gidx is None else gidx.shape[-1]

    need_lse = want.lse or want.received
    row = lambda on, dtype=f32: torch.empty(B, H, Nq, dtype=dtype, device=dev) if on else dummy
    lse, ent = row(need_lse), row(want.entropy)
    amax, kmass = row(want.argmax, torch.int64), row(want.key_mass)
    actb = row(need_lse and sink is not None)
    gout = torch.empty(B, H, Nq, T, dtype=f32, device=dev) if gidx is not None else dummy

    cfg = _blocks(D, Nq, sink is not None)
    if block_m is not None:
        cfg["BLOCK_M"] = block_m
    if block_n is not None:
        cfg["BLOCK_N"] = block_n
    common = dict(
        IS_CAUSAL=causal, HAS_WINDOW=sliding_window is not None, HAS_SOFTCAP=softcap is not None,
        HAS_PAD=kpm is not None, HAS_BIAS=bias is not None, HAS_ACT=sink is not None,
        HEAD_DIM=D, BLOCK_D=max(16, triton.next_power_of_2(D)),
        DOT_PREC="ieee" if q.dtype == torch.float32 else "tf32",
        UPCAST=_interpreting() and q.dtype != torch.float32,
    )
    scal = (H, d.group, Nq, Nk, sm_scale, float(softcap or 1.0), int(sliding_window or 0))
    kpm_args = (kpm if kpm is not None else dummy, *(kpm.stride() if kpm is not None else (0, 0)))
    bias_args = (bias if bias is not None else dummy, *(bias.stride() if bias is not None else (0, 0, 0)))
    sink_args = (sink if sink is not None else dummy, *(sink.stride() if sink is not None else (0, 0)))
    grid = (triton.cdiv(Nq, cfg["BLOCK_M"]), B * H)
    out_strides = out.stride() if need_output else (0, 0, 0, 0)
    _attn_fwd[grid](
        q, k, v, out, *q.stride(), *k.stride(), *v.stride(), *out_strides,
        *kpm_args, *bias_args, *sink_args,
        beta if beta is not None else dummy, beta.stride(0) if beta is not None and beta.dim() == 2 else 0,
        hscale if hscale is not None else dummy,
        kset if kset is not None else dummy, *(kset.stride() if kset is not None else (0, 0)),
        gidx if gidx is not None else dummy, *(gidx.stride() if gidx is not None else (0, 0, 0)), T,
        lse, ent, amax, kmass, actb, gout,
        *scal,
        HAS_HSCALE=hscale is not None, WANT_OUT=need_output, WANT_LSE=need_lse, WANT_ENT=want.entropy,
        WANT_ARGMAX=want.argmax, WANT_KMASS=want.key_mass, WANT_GATHER=gidx is not None,
        **common, **cfg,
    )
    result = {}
    if want.lse:
        result["lse"] = lse
    if want.entropy:
        result["entropy"] = ent
    if want.argmax:
        result["argmax"] = amax
    if want.key_mass:
        result["key_mass"] = kmass
    if want.received:
        recv = torch.empty(B, H, Nk, dtype=f32, device=dev)
        rcfg = dict(cfg)
        rcfg["BLOCK_M"], rcfg["BLOCK_N"] = cfg["BLOCK_N"], cfg["BLOCK_M"]   # keys are the long side
        if _interpreting():
            rcfg["BLOCK_M"] = rcfg["BLOCK_N"] = 16 if block_m is None else block_m
        _attn_received[(triton.cdiv(Nk, rcfg["BLOCK_N"]), B * H)](
            q, k, *q.stride(), *k.stride(), *kpm_args, *bias_args, *sink_args,
            lse, actb, recv, *scal, **common, **rcfg,
        )
        result["received"] = recv
    if gidx is not None:
        result["gathered"] = gout
    return (out if need_output else None), {name: result[name] for name in want.names}
