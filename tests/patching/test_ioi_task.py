"""The IOI prompt generator: reproducible, single-token words, aligned clean/corrupted pairs,
positions that point at the right tokens — and SmolLM2 really does the task."""

from __future__ import annotations

import pytest
import torch

from interp.errors import InvalidInput
from interp.tasks.ioi import NAMES, TEMPLATES, ioi_prompts, vocabulary


def test_same_seed_same_prompts_other_seed_other_prompts(smollm2):
    a, b = ioi_prompts(smollm2, n=12, seed=3), ioi_prompts(smollm2, n=12, seed=3)
    c = ioi_prompts(smollm2, n=12, seed=4)
    assert a.hash == b.hash and a.texts == b.texts
    assert a.hash != c.hash


def test_words_are_single_tokens_and_filtered_per_model(smollm2):
    vocab = vocabulary(smollm2)
    assert 20 <= len(vocab.names) <= len(NAMES)
    for word in vocab.names[:20] + vocab.places[:5] + vocab.objects[:5]:
        assert len(smollm2.tokenizer(" " + word, add_special_tokens=False).input_ids) == 1


def test_pairs_align_and_positions_point_at_the_names(smollm2):
    prompts = ioi_prompts(smollm2, n=20, seed=1)
    assert torch.equal(prompts.tokens.lengths, prompts.corrupted.lengths)
    orders = [m["order"] for m in prompts.metadata]
    assert set(orders) == {"ABBA", "BABA"}
    for i, meta in enumerate(prompts.metadata):
        ids = prompts.tokens.input_ids[i]
        pos = meta["positions"]
        assert ids[pos["IO"]] == prompts.answers[i]
        assert ids[pos["S1"]] == prompts.wrong_answers[i] == ids[pos["S2"]]
        assert pos["end"] == int(prompts.tokens.lengths[i]) - 1
        assert (pos["IO"] < pos["S1"]) == (meta["order"] == "ABBA")
        # ABC: neither IO nor S appears in the corrupted prompt; three distinct fresh names.
        corrupted = prompts.corrupted.input_ids[i, : prompts.corrupted.lengths[i]]
        assert prompts.answers[i] not in corrupted and prompts.wrong_answers[i] not in corrupted
        assert len(set(meta["corrupted_names"])) == 3
        # Only the name slots differ between the pair.
        differ = (prompts.tokens.input_ids[i] != prompts.corrupted.input_ids[i]).nonzero().flatten().tolist()
        assert set(differ) == {pos["IO"], pos["S1"], pos["S2"]}


def test_s2_corruption_changes_only_the_repeated_name(smollm2):
    prompts = ioi_prompts(smollm2, n=6, seed=2, corruption="s2")
    for i, meta in enumerate(prompts.metadata):
        differ = (prompts.tokens.input_ids[i] != prompts.corrupted.input_ids[i]).nonzero().flatten().tolist()
        assert differ == [meta["positions"]["S2"]]


def test_bad_arguments_are_clear(smollm2):
    with pytest.raises(InvalidInput, match="corruption"):
        ioi_prompts(smollm2, n=2, corruption="xyz")
    with pytest.raises(InvalidInput, match="orders"):
        ioi_prompts(smollm2, n=2, orders=("ABAB",))
    with pytest.raises(InvalidInput, match="slots"):
        ioi_prompts(smollm2, n=2, templates=("Then{A} gave it to",))


def test_smollm2_does_ioi(smollm2):
    """Clean logit difference IO - S is large and right on nearly every prompt; the ABC
    corruption removes it."""
    from interp.patching.activation import final_logits_and_cache

    prompts = ioi_prompts(smollm2, n=16, seed=11)
    rows = torch.arange(len(prompts))
    clean, _ = final_logits_and_cache(smollm2, prompts.tokens, [])
    corrupted, _ = final_logits_and_cache(smollm2, prompts.corrupted, [])
    clean_diff = clean[rows, prompts.answers] - clean[rows, prompts.wrong_answers]
    corrupted_diff = corrupted[rows, prompts.answers] - corrupted[rows, prompts.wrong_answers]
    assert clean_diff.mean() > 2.0
    assert (clean_diff > 0).float().mean() >= 0.9
    assert abs(float(corrupted_diff.mean())) < 1.0
    assert len(TEMPLATES) >= 10
