"""The directional score beside Ships: the drop of the refusal log-odds when a head is ablated,
from the same batched scan, against a plain forward per head; `rank_by` chooses the ranking;
bad inputs fail before any model work."""

from __future__ import annotations

import pytest
import torch

from interp.errors import InvalidInput
from interp.heads.safety import detect, head_ablation
from interp.refusal import first_token_refusal
from interp.tasks.safety import safety_prompt_set

LAYER = 23    # the last layer: the scan reruns only it, which keeps the test cheap
METHOD = "zero"


@pytest.fixture(scope="module")
def scored(qwen, refused, calibration):
    train = safety_prompt_set(qwen, refused[:2], "harmful")
    scores = detect(qwen, train, METHOD, layers=[LAYER], tokens=calibration.tokens,
                    rank_by="refusal_logodds")
    return train, scores


def test_refusal_logodds_score_equals_a_plain_forward_per_head(qwen, calibration, scored):
    train, scores = scored
    drop, ships = scores.details["refusal_logodds"], scores.details["ships"]
    assert torch.equal(scores.scores, drop) and scores.params["rank_by"] == "refusal_logodds"
    assert drop[:LAYER].eq(0).all() and ships[:LAYER].eq(0).all()    # not scanned
    assert ships[LAYER].gt(0).all() and drop[LAYER].abs().max() > 0.05
    base, _ = first_token_refusal(qwen, train, calibration.tokens)
    best, worst = int(drop[LAYER].argmax()), int(drop[LAYER].argmin())
    for head in (best, worst):
        with head_ablation(qwen, [(LAYER, head)], METHOD):
            ablated, _ = first_token_refusal(qwen, train, calibration.tokens)
        assert float((base - ablated).mean()) == pytest.approx(float(drop[LAYER, head]), abs=0.02)
    # the ranking follows the chosen score; both tops are stored
    assert scores.top_heads(1) == [(LAYER, best)]
    top_by = scores.info["top_by"]
    assert set(top_by) == {"ships", "refusal_logodds"} and scores.info["rank_by"] == "refusal_logodds"
    assert (top_by["ships"][0]["layer"], top_by["ships"][0]["head"]) == (LAYER, int(ships[LAYER].argmax()))


def test_bad_rankings_fail_before_the_scan(qwen, calibration, scored, monkeypatch):
    import interp.heads.safety.pipeline as pipeline

    train, _ = scored
    monkeypatch.setattr(pipeline, "ships_scan", lambda *a, **k: pytest.fail("scan must not run"))
    with pytest.raises(InvalidInput, match="unknown rank_by"):
        detect(qwen, train, METHOD, layers=[LAYER], tokens=calibration.tokens, rank_by="kl")
    with pytest.raises(InvalidInput, match="needs refusal tokens"):
        detect(qwen, train, METHOD, layers=[LAYER], rank_by="refusal_logodds")
    with pytest.raises(InvalidInput, match="unknown rank_by"):
        pipeline.safety_analysis(qwen, rank_by="kl")
