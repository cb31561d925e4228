"""The Triton kernels against the torch reference and the naive full-matrix definition, under
TRITON_INTERPRET=1 on CPU.

Shapes are small (the interpreter runs every program in numpy) but chosen to cross tile edges:
with 16 x 16 tiles, 37 keys leave a ragged last tile, and decoding rows sit inside a tile.
"""
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels import AttentionStatsRequest, LayerEdit, attention, naive_attention, reference_attention

from tests.kernels.kernel_cases import assert_same, make_edit, make_padding, make_qkv, make_stats, planted

pytestmark = [
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                       reason="needs a GPU or TRITON_INTERPRET=1"),
    # the interpreter evaluates masked-out lanes too (log2(0), inf * 0): harmless warnings
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"


def triton_attention(*args, **kwargs):
    from kernels.triton_attention import triton_attention as run
    return run(*args, **kwargs)


def to_dev(*xs):
    return [x.to(DEVICE) if torch.is_tensor(x) else x for x in xs]


def both(q, k, v, atol=1e-4, out_atol=None, naive=False, **kw):
    """Run Triton and the reference on the same inputs and compare everything; with `naive`,
    compare Triton with the full-matrix definition too."""
    expected = reference_attention(q, k, v, **kw)
    definition = naive_attention(q, k, v, **kw) if naive else None
    q, k, v = to_dev(q, k, v)
    kw = {n: (x.to(DEVICE) if torch.is_tensor(x) else x) for n, x in kw.items()}
    got = triton_attention(q, k, v, **kw)
    got = got[0].cpu(), {n: t.cpu() for n, t in got[1].items()}
    assert_same(*expected, *got, atol=atol, rtol=atol, out_atol=out_atol)
    if definition is not None:
        assert_same(*definition, *got, atol=atol, rtol=atol, out_atol=out_atol)


CASES = [
    # Nq, Nk, causal, window, pad, softcap, edits
    (37, 37, True, None, False, None, False),
    (37, 37, True, None, True, None, True),
    (37, 37, False, None, True, None, True),
    (37, 37, True, 9, True, None, True),       # sliding window, spans several key tiles
    (37, 37, False, 9, False, 3.0, True),
    (1, 37, True, None, True, None, True),     # decoding: one query against a cache
    (3, 37, True, 9, False, 3.0, True),
    (20, 37, True, None, False, None, True),   # chunked prefill against a longer cache
]


@pytest.mark.parametrize("Nq,Nk,causal,window,pad,softcap,edits", CASES)
def test_triton_matches_reference_and_naive(Nq, Nk, causal, window, pad, softcap, edits):
    B, H, Hkv, D = 2, 4, 2, 16
    q, k, v = make_qkv(B, H, Hkv, Nq, Nk, D, seed=Nq + Nk)
    both(q, k, v, naive=True, causal=causal, sliding_window=window, softcap=softcap,
         key_padding_mask=make_padding(B, Nk) if pad else None,
         edit=make_edit(B, H, Nk) if edits else None, stats=make_stats(B, Nq, Nk))


@pytest.mark.parametrize("Nq,window,pad,per_row", [(23, None, True, False), (23, 6, False, True),
                                                    (5, None, True, True)])
def test_triton_finds_sinks_in_the_call(Nq, window, pad, per_row):
    """ACT as its authors run it: the sinks of each head found from its own attention (a
    received-mass pass), then the calibrated pass; Triton equals the reference and naive."""
    B, H, Hkv, Nk, D = 2, 4, 2, 23, 16
    q, k, v = planted(B, H, Hkv, Nq, Nk, D, seed=Nq)
    beta = torch.tensor([[0.4, 1.0, 0.0, 0.7], [1.0, 0.25, 1.0, 1.0]]) if per_row \
        else torch.tensor([0.4, 1.0, 0.0, 0.7])
    stats = make_stats(B, Nq, Nk, lse=True, entropy=True, argmax=True, received=True, sinks=True)
    edit = LayerEdit(key_bias=torch.randn(B, H, Nk, generator=torch.Generator().manual_seed(1)),
                     head_scale=torch.tensor([1.0, 2.0, 0.5, 1.0]), act_beta=beta, act_tau=0.1)
    both(q, k, v, naive=True, sliding_window=window,
         key_padding_mask=make_padding(B, Nk) if pad else None, edit=edit, stats=stats)


@pytest.mark.parametrize("D", [64, 128, 256])
def test_head_dims(D):
    B, H, N = 1, 2, 20
    q, k, v = make_qkv(B, H, 1, N, N, D)
    both(q, k, v, scale=0.5 / D ** 0.5, edit=make_edit(B, H, N), stats=make_stats(B, N, N))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    B, H, N, D = 1, 4, 33, 32
    q, k, v = make_qkv(B, H, 2, N, N, D, dtype=dtype)
    # the reference computes in fp32 from the same rounded inputs; the kernel feeds P to the
    # PV product in the input dtype, as FlashAttention does
    both(q, k, v, atol=2e-3, out_atol=3e-2, key_padding_mask=make_padding(B, N),
         edit=make_edit(B, H, N), stats=make_stats(B, N, N))


@pytest.mark.parametrize("G", [1, 3, 8])
def test_gqa_ratios(G):
    B, Hkv, N, D = 1, 1 if G == 8 else 2, 18, 16
    q, k, v = make_qkv(B, Hkv * G, Hkv, N, N, D, seed=G)
    both(q, k, v, edit=make_edit(B, Hkv * G, N), stats=make_stats(B, N, N))


def test_tile_shapes_do_not_matter():
    B, H, N, D = 1, 2, 45, 16
    q, k, v = make_qkv(B, H, H, N, N, D)
    kw = dict(key_padding_mask=make_padding(B, N), edit=make_edit(B, H, N), stats=make_stats(B, N, N))
    a = triton_attention(q, k, v, block_m=16, block_n=16, **kw)
    b = triton_attention(q, k, v, block_m=32, block_n=16, **kw)
    assert_same(*a, *b, atol=1e-5)


def test_dispatch_forces_triton():
    q, k, v = make_qkv(1, 2, 2, 9, 9, 16)
    out, res = attention(q, k, v, backend="triton", stats=AttentionStatsRequest(lse=True))
    ref, ref_res = attention(q, k, v, backend="reference", stats=AttentionStatsRequest(lse=True))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res["lse"], ref_res["lse"], atol=1e-5, rtol=1e-5)


@settings(max_examples=8, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    Hkv=st.integers(1, 2), G=st.integers(1, 3), Nk=st.integers(1, 40), frac=st.floats(0, 1),
    causal=st.booleans(), window=st.one_of(st.none(), st.integers(1, 20)), pad=st.booleans(),
    bias=st.booleans(), act=st.booleans(), seed=st.integers(0, 99),
)
def test_triton_property(Hkv, G, Nk, frac, causal, window, pad, bias, act, seed):
    B, D, H = 2, 16, Hkv * G
    Nq = max(1, round(frac * Nk))
    q, k, v = make_qkv(B, H, Hkv, Nq, Nk, D, seed=seed)
    kpm = torch.rand(B, Nk, generator=torch.Generator().manual_seed(seed)) < 0.7 if pad else None
    both(q, k, v, causal=causal, sliding_window=window, key_padding_mask=kpm,
         edit=make_edit(B, H, Nk, bias=bias, act=act, seed=seed), stats=make_stats(B, Nq, Nk, seed=seed))
