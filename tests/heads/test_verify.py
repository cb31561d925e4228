"""The causal claims, on real SmolLM2 weights: intervening on a detector's top heads changes the
behaviour it claims far more (or, for streaming heads, less) than intervening on random heads."""

import pytest

from interp.errors import InvalidInput
from interp.heads import get_detector, verify
from interp.tasks.natural_text import natural_text
from interp.tasks.repeated_tokens import repeated_tokens

pytestmark = pytest.mark.slow


def effects(result):
    baseline = result["baseline"]
    sign = 1 if result["metric"] == "loss" else -1
    return result["top_k_effect"], [sign * (v - baseline) for v in result["random_k"]]


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_ablating_top_induction_heads_breaks_induction(smollm2, ablation):
    scores = get_detector("induction").scan(smollm2, params={"n_prompts": 3, "max_tokens": 80, "prompts": "repeated"})
    result = verify(smollm2, scores, k=5, ablation=ablation, n_random=3, n_prompts=3, max_tokens=80)
    top, random = effects(result)
    assert result["baseline"] < 4.0                 # the model does induct on the clean run
    assert top > 2.0                                # +2 nats on the second half
    assert top > 4 * max(random)
    assert result["ratio"] > 4 and result["claim_holds"]
    assert [tuple(h) for h in result["heads"]] == scores.top_heads(5)
    assert all(tuple(h) not in scores.top_heads(5) for draw in result["random_heads"] for h in draw)


def test_masking_the_sink_in_top_sink_heads_hurts_more_than_in_random_heads(smollm2):
    scores = get_detector("sink").scan(smollm2, params={"n_prompts": 2, "max_tokens": 128})
    result = verify(smollm2, scores, k=5, n_random=3, n_prompts=2, max_tokens=128)
    top, random = effects(result)
    assert top > 0.1
    assert top > 3 * max(random)
    assert result["intervention"].startswith("first-token key masked") and result["ablation"] is None


def test_restricting_streaming_heads_to_sinks_and_window_barely_matters(smollm2):
    scores = get_detector("streaming").scan(smollm2, params={"n_prompts": 1, "max_tokens": 384, "windows": (32,)})
    assert scores.info["streaming_fraction"]["32"] > 0.15           # tens of streaming heads
    result = verify(smollm2, scores, k=40, n_random=2, n_prompts=1, max_tokens=384)
    top, random = effects(result)
    assert result["claim"] == "top_k_hurts_less"
    assert abs(top) < 0.01                           # streaming heads lose nothing they used
    assert min(random) > 0.02                        # 40 random heads do use the far context
    assert result["ratio"] < 0.25 and result["claim_holds"]


def test_ablating_top_retrieval_heads_hurts_needle_recall_more(smollm2):
    scores = get_detector("retrieval").scan(
        smollm2, params={"context_lengths": (400,), "depths": (40.0,), "n_needles": 1, "max_new_tokens": 24})
    assert scores.info["n_answered"] == 1
    result = verify(smollm2, scores, k=5, ablation="zero", n_random=1, n_prompts=1)
    top, random = effects(result)
    assert result["metric"] == "recall" and result["baseline"] > 0.5
    assert top > 0.3
    assert top > max(random) + 0.2


def test_verify_rejects_bad_requests(smollm2):
    scores = get_detector("induction").scan(smollm2, params={"n_prompts": 1, "max_tokens": 32, "prompts": "repeated"})
    with pytest.raises(InvalidInput, match="k must be"):
        verify(smollm2, scores, k=0)
    with pytest.raises(InvalidInput, match="ablation"):
        verify(smollm2, scores, k=2, ablation="resample")
    from interp.scores import HeadScores

    alien = HeadScores("induction", scores.scores[:2], smollm2.model_id)
    with pytest.raises(InvalidInput, match="another model"):
        verify(smollm2, alien, k=2)
    unknown = HeadScores("made_up", scores.scores, smollm2.model_id)
    with pytest.raises(InvalidInput, match="no causal check"):
        verify(smollm2, unknown, k=2)
    with pytest.raises(InvalidInput, match="repeated-token prompts"):
        verify(smollm2, scores, k=2, prompts=natural_text(smollm2, 1, 32))
    retrieval = HeadScores("retrieval", scores.scores, smollm2.model_id)
    with pytest.raises(InvalidInput, match="needle tests"):
        verify(smollm2, retrieval, k=2, prompts=["not a needle test"])


def test_verify_on_given_prompts(smollm2):
    scores = get_detector("induction").scan(smollm2, params={"n_prompts": 1, "max_tokens": 48, "prompts": "repeated"})
    prompts = repeated_tokens(smollm2, 2, half=20, seed=11)
    result = verify(smollm2, scores, k=3, ablation="zero", n_random=1, prompts=prompts)
    assert result["n_prompts"] == 2 and result["top_k_effect"] > result["random_k_effect"]


@pytest.mark.parametrize("top, random, ratio, holds", [
    (2.0, 0.5, 4.0, True),      # top heads hurt 4x more
    (-0.4, -0.05, None, False),  # both helped: a positive "ratio" of 8 would be meaningless
    (0.3, -0.1, None, True),     # top heads hurt, random ones did not: no ratio, claim holds
    (0.2, 0.4, 0.5, False),
])
def test_ratio_and_verdict_do_not_read_two_improvements_as_an_effect(monkeypatch, top, random, ratio, holds):
    """Behaviour measured as a loss: baseline 1.0, top-k 1.0 + top, every random draw 1.0 + random."""
    import importlib

    import torch

    from interp.heads.verify import Behaviour

    verify_module = importlib.import_module("interp.heads.verify")  # the package exports verify()
    from interp.scores import HeadScores

    class FakeModel:
        n_layers, n_heads, name = 4, 3, "fake"

    scores = HeadScores("induction", torch.arange(12.0).reshape(4, 3), "fake@0")
    top_heads = scores.top_heads(2)

    def measure(heads):
        if not heads:
            return 1.0
        return 1.0 + (top if sorted(heads) == sorted(top_heads) else random)

    monkeypatch.setattr(verify_module, "behaviour_for", lambda *a, **k: Behaviour(
        "made-up loss", "loss", "top_k_hurts_more", measure, 1, "ablation of hook_z"))
    result = verify_module.verify(FakeModel(), scores, k=2, n_random=2)
    assert result["ratio"] == (None if ratio is None else pytest.approx(ratio))
    assert result["claim_holds"] is holds
