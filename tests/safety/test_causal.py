"""The causal claim, small enough for the test budget but able to fail: the head Ships ranks
first (zero ablation, one layer, 2 refused AdvBench prompts) lowers the refusal log-odds of
refused prompts from another source (HarmBench) more than random heads do, and leaves harmless
replies as they were. One registry scan serves the first two tests.

Real-scale numbers (all 336 heads, refusal rates, the compliance multiplier) are in
benchmarks/safety.py.
"""

from __future__ import annotations

import random

import pytest
import torch

from interp.heads.safety import head_ablation
from interp.refusal import first_token_refusal, greedy_generate
from interp.tasks.safety import safety_prompt_set

LAYER = 8     # the layer the quick look pointed at; every head of it is scored
METHOD = "zero"


@pytest.fixture(scope="module")
def registry_scores(qwen, refused):
    """The registry's detector on 2 refused training prompts, layer 8 (one scan for the tests
    below: `interp scan MODEL --detectors safety` path)."""
    from interp.heads import get_detector

    train = safety_prompt_set(qwen, refused[:2], "harmful")
    return get_detector("safety").scan(qwen, prompts=train,
                                       params={"layers": str(LAYER), "method": METHOD})


def test_top_ships_head_lowers_refusal_on_held_out_prompts_of_another_source(
        qwen, registry_scores, refused_harmbench, calibration):
    """Found on AdvBench prompts, checked on HarmBench ones the model refuses."""
    tokens = calibration.tokens
    held_out = safety_prompt_set(qwen, refused_harmbench[:4], "harmful")
    top = (LAYER, int(registry_scores.scores[LAYER].argmax()))

    base, greedy_refuses = first_token_refusal(qwen, held_out, tokens)
    assert greedy_refuses.all()

    def drop(heads):
        with head_ablation(qwen, heads, METHOD):
            return float((base - first_token_refusal(qwen, held_out, tokens)[0]).mean())

    rng = random.Random(0)
    others = [(x, h) for x in range(qwen.n_layers) for h in range(qwen.n_heads) if (x, h) != top]
    random_drops = [drop([head]) for head in rng.sample(others, 3)]
    top_drop = drop([top])
    assert top_drop > 0.1, (top, top_drop)
    assert top_drop > max(random_drops), (top, top_drop, random_drops)

    # harmless replies: the same greedy tokens with the head ablated
    harmless = calibration.harmless
    with head_ablation(qwen, [top], METHOD):
        ablated = greedy_generate(qwen, harmless, max_new_tokens=calibration.new_tokens)
    assert ablated.token_ids == calibration.harmless_replies.token_ids


def test_safety_detector_from_the_registry_and_its_generic_check(qwen, refused, calibration,
                                                                 registry_scores):
    """`interp scan MODEL --detectors safety --verify K` path: the registry's detector scores the
    heads, and `interp.heads.verify` measures refusal log-odds on held-out prompts with the top
    head vs random heads ablated, using the refusal tokens stored with the scan."""
    from interp.heads import verify
    from interp.heads.safety import refusal_tokens_of

    scores = registry_scores
    assert scores.detector == "safety" and scores.params["method"] == METHOD
    assert scores.params["rank_by"] == "ships" and torch.equal(scores.scores, scores.details["ships"])
    assert tuple(scores.scores.shape) == (qwen.n_layers, qwen.n_heads)
    assert scores.scores[LAYER].gt(0).all() and scores.scores[LAYER + 1].eq(0).all()
    assert scores.info["train_instructions"] == refused[:2]   # what a fallback check leaves out
    scores.info["refusal_tokens"] = calibration.tokens.to_json()   # as `interp safety` stores them
    stored = refusal_tokens_of(qwen, scores)       # the stored tokens, not freshly calibrated
    assert (stored.refusal, stored.compliance) == (calibration.tokens.refusal, calibration.tokens.compliance)

    result = verify(qwen, scores, k=1, n_random=2, prompts=refused[2:5])
    assert result["behaviour"] == "refusal of held-out harmful prompts" and result["n_prompts"] == 3
    assert result["heads"] == [[LAYER, int(scores.scores[LAYER].argmax())]]
    assert result["top_k_effect"] > 0.1 and result["top_k_effect"] > result["random_k_effect"], result


def test_safety_detector_default_prompts_are_refusals_and_its_check_is_held_out(qwen):
    """Without prompts the detector does what `interp safety` does on the project's own sets:
    calibrate refusal tokens on the model's replies, score on harmful prompts it refuses, keep a
    disjoint test split; `verify` then checks on that split with the stored tokens. Layer 8
    only, zero ablation: the issue's quick look found head 8.3 there."""
    from interp.heads import get_detector, verify
    from interp.refusal import RefusalTokens

    scores = get_detector("safety").scan(qwen, params={"n_prompts": 4, "layers": str(LAYER),
                                                        "method": METHOD})
    info = scores.info
    train, test = info["train_instructions"], info["test_instructions"]
    assert 2 <= len(train) <= 4 and len(test) == 8 and not set(train) & set(test)
    tokens = RefusalTokens.from_json(info["refusal_tokens"])
    _, greedy_refuses = first_token_refusal(qwen, safety_prompt_set(qwen, train, "harmful"), tokens)
    assert greedy_refuses.all()                       # trained on refusals only

    result = verify(qwen, scores, k=1, n_random=3)
    assert result["n_prompts"] == 8 and result["heads"] == [[LAYER, 3]]
    assert result["claim_holds"] and result["top_k_effect"] > 0.1, result


def test_the_check_of_a_scan_on_own_prompts_holds_out_its_training_prompts(qwen):
    """A scan on the caller's prompts stores no refusal tokens or test split: its check draws
    them with `select_refusing` (no training prompts) from the project's default sets, the
    scan's own training instructions left out."""
    import torch

    from interp.heads.safety import held_out_splits
    from interp.scores import HeadScores
    from interp.tasks.safety import default_instructions, split_instructions

    defaults = default_instructions("harmful")
    trained = defaults[:20]
    scores = HeadScores("safety", torch.zeros(qwen.n_layers, qwen.n_heads), qwen.model_id,
                        {"method": METHOD}, info={"train_instructions": trained})
    splits = held_out_splits(qwen, scores, n_test=4, calibration=2)
    assert splits.train is None and len(splits.harmful_test) == 4
    assert not set(splits.harmful_test) & set(trained)
    expected = split_instructions(defaults[20:], {"calibration": 2, "test": 4, "pool": 0}, seed=0)
    assert splits.harmful_test == expected["test"]
    assert "I" in [splits.tokens.strings[t] for t in splits.tokens.refusal]
