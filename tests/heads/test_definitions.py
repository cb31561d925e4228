"""The detectors' definitions on small hand-made inputs (no model): detection patterns equal
TransformerLens's, window keys, alpha, ROUGE-1 recall."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformer_lens.head_detector import (get_duplicate_token_head_detection_pattern,
                                            get_induction_head_detection_pattern,
                                            get_previous_token_head_detection_pattern)

from interp.heads.induction import detection_keys, gather_request, mul_scores
from interp.heads.sink import key_alpha
from interp.heads.streaming import streaming_mass, window_keys
from interp.tasks.needle import rouge1_recall
from interp.tokens import TokenBatch

TL_PATTERNS = {
    "previous_token": get_previous_token_head_detection_pattern,
    "duplicate_token": get_duplicate_token_head_detection_pattern,
    "induction": get_induction_head_detection_pattern,
}


def dense(keys: list[list[int]], n: int) -> torch.Tensor:
    out = torch.zeros(n, n)
    for i, row in enumerate(keys):
        out[i, row] = 1
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=2, max_size=24))
def test_detection_keys_equal_transformer_lens_patterns(tokens):
    ids = torch.tensor([tokens])
    for kind, pattern in TL_PATTERNS.items():
        assert torch.equal(dense(detection_keys(tokens, kind), len(tokens)), pattern(ids)), kind


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=3, max_size=16), st.booleans(), st.booleans(),
       st.sampled_from(sorted(TL_PATTERNS)))
def test_gathered_mul_score_equals_the_dense_formula(tokens, exclude_bos, exclude_current, kind):
    """sum(A' * D) / sum(A') from gathered entries == the same on the full pattern."""
    n = len(tokens)
    generator = torch.Generator().manual_seed(n)
    scores = torch.randn(1, 2, n, n, generator=generator).masked_fill(
        ~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    pattern = scores.softmax(-1)                                             # [1, H, n, n]
    batch = TokenBatch.from_lists([tokens])
    keys = gather_request(batch, kind, exclude_bos, exclude_current)
    gathered = torch.where(keys[:, None] >= 0, pattern.gather(-1, keys.clamp_min(0)[:, None].expand(-1, 2, -1, -1)), 0.0)
    row_mass = pattern[..., 1:].sum(-1) if exclude_bos else None
    ours = mul_scores(gathered, batch, row_mass)[0]
    masked = pattern[0].clone()
    if exclude_bos:
        masked[:, :, 0] = 0
    if exclude_current:
        masked[:, range(n), range(n)] = 0
    detection = TL_PATTERNS[kind](torch.tensor([tokens]))
    expected = (masked * detection).sum((-1, -2)) / masked.sum((-1, -2))
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-5)


def test_window_keys_cover_sinks_and_recent_keys_once():
    keys = window_keys(length=20, n_positions=24, sink_tokens=2, window=4)
    for i in range(20):
        expected = set(range(min(2, i + 1))) | set(range(max(2, i - 3), i + 1))
        row = [k for k in keys[i].tolist() if k >= 0]
        assert sorted(row) == sorted(expected) and len(row) == len(set(row))
    assert (keys[20:] == -1).all()


def test_streaming_mass_averages_only_deep_queries():
    gathered = torch.zeros(1, 1, 10, 5)
    gathered[0, 0, :, 0] = torch.arange(10) / 10          # sink mass = i / 10
    batch = TokenBatch.from_lists([list(range(8))])       # 8 real tokens, 2 pads
    mass = streaming_mass(gathered, batch, sink_tokens=1, windows=(4,))
    # queries 5, 6, 7 are at least sinks + window deep and real
    assert torch.allclose(mass, torch.tensor([[[0.6]]]))


def test_key_alpha_is_the_mean_over_later_queries():
    n = 6
    pattern = torch.rand(1, 1, n, n).tril()
    pattern = pattern / pattern.sum(-1, keepdim=True)
    batch = TokenBatch.from_lists([list(range(n))])
    alpha = key_alpha(pattern.sum(2), batch)
    expected = torch.stack([pattern[0, 0, k:, k].mean() for k in range(n)])
    torch.testing.assert_close(alpha[0, 0], expected)


def test_rouge1_recall():
    assert rouge1_recall("Captain Biscuit", "He named it captain biscuit.") == 1.0
    assert rouge1_recall("a red stone and a tree", "a red hat") == 2 / 6   # 'a' twice in the reference
    assert rouge1_recall("violet river forty two", "violet river") == 0.5
    assert rouge1_recall("violet river", "") == 0.0
