"""Head codes (O'Neill & Bui) on SmolLM2 IOI rank the path-patching circuit's heads above chance.

Reference: the recorded path-patching circuit of SmolLM2 (benchmarks/results/ioi_circuit.json,
Wang et al.'s receivers, 15 of 270 heads). Prompts here (seed 123) are disjoint from those the
head-code settings were chosen on (seed 0).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from circuits.sae.discover import rank_against, sae_heads
from circuits.sae.head_codes import head_codes, ioi_negatives, task_examples
from interp.errors import InvalidInput
from interp.tasks.ioi import ioi_prompts

pytestmark = pytest.mark.slow
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "ioi_circuit.json"


def path_patching_heads():
    runs = json.loads(RESULTS.read_text())["runs"]
    run = next(r for r in runs if r["row"]["model"] == "smollm2-135m" and r["row"]["receivers"] == "paper")
    return sorted((h["layer"], h["head"]) for h in run["circuit"]["heads"])


@pytest.fixture(scope="module")
def examples(smollm2):
    prompts = ioi_prompts(smollm2, n=40, seed=123)
    return task_examples(smollm2, prompts, ioi_negatives(smollm2, prompts, "s1", seed=123))


def test_negatives_change_one_name_and_take_the_answer_away(smollm2, examples):
    prompts = ioi_prompts(smollm2, n=4, seed=123)
    negatives = ioi_negatives(smollm2, prompts, "s1", seed=123)
    differs = prompts.tokens.input_ids != negatives.input_ids
    assert differs.sum(1).tolist() == [1, 1, 1, 1]
    assert [int(row.nonzero()) for row in differs] == [m["positions"]["S1"] for m in prompts.metadata]
    info = examples.info
    assert info["positive_logit_diff"] > info["negative_logit_diff"] + 1.0


def test_head_codes_rank_the_path_patching_circuit_above_chance(examples):
    reference = path_patching_heads()
    result = head_codes(examples, n_sae_examples=20, seed=0)
    node = rank_against(result.node, reference)
    assert node["roc_auc"] > 0.7
    assert node["average_precision"] > 3 * node["chance_average_precision"]
    edge = rank_against(result.edge_heads, reference)
    assert edge["roc_auc"] > 0.65


def test_too_few_examples_is_refused(smollm2, examples):
    with pytest.raises(InvalidInput, match="n_sae_examples"):
        head_codes(examples, n_sae_examples=0)
    with pytest.raises(InvalidInput, match="unknown task|only 'ioi'"):
        sae_heads(smollm2, "no-such-task")
    with pytest.raises(InvalidInput, match="negatives"):
        ioi_negatives(smollm2, ioi_prompts(smollm2, n=2), "xyz")


def test_sae_heads_json(smollm2):
    out = sae_heads(smollm2, "ioi", n_prompts=12, n_sae_examples=8, n_eval=8, steps=50,
                    reference=path_patching_heads(), seed=5)
    assert out["method"] == "sae-heads" and out["task"] == "ioi"
    assert len(out["head_scores"]) == smollm2.n_total_heads
    assert {"roc_auc", "average_precision", "faithfulness_curve", "cpr", "cmd", "random_cmd",
            "n_discover", "n_eval", "seconds"} <= set(out)
    assert out["faithfulness_curve"][-1]["faithfulness"] == pytest.approx(1.0, abs=1e-3)
    json.dumps(out)
    assert torch.tensor([h["score"] for h in out["heads"]]).min() >= \
        max(h["score"] for h in out["head_scores"] if (h["layer"], h["head"]) not in
            {(c["layer"], c["head"]) for c in out["heads"]})


def test_sae_heads_on_greater_than_uses_its_corruption_and_a_disjoint_evaluation(smollm2):
    """Any task of circuits.tasks: positives are the clean prompts the model gets right, the
    negatives their corrupted ("01") counterparts; evaluation prompts come from the task's
    disjoint split, and the curve reaches the model at 100% of heads."""
    from circuits.discover import check_method

    out = sae_heads(smollm2, check_method("sae-heads", "greater-than"), n_prompts=8,
                    n_sae_examples=8, n_eval=6, steps=50, seed=2)
    assert out["task"] == "greater-than" and out["params"]["negatives"] == "corrupted"
    assert out["n_discover"] == 2 * out["params"]["n_positive"] and out["n_eval"] == 6
    assert "roc_auc" not in out  # the path-patching reference is IOI's
    assert out["faithfulness_curve"][-1]["faithfulness"] == pytest.approx(1.0, abs=1e-3)
    assert out["faithfulness_curve"][0]["faithfulness"] < 0.5  # one head of 270 is not the model
