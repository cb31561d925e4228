"""Input builders and comparison helpers shared by the kernels tests."""
from __future__ import annotations

import torch

from kernels import AttentionStatsRequest, LayerEdit

ALL_STATS = dict(lse=True, entropy=True, argmax=True, received=True)


def make_qkv(B, H, Hkv, Nq, Nk, D, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Nq, D, generator=g).to(dtype)
    k = torch.randn(B, Hkv, Nk, D, generator=g).to(dtype)
    v = torch.randn(B, Hkv, Nk, D, generator=g).to(dtype)
    return q, k, v


def planted(B, H, Hkv, Nq, Nk, D, seed=0):
    """q, k, v with sinks: keys 0, 4 and 9 lie along a direction every query leans towards."""
    q, k, v = make_qkv(B, H, Hkv, Nq, Nk, D, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    direction = torch.randn(D, generator=g)
    direction /= direction.norm()
    q += 3.0 * direction
    for pos, size in ((0, 3.0), (4, 2.5), (9, 2.0)):
        if pos < Nk:
            k[:, :, pos] += size * direction
    return q, k, v


def make_padding(B, Nk, left: int = 3, right: int = 2):
    """[B, Nk] bool: prompt 0 left-padded, prompt 1 right-padded, the rest unpadded."""
    kpm = torch.ones(B, Nk, dtype=torch.bool)
    kpm[0, :left] = False
    if B > 1:
        kpm[1, Nk - right:] = False
    return kpm


def make_edit(B, H, Nk, *, bias=True, act=True, head_scale=True, seed=0) -> LayerEdit:
    g = torch.Generator().manual_seed(seed)
    betas = torch.tensor([0.3, 1.0, 0.0, 0.7] * H)[:H]
    return LayerEdit(
        key_bias=torch.randn(B, H, Nk, generator=g) if bias else None,
        head_scale=torch.tensor([1.0, 0.0, 2.0, 0.5] * H)[:H] if head_scale else None,
        sink_mask=(torch.arange(Nk)[None].expand(B, Nk) % 7 == 0).clone() if act else None,
        act_beta=betas if act else None,
    )


def make_stats(B, Nq, Nk, T=3, seed=0, **flags) -> AttentionStatsRequest:
    g = torch.Generator().manual_seed(seed)
    flags = flags or ALL_STATS
    return AttentionStatsRequest(
        **flags,
        key_mask=torch.rand(B, Nk, generator=g) < 0.3,
        gather_keys=torch.randint(-1, Nk, (B, Nq, T), generator=g),
    )


def assert_same(out_a, stats_a, out_b, stats_b, atol=1e-4, rtol=1e-4, out_atol=None):
    """Outputs and every statistic agree (argmax exactly)."""
    torch.testing.assert_close(out_a.float(), out_b.float(), atol=out_atol or atol, rtol=rtol)
    assert set(stats_a) == set(stats_b)
    for name in stats_a:
        a, b = stats_a[name], stats_b[name]
        assert a.shape == b.shape, name
        if name == "argmax":
            # fp32 vs fp64 may order near-ties differently: allow a rare flip, not a pattern
            differ = (a.long() != b.long()).float().mean().item()
            assert differ <= 0.005, f"argmax differs in {differ:.1%} of rows"
        else:
            torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=rtol, msg=name)
