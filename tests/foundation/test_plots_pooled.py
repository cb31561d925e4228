"""Long attention patterns are pooled on the server: block maxima (a one-position sink stays as
bright as it is), at most MAX_PATTERN_CELLS per side, built in well under a second."""

from __future__ import annotations

import math
import time

import torch

from interp.plots import MAX_PATTERN_CELLS, attention_pattern_figure, pool_pattern


def causal_pattern(n: int, seed: int = 0) -> torch.Tensor:
    scores = torch.randn(n, n, generator=torch.Generator().manual_seed(seed))
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    pattern = scores.softmax(-1)
    pattern[:, 0] += 1.0  # a strong first-token sink
    return pattern / pattern.sum(-1, keepdim=True)


def test_pooling_takes_block_maxima():
    n = 1000
    pattern = causal_pattern(n)
    pooled, block = pool_pattern(pattern, 256)
    assert block == math.ceil(n / 256) and pooled.shape == (math.ceil(n / block),) * 2
    for i, j in [(0, 0), (10, 3), (249, 0), (249, 249), (100, 50)]:  # against a plain loop
        reference = pattern[i * block:(i + 1) * block, j * block:(j + 1) * block].max()
        assert torch.isclose(pooled[i, j], reference)
    assert torch.isnan(pooled[0, 1]) and torch.isnan(pooled[10, 200])  # wholly above the diagonal
    assert pooled[:, 0].min() > 0.4  # the sink column keeps its brightness
    small, one = pool_pattern(pattern[:100, :100], 256)
    assert one == 1 and torch.equal(small, pattern[:100, :100])


def test_a_long_pattern_figure_is_small_and_fast():
    n = 1500
    pattern = causal_pattern(n)
    tokens = [f"t{i}" for i in range(n)]
    start = time.perf_counter()
    figure = attention_pattern_figure(tokens, pattern, [0], "L0.H0")
    payload = figure.to_json()
    took = time.perf_counter() - start
    z = figure.data[0].z
    assert len(z) <= MAX_PATTERN_CELLS and len(z[0]) <= MAX_PATTERN_CELLS
    assert "pooled" in figure.layout.title.text and "▼" in "".join(figure.layout.xaxis.ticktext)
    assert took < 2.0 and len(payload) < 3_000_000, (took, len(payload))
