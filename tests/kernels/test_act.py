"""ACT with sinks found in the call, per input and per head (Yu et al., ICML 2024).

The definition, as the released code (GATECH-EIC/ACT) runs it on one head's [N, N] pattern:
a key is a sink when the attention it receives, averaged over the queries that see it, exceeds
tau; the first sink is left alone; sink columns are scaled by beta and the removed mass goes to
the other keys in proportion. `naive_attention` must follow it; the torch reference (two passes
through `kernels.act`) must equal `naive_attention`.
"""
import itertools

import pytest
import torch

from kernels import (AttentionStatsRequest, LayerEdit, naive_attention, queries_seeing,
                     reference_attention)
from kernels.masking import query_positions, visible

from tests.kernels.kernel_cases import assert_same, make_padding, make_stats, planted

TAU, BETA = 0.1, 0.4


def full_pattern(q, k, v, **kw):
    """[B,H,Nq,Nk] edited pattern read back through `gathered` at every key, and the stats."""
    B, _, Nq, _ = q.shape
    Nk = k.shape[2]
    every_key = torch.arange(Nk).expand(B, Nq, Nk)
    _, st = naive_attention(q, k, v, stats=AttentionStatsRequest(gather_keys=every_key, sinks=True), **kw)
    return st["gathered"].double(), st["sinks"]


def released_act(p: torch.Tensor, tau: float, beta: float):
    """One head's causal pattern p [N, N] -> (sink positions, calibrated pattern), the procedure
    of the released code, written out step by step."""
    n = p.shape[0]
    mean = p.sum(0) / torch.arange(n, 0, -1, dtype=p.dtype)    # key j is seen by n - j queries
    sinks = torch.nonzero(mean > tau).flatten()[1:]             # the first sink is left alone
    out = p.clone()
    if len(sinks):
        s = p[:, sinks].sum(1, keepdim=True)                    # each row's sink mass
        others = p.clone()
        others[:, sinks] = 0
        share = others / others.sum(1, keepdim=True)
        out[:, sinks] *= beta
        out = torch.where(s < 1, out + (1 - beta) * s * share, p)
    return sinks.tolist(), out


def test_naive_follows_the_released_procedure():
    B, H, N, D = 2, 3, 24, 16
    q, k, v = planted(B, H, H, N, N, D, seed=1)
    beta = torch.tensor([BETA, BETA, 1.0])       # head 2 not calibrated
    plain, _ = full_pattern(q, k, v)
    got, sinks = full_pattern(q, k, v, edit=LayerEdit(act_beta=beta, act_tau=TAU))
    n_calibrated = 0
    for b, h in itertools.product(range(B), range(H)):
        if beta[h] == 1:
            assert not sinks[b, h].any()
            torch.testing.assert_close(got[b, h], plain[b, h])
            continue
        positions, expected = released_act(plain[b, h], TAU, BETA)
        assert sinks[b, h].nonzero().flatten().tolist() == positions
        torch.testing.assert_close(got[b, h], expected, atol=1e-6, rtol=1e-5)   # stats are fp32
        n_calibrated += bool(positions)
    assert n_calibrated >= 3, "the planted keys should be sinks past the first on most heads"


def test_calibrated_rows_sum_to_one_and_the_first_sink_is_not_scaled():
    B, H, N, D = 1, 4, 30, 16
    q, k, v = planted(B, H, 2, N, N, D, seed=2)
    plain, _ = full_pattern(q, k, v)
    le = LayerEdit(act_beta=torch.full((H,), BETA), act_tau=TAU)
    for run in (naive_attention, reference_attention):
        every_key = torch.arange(N).expand(B, N, N)
        _, st = run(q, k, v, edit=le, stats=AttentionStatsRequest(gather_keys=every_key, sinks=True))
        got, sinks = st["gathered"].double(), st["sinks"]
        torch.testing.assert_close(got.sum(-1), torch.ones(B, H, N, dtype=torch.float64), atol=1e-5, rtol=0)
        mean = plain.sum(-2) / torch.arange(N, 0, -1)
        first = (mean > TAU).long().argmax(-1)                  # [B,H] the first sink
        for h in range(H):
            f = int(first[0, h])
            assert not sinks[0, h, f]
            rows = torch.arange(f + 1, N)                       # the rows that see it and a sink
            later = sinks[0, h].nonzero().flatten()
            if len(later) == 0:
                continue
            rows = rows[rows >= later[0]]
            # the first sink is scaled like every non-sink key (c >= 1), sinks by beta
            ratio_first = got[0, h, rows, f] / plain[0, h, rows, f]
            other = (~sinks[0, h]).nonzero().flatten()
            other = other[other != f][0]                        # another non-sink key (key 1..)
            ok = plain[0, h, rows, other] > 0
            torch.testing.assert_close(ratio_first[ok], (got[0, h, rows, other] / plain[0, h, rows, other])[ok],
                                       atol=1e-5, rtol=1e-5)
            assert (ratio_first >= 1 - 1e-6).all()
            seen = plain[0, h, rows][:, later] > 0
            ratio_sinks = (got[0, h, rows][:, later] / plain[0, h, rows][:, later])[seen]
            torch.testing.assert_close(ratio_sinks, torch.full_like(ratio_sinks, BETA),
                                       atol=1e-5, rtol=1e-5)


GRID = list(itertools.product(
    [23, 9],              # Nq (Nk = 23): a prefill, the last rows against a longer cache
    [True, False],        # causal
    [None, 6],            # sliding window
    [False, True],        # padding
    [False, True],        # key bias on top
    [False, True],        # per-row betas (the batched head search)
))


@pytest.mark.parametrize("Nq,causal,window,pad,bias,per_row", GRID)
def test_reference_finds_the_same_sinks_as_naive(Nq, causal, window, pad, bias, per_row):
    B, H, Hkv, Nk, D = 2, 4, 2, 23, 16
    q, k, v = planted(B, H, Hkv, Nq, Nk, D, seed=Nq)
    beta = torch.tensor([[BETA, 1.0, 0.0, 0.7], [1.0, 0.25, 1.0, 1.0]]) if per_row \
        else torch.tensor([BETA, 1.0, 0.0, 0.7])
    g = torch.Generator().manual_seed(3)
    kw = dict(causal=causal, sliding_window=window, key_padding_mask=make_padding(B, Nk) if pad else None,
              edit=LayerEdit(key_bias=torch.randn(B, H, Nk, generator=g) if bias else None,
                             head_scale=torch.tensor([1.0, 2.0, 0.5, 1.0]), act_beta=beta, act_tau=TAU),
              stats=make_stats(B, Nq, Nk, lse=True, entropy=True, argmax=True, received=True, sinks=True))
    expected = naive_attention(q, k, v, **kw)
    assert expected[1]["sinks"].any()
    for block_size in (None, 5):
        assert_same(*expected, *reference_attention(q, k, v, block_size=block_size, **kw))
    # no statistics: the fp32 output is corrected from the sink columns (pass 2 without scores)
    kw["stats"] = None
    assert_same(*naive_attention(q, k, v, **kw), *reference_attention(q, k, v, **kw))


@pytest.mark.parametrize("window,pad", [(None, True), (6, False)])
def test_every_head_calibrated_without_statistics(window, pad):
    """All heads of all rows, output only: every pair's output corrected from its sink columns."""
    B, H, Hkv, N, D = 2, 4, 2, 23, 16
    q, k, v = planted(B, H, Hkv, N, N, D, seed=13)
    kw = dict(sliding_window=window, key_padding_mask=make_padding(B, N) if pad else None,
              edit=LayerEdit(act_beta=torch.tensor([BETA, 0.0, 0.7, 0.25]), act_tau=TAU))
    expected = naive_attention(q, k, v, **kw)
    assert_same(*expected, *reference_attention(q, k, v, **kw))
    plain, _ = naive_attention(q, k, v, sliding_window=window, key_padding_mask=kw["key_padding_mask"])
    assert not torch.allclose(expected[0], plain, atol=1e-3)


def test_rows_almost_all_on_sinks_take_the_exact_pass(monkeypatch):
    """The sink-column correction amplifies rounding by 1 / (non-sink mass): pairs with rows
    that keep little of it must take the one-pass kernel instead."""
    import kernels.act as act

    B, H, N, D = 1, 2, 20, 16
    q, k, v = planted(B, H, H, N, N, D, seed=11)
    k[:, :, 4] *= 3.0                                   # key 4 takes nearly all of later rows
    le = LayerEdit(act_beta=torch.tensor([BETA, 0.0]), act_tau=TAU)
    expected, st = naive_attention(q, k, v, edit=le, stats=AttentionStatsRequest(sinks=True))
    p, _ = full_pattern(q, k, v)
    rest = 1 - (p * st["sinks"][:, :, None, :]).sum(-1)
    assert rest.min() < 1e-3, "some rows must be nearly all on (non-first) sinks"
    got, _ = reference_attention(q, k, v, edit=le)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    monkeypatch.setattr(act, "_MIN_REST", 0.0)          # always correct: visibly worse
    assert (reference_attention(q, k, v, edit=le)[0] - expected).abs().max() > 1e-4


def test_given_per_head_sinks_match_naive_and_decode_equals_prefill():
    """Decoding keeps the prefill's sinks: a new row calibrated with them equals the last row of
    a prefill with the same (given) sinks, and sums to 1."""
    B, H, Hkv, N, D = 2, 4, 2, 19, 16
    q, k, v = planted(B, H, Hkv, N, N, D, seed=5)
    kpm = make_padding(B, N)
    beta = torch.tensor([BETA, BETA, 1.0, 0.0])
    _, found = naive_attention(q[:, :, :-1], k[:, :, :-1], v[:, :, :-1], key_padding_mask=kpm[:, :-1],
                               edit=LayerEdit(act_beta=beta, act_tau=TAU),
                               stats=AttentionStatsRequest(sinks=True))
    sinks = torch.nn.functional.pad(found["sinks"], (0, 1))       # the new token: not a sink
    assert sinks.any()
    le = LayerEdit(sink_mask=sinks, act_beta=beta)
    stats = make_stats(B, N, N, lse=True, entropy=True, argmax=True, sinks=True)
    stats.key_mask = stats.gather_keys = None
    prefill = naive_attention(q, k, v, key_padding_mask=kpm, edit=le, stats=stats)
    assert_same(*prefill, *reference_attention(q, k, v, key_padding_mask=kpm, edit=le, stats=stats))
    every_key = torch.arange(N).expand(B, 1, N)
    for run in (naive_attention, reference_attention):
        out, st = run(q[:, :, -1:], k, v, key_padding_mask=kpm, edit=le,
                      stats=AttentionStatsRequest(lse=True, gather_keys=every_key))
        torch.testing.assert_close(out, prefill[0][:, :, -1:], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(st["lse"], prefill[1]["lse"][:, :, -1:], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(st["gathered"].sum(-1), torch.ones(B, H, 1), atol=1e-5, rtol=0)


def test_one_head_per_row_equals_one_call_per_head():
    """The batched search: row b calibrates head b alone, as if it were run by itself."""
    H, N, D = 3, 21, 16
    q1, k1, v1 = planted(1, H, H, N, N, D, seed=7)
    B = H
    q, k, v = (x.expand(B, -1, -1, -1).contiguous() for x in (q1, k1, v1))
    beta = torch.ones(B, H)
    beta[torch.arange(B), torch.arange(B)] = BETA
    together, _ = reference_attention(q, k, v, edit=LayerEdit(act_beta=beta, act_tau=TAU))
    for h in range(H):
        alone, _ = reference_attention(q1, k1, v1, edit=LayerEdit(act_beta=beta[h], act_tau=TAU))
        torch.testing.assert_close(together[h:h + 1], alone, atol=1e-6, rtol=1e-6)
    plain, _ = reference_attention(q1, k1, v1)
    assert not torch.allclose(together[0, 0], plain[0, 0], atol=1e-3)   # head 0 changed on row 0
    torch.testing.assert_close(together[0, 1:], plain[0, 1:], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("causal,window", [(True, None), (True, 4), (False, None), (False, 4)])
def test_queries_seeing_counts_the_visible_valid_queries(causal, window):
    B, Nq, Nk = 2, 6, 11
    kpm = make_padding(B, Nk, left=2, right=3)
    vis = visible(query_positions(Nq, Nk), torch.arange(Nk), causal, window)
    vis = torch.ones(Nq, Nk, dtype=torch.bool) if vis is None else vis
    real_q = kpm[:, Nk - Nq:]
    brute = (vis[None] & real_q[:, :, None]).sum(1).float()
    torch.testing.assert_close(queries_seeing(Nq, Nk, causal, window, kpm), brute)
    torch.testing.assert_close(queries_seeing(Nq, Nk, causal, window, None)[0], vis.sum(0).float())
