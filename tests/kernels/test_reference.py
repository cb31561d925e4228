"""The torch reference against the full-matrix definition, and the edit semantics."""
import itertools
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels import (AttentionEdit, AttentionStatsRequest, LayerEdit, SinkCalibration, attention,
                     naive_attention, pasta, reference_attention)

from tests.kernels.kernel_cases import assert_same, make_edit, make_padding, make_qkv, make_stats

GRID = list(itertools.product(
    [1, 7, 23],           # Nq (Nk = 23): decode, a few queries, prefill
    [True, False],        # causal
    [None, 5],            # sliding window
    [False, True],        # padding
    [None, 2.5],          # softcap
    [False, True],        # edits (bias + ACT + head scale)
))


@pytest.mark.parametrize("Nq,causal,window,pad,softcap,edits", GRID)
def test_reference_matches_naive(Nq, causal, window, pad, softcap, edits):
    B, H, Hkv, Nk, D = 2, 4, 2, 23, 16
    q, k, v = make_qkv(B, H, Hkv, Nq, Nk, D, seed=Nq)
    kw = dict(causal=causal, sliding_window=window, softcap=softcap,
              key_padding_mask=make_padding(B, Nk) if pad else None,
              edit=make_edit(B, H, Nk) if edits else None, stats=make_stats(B, Nq, Nk))
    expected = naive_attention(q, k, v, **kw)
    for block_size in (None, 5):
        assert_same(*expected, *reference_attention(q, k, v, block_size=block_size, **kw))


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    B=st.integers(1, 2), Hkv=st.integers(1, 3), G=st.integers(1, 3), D=st.sampled_from([8, 16]),
    Nk=st.integers(1, 40), frac=st.floats(0.0, 1.0), causal=st.booleans(),
    window=st.one_of(st.none(), st.integers(1, 12)), pad=st.booleans(),
    bias=st.booleans(), act=st.booleans(), block=st.integers(1, 17), seed=st.integers(0, 99),
)
def test_reference_property(B, Hkv, G, D, Nk, frac, causal, window, pad, bias, act, block, seed):
    H = Hkv * G
    Nq = max(1, round(frac * Nk))
    q, k, v = make_qkv(B, H, Hkv, Nq, Nk, D, seed=seed)
    kpm = None
    if pad:
        kpm = torch.rand(B, Nk, generator=torch.Generator().manual_seed(seed)) < 0.7
    kw = dict(causal=causal, sliding_window=window, key_padding_mask=kpm,
              edit=make_edit(B, H, Nk, bias=bias, act=act, seed=seed),
              stats=make_stats(B, Nq, Nk, seed=seed))
    assert_same(*naive_attention(q, k, v, **kw), *reference_attention(q, k, v, block_size=block, **kw))


def _pattern(q, k, v, **kw):
    """The full edited pattern [B,H,Nq,Nk] read back through `gathered` at every key."""
    B, _, Nq, _ = q.shape
    Nk = k.shape[2]
    every_key = torch.arange(Nk).expand(B, Nq, Nk)
    _, st_ = reference_attention(q, k, v, stats=AttentionStatsRequest(gather_keys=every_key), **kw)
    return st_["gathered"]


def test_act_one_pass_equals_two_step_definition():
    """ACT (Yu et al. 2024): sinks times beta, the removed mass to the others in proportion."""
    B, H, Nk, D = 2, 3, 30, 16
    q, k, v = make_qkv(B, H, H, Nk, Nk, D, seed=3)
    k[:, :, 0] *= 4.0                              # make key 0 a real sink
    beta = torch.tensor([0.4, 1.0, 0.0])
    sinks = torch.zeros(B, Nk, dtype=torch.bool)
    sinks[:, 0] = True
    sinks[1, 5] = True                             # per-prompt sink sets are allowed too
    edit = LayerEdit(sink_mask=sinks, act_beta=beta)

    # two steps, in float64: the plain causal pattern, then the paper's update, row by row
    scores = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(D)
    causal = torch.ones(Nk, Nk, dtype=torch.bool).tril()
    p = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
    sink = sinks[:, None, None, :].double()
    s = (p * sink).sum(-1, keepdim=True)
    b = beta.double()[None, :, None, None]
    expected = p * sink * b + p * (1 - sink) * (1 + (1 - b) * s / (1 - s))
    expected = torch.where(s < 1, expected, p)      # a row all on sinks has nowhere to go

    one_pass = _pattern(q, k, v, edit=edit).double()
    torch.testing.assert_close(one_pass, expected, atol=1e-5, rtol=5e-5)   # fp32 vs fp64
    torch.testing.assert_close(one_pass.sum(-1), torch.ones(B, H, Nk, dtype=torch.float64))
    # the same as a per-row bias log(beta (1 - s) / (1 - beta s)) on the sink keys (head 0)
    ratio = (one_pass / p)[:, 0]
    row_bias = torch.log(0.4 * (1 - s[:, 0]) / (1 - 0.4 * s[:, 0]))
    sink_ratio = torch.where(sinks[:, None, :], ratio, float("nan"))
    other_ratio = torch.where(~sinks[:, None, :] & (p[:, 0] > 0), ratio, float("nan"))
    log_gap = (sink_ratio.nanmean(-1) / other_ratio.nanmean(-1)).log()
    ok = (s[:, 0, :, 0] < 1) & (s[:, 0, :, 0] > 0)
    torch.testing.assert_close(log_gap[ok], row_bias[..., 0][ok], atol=1e-4, rtol=1e-4)
    # and the output is the edited pattern times V
    out, _ = reference_attention(q, k, v, edit=edit)
    torch.testing.assert_close(out, (one_pass.float() @ v), atol=1e-5, rtol=1e-5)


def test_decoding_equals_last_rows_of_prefill():
    B, H, Hkv, N, D = 2, 4, 2, 19, 16
    q, k, v = make_qkv(B, H, Hkv, N, N, D, seed=5)
    kpm = make_padding(B, N)
    for window, edit in [(None, None), (6, make_edit(B, H, N))]:
        full_out, full_st = reference_attention(q, k, v, key_padding_mask=kpm, sliding_window=window,
                                                edit=edit, stats=make_stats(B, N, N, lse=True,
                                                                            entropy=True, argmax=True))
        for n in (1, 3):
            st_ = make_stats(B, n, N, lse=True, entropy=True, argmax=True)
            st_.key_mask = None
            out, dec = attention(q[:, :, -n:], k, v, key_padding_mask=kpm, sliding_window=window,
                                 edit=edit, stats=st_)
            torch.testing.assert_close(out, full_out[:, :, -n:], atol=1e-5, rtol=1e-5)
            for name in ("lse", "entropy", "argmax"):
                torch.testing.assert_close(dec[name], full_st[name][:, :, -n:], atol=1e-5, rtol=1e-5)


def test_head_scale_zero_ablates_the_head_only():
    B, H, N, D = 1, 3, 12, 8
    q, k, v = make_qkv(B, H, 1, N, N, D)
    plain, plain_st = reference_attention(q, k, v, stats=AttentionStatsRequest(entropy=True))
    edit = AttentionEdit((pasta(((9, 0),), ((0, 1),), 0.5),)).layer_edit(0, B, N, H)   # other layer
    assert edit is None
    le = LayerEdit(head_scale=torch.tensor([1.0, 0.0, 1.0]))
    for stats in (None, AttentionStatsRequest(entropy=True)):   # SDPA path and stats path
        out, st_ = reference_attention(q, k, v, edit=le, stats=stats)
        assert out[:, 1].abs().max() == 0
        torch.testing.assert_close(out[:, [0, 2]], plain[:, [0, 2]])
        if stats is not None:   # statistics describe the distribution, which is unchanged
            torch.testing.assert_close(st_["entropy"], plain_st["entropy"])


def test_pasta_bias_changes_exactly_the_intended_scores():
    B, H, N, D, alpha = 2, 3, 16, 8, 0.01
    q, k, v = make_qkv(B, H, H, N, N, D, seed=7)
    spans = (((2, 5),), ((0, 1), (9, 12)))
    le = AttentionEdit((pasta(((4, 1),), spans, alpha),)).layer_edit(4, B, N, H)
    before, after = _pattern(q, k, v).double(), _pattern(q, k, v, edit=le).double()
    torch.testing.assert_close(after[:, [0, 2]], before[:, [0, 2]])       # other heads untouched
    inside = torch.zeros(B, N, dtype=torch.bool)
    inside[0, 2:5] = True
    inside[1, 0:1] = True
    inside[1, 9:12] = True
    ratio = (after / before)[:, 1]                                          # [B, Nq, Nk]
    visible = before[:, 1] > 0
    # within a row, every highlighted key is scaled by one factor, every other key by alpha times it
    for b in range(B):
        for i in range(N):
            r = ratio[b, i][visible[b, i]]
            ins = inside[b][: len(visible[b, i])][visible[b, i]]
            if ins.any() and (~ins).any():
                torch.testing.assert_close(r[~ins] / r[ins].mean(), torch.full_like(r[~ins], alpha),
                                           rtol=1e-5, atol=0)
                torch.testing.assert_close(r[ins], torch.full_like(r[ins], r[ins].mean().item()),
                                           rtol=1e-5, atol=0)


def test_rows_without_keys_are_zero_not_nan():
    B, H, N, D = 2, 2, 10, 8
    q, k, v = make_qkv(B, H, H, N, N, D)
    kpm = make_padding(B, N, left=4)                # left padding: early queries see nothing
    st_ = make_stats(B, N, N)
    out, res = reference_attention(q, k, v, key_padding_mask=kpm, stats=st_)
    assert torch.isfinite(out).all() and out[0, :, :4].abs().max() == 0
    assert (res["lse"][0, :, :4] == float("-inf")).all()
    assert (res["entropy"][0, :, :4] == 0).all() and (res["argmax"][0, :, :4] == -1).all()
    assert res["received"][0, :, :4].abs().max() == 0     # padding receives nothing
    assert_same(*naive_attention(q, k, v, key_padding_mask=kpm, stats=st_), out, res)


def test_received_counts_only_real_queries():
    B, H, N, D = 2, 2, 10, 8
    q, k, v = make_qkv(B, H, H, N, N, D)
    kpm = make_padding(B, N, left=0, right=3)       # prompt 1 right-padded: 3 padded queries
    _, res = reference_attention(q, k, v, key_padding_mask=kpm,
                                 stats=AttentionStatsRequest(received=True))
    real_rows = kpm.sum(-1).float()                 # each real query gives away mass 1
    torch.testing.assert_close(res["received"].sum(-1), real_rows[:, None].expand(B, H))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    B, H, N, D = 1, 4, 20, 16
    q, k, v = make_qkv(B, H, 2, N, N, D, dtype=dtype)
    st_ = make_stats(B, N, N)
    out, res = reference_attention(q, k, v, edit=make_edit(B, H, N), stats=st_)
    assert out.dtype == dtype and all(t.dtype in (torch.float32, torch.int64) for t in res.values())
    ref_out, ref_res = naive_attention(q.float(), k.float(), v.float(), edit=make_edit(B, H, N), stats=st_)
    assert_same(ref_out, ref_res, out, res, out_atol=2e-2)


def test_block_workers_agree():
    B, H, N, D = 1, 6, 50, 16
    q, k, v = make_qkv(B, H, 3, N, N, D)
    kw = dict(edit=make_edit(B, H, N), stats=make_stats(B, N, N), block_size=7)
    one = reference_attention(q, k, v, workers=1, **kw)
    three = reference_attention(q, k, v, workers=3, **kw)
    assert_same(*one, *three, atol=1e-6)


def test_stats_dict_has_exactly_the_requested_names():
    q, k, v = make_qkv(1, 2, 2, 5, 5, 8)
    _, res = reference_attention(q, k, v, stats=AttentionStatsRequest(argmax=True, received=True))
    assert set(res) == {"argmax", "received"}
    _, res = reference_attention(q, k, v, stats=AttentionStatsRequest())
    assert res == {}


def test_sdpa_fast_path_matches_naive():
    """No statistics, no score edits: the output comes from torch SDPA (with block masks)."""
    B, H, Hkv, N, D = 2, 4, 2, 21, 16
    q, k, v = make_qkv(B, H, Hkv, N, N, D)
    kpm = make_padding(B, N)
    for Nq, window, pad in itertools.product((1, 4, N), (None, 6), (False, True)):
        kw = dict(sliding_window=window, key_padding_mask=kpm if pad else None)
        expected, _ = naive_attention(q[:, :, -Nq:], k, v, **kw)
        got, res = reference_attention(q[:, :, -Nq:], k, v, **kw)
        assert res == {}
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_act_via_attention_edit_object():
    B, H, N, D = 1, 2, 9, 8
    q, k, v = make_qkv(B, H, H, N, N, D)
    edit = AttentionEdit((SinkCalibration(((0, 1),), (0,), beta=0.25),))
    le = edit.layer_edit(0, B, N, H)
    p0, p1 = _pattern(q, k, v), _pattern(q, k, v, edit=le)
    torch.testing.assert_close(p1[:, 0], p0[:, 0])
    s = p0[:, 1, 1:, 0]
    torch.testing.assert_close(p1[:, 1, 1:, 0], 0.25 * s)   # the sink keeps a quarter of its mass
    assert math.isclose(p1[:, 1, 0, 0].item(), 1.0)        # query 0 sees only the sink: unchanged
