"""Streamed attention statistics equal the same statistics computed from full patterns.

The full patterns come from TransformerLens's `hook_pattern` (the bridge's eager attention);
the streamed ones from the workbench's blocked attention, which never builds the N x N matrix.
"""

from __future__ import annotations

import pytest
import torch

from interp.attention_stats import masked_query_mean, stream_attention_stats
from interp.hooks import cache_activations
from interp.names import hook_name

PROMPTS = ["When Mary and John went to the store, John gave a drink to",
           "The quick brown fox jumps over the lazy dog. The quick brown fox"]
LAYERS = [0, 7, 18, 29]


@pytest.fixture(scope="module")
def patterns(smollm2):
    """{layer: [b, H, q, k]} full patterns, padded batch."""
    cache = cache_activations(smollm2, PROMPTS, [hook_name("pattern", L) for L in LAYERS])
    return {L: cache[hook_name("pattern", L)] for L in LAYERS}


def _stream(model, request, reduce):
    out = stream_attention_stats(model, PROMPTS, request, reduce, batch_size=2, layers=LAYERS)
    return dict(zip(LAYERS, out))


def test_entropy_argmax_and_first_key_mass(smollm2, patterns):
    from kernels import AttentionStatsRequest

    batch = smollm2.tokenize(PROMPTS)
    first = torch.zeros_like(batch.mask)
    first[:, 0] = True
    streamed = _stream(
        smollm2, AttentionStatsRequest(entropy=True, argmax=True, key_mask=first),
        lambda layer, s, b: torch.stack([s["entropy"], s["argmax"].float(), s["key_mass"]], -1),
    )
    mask = batch.mask
    for layer, pattern in patterns.items():
        got = streamed[layer]  # [b, H, q, 3]
        entropy = -(pattern * pattern.clamp_min(1e-30).log()).sum(-1)
        rows = mask[:, None, :].expand_as(entropy)
        assert torch.allclose(got[..., 0][rows], entropy[rows], atol=1e-4)
        assert torch.allclose(got[..., 2][rows], pattern[..., 0][rows], atol=1e-5)
        # argmax: equal, or a tie within float noise
        top = pattern.gather(-1, got[..., 1].long().unsqueeze(-1)).squeeze(-1)
        assert torch.allclose(top[rows], pattern.max(-1).values[rows], atol=1e-5)


def test_received_mass_and_gathered_probabilities(smollm2, patterns):
    from kernels import AttentionStatsRequest

    batch = smollm2.tokenize(PROMPTS)
    n = batch.seq_len
    previous = (torch.arange(n) - 1).expand(batch.batch_size, n).unsqueeze(-1)  # key i-1
    streamed = _stream(
        smollm2, AttentionStatsRequest(received=True, gather_keys=previous),
        lambda layer, s, b: torch.cat([s["received"], s["gathered"][..., 0]], -1),
    )
    mask = batch.mask
    for layer, pattern in patterns.items():
        got = streamed[layer]
        real_rows = pattern * mask[:, None, :, None]
        received = real_rows.sum(-2)  # mass each key gets from real queries
        assert torch.allclose(got[..., :n] * mask[:, None], received * mask[:, None], atol=1e-4)
        prev = torch.diagonal(pattern, offset=-1, dim1=-2, dim2=-1)  # [b, H, n-1] p(i, i-1)
        rows = mask[:, None, 1:].expand_as(prev)
        assert torch.allclose(got[..., n + 1:][rows], prev[rows], atol=1e-5)


def test_masked_query_mean_ignores_padding(smollm2):
    batch = smollm2.tokenize(PROMPTS)
    values = torch.arange(batch.seq_len, dtype=torch.float32).expand(2, 3, -1).clone()
    values[~batch.mask[:, None, :].expand_as(values)] = 1e6
    mean = masked_query_mean(values, batch)
    for row, n in enumerate(batch.lengths.tolist()):
        assert torch.allclose(mean[row], torch.full((3,), (n - 1) / 2))
