"""Sparse feature circuits on SmolLM2 IOI with two small residual SAEs: the node effects are an
exact decomposition of attribution patching, the evaluation is anchored (f(model) = 1,
f(empty) = the corrupted run), and attribution agrees with exact patching on strong nodes."""

from __future__ import annotations

import json

import pytest
import torch

from circuits.sae.feature_circuits import (
    ERROR, _chunks, _gradients_at, _kept_masks, attach, circuit_metric, discover_feature_circuit,
    node_effects, ranked_nodes, split,
)
from circuits.sae.discover import sae_features
from circuits.sae.points import run_model
from interp.tasks.ioi import ioi_prompts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(smollm2, resid_saes):
    prompts = ioi_prompts(smollm2, n=6, seed=7)
    sites = attach(smollm2, resid_saes)
    return prompts, sites, _chunks(smollm2, prompts, sites, batch_size=8)


def _mean_logit_diff(model, prompts, tokens):
    logits = run_model(model, tokens.input_ids)
    rows = torch.arange(len(prompts))
    final = logits[rows, tokens.final_positions]
    return float((final[rows, prompts.answers] - final[rows, prompts.wrong_answers]).mean())


def test_sae_split_is_exact(setup):
    _, sites, chunks = setup
    for site in sites:
        v = chunks[0].v_clean[site.label]
        f, err = split(site, v)
        assert torch.allclose(site.sae.decode(f) + err, v, atol=1e-4)
        assert (f[:, 0] == 0).all()  # the first position is all error


def test_node_effects_decompose_attribution_patching(smollm2, setup):
    """Features + error at a point sum to grad . (v_corrupted - v_clean): nothing is lost."""
    prompts, sites, chunks = setup
    effects = node_effects(smollm2, chunks, sites, method="atp")
    grads = _gradients_at(smollm2, chunks[0], sites)
    mask = chunks[0].mask[:, :, None]
    for site in sites:
        delta = chunks[0].v_corr[site.label] - chunks[0].v_clean[site.label]
        whole = float((grads[site.label] * delta * mask).sum()) / len(prompts)
        assert float(effects[site.label].sum()) == pytest.approx(whole, rel=1e-3, abs=1e-3)


def test_circuit_evaluation_is_anchored(smollm2, setup):
    prompts, sites, chunks = setup
    clean = _mean_logit_diff(smollm2, prompts, prompts.tokens)
    corrupted = _mean_logit_diff(smollm2, prompts, prompts.corrupted)
    assert circuit_metric(smollm2, chunks, sites, None) == pytest.approx(clean, abs=1e-3)
    everything = [(i, f) for i, s in enumerate(sites) for f in [*range(s.sae.d_sae), ERROR]]
    assert circuit_metric(smollm2, chunks, sites, _kept_masks(sites, everything)) == pytest.approx(clean, abs=1e-2)
    assert circuit_metric(smollm2, chunks, sites, _kept_masks(sites, [])) == pytest.approx(corrupted, abs=1e-2)


def test_attribution_agrees_with_exact_patching_on_strong_nodes(smollm2, setup):
    """Patching the strongest nodes alone (everything else clean) moves m the way AtP says."""
    _, sites, chunks = setup
    effects = node_effects(smollm2, chunks, sites, method="ig", steps=4)
    clean = circuit_metric(smollm2, chunks, sites, None)
    everything = {(i, f) for i, s in enumerate(sites) for f in [*range(s.sae.d_sae), ERROR]}
    estimated, exact = [], []
    for index, feature, effect in ranked_nodes(sites, effects)[:4]:
        kept = _kept_masks(sites, sorted(everything - {(index, feature)}))
        exact.append(circuit_metric(smollm2, chunks, sites, kept) - clean)
        estimated.append(effect)
    estimated, exact = torch.tensor(estimated), torch.tensor(exact)
    assert (estimated.sign() == exact.sign()).float().mean() >= 0.75
    assert torch.corrcoef(torch.stack([estimated, exact]))[0, 1] > 0.8


def test_discovery_end_to_end(smollm2, resid_saes):
    discover, evaluate = ioi_prompts(smollm2, n=4, seed=1), ioi_prompts(smollm2, n=4, seed=1001)
    found = discover_feature_circuit(smollm2, discover, evaluate, resid_saes, method="atp",
                                     nodes_per_point=3, k_percents=(1, 100), n_random=1)
    labels = {n["id"].split("/")[0] for n in found.nodes}
    assert labels == {"blocks.12.hook_resid_pre", "blocks.20.hook_resid_pre"}
    between = [e for e in found.edges if e["dst"] != "logits"]
    assert len(between) == 9  # 3 upstream x 3 downstream nodes
    assert all(e["src"].startswith("blocks.12") and e["dst"].startswith("blocks.20") for e in between)
    curve = found.evaluation["faithfulness_curve"]
    assert curve[-1]["faithfulness"] == pytest.approx(1.0, abs=1e-2)
    assert found.head_scores.shape == (smollm2.n_layers, smollm2.n_heads)
    assert found.head_scores.abs().sum() > 0
    assert found.info["n_discover"] == 4 and found.info["n_eval"] == 4


def test_sae_features_json(smollm2, resid_saes):
    from tests.sae.test_head_codes import path_patching_heads

    out = sae_features(smollm2, resid_saes, "ioi", n_prompts=3, n_eval=3, method="atp",
                       nodes_per_point=2, k_percents=(1, 100), n_random=1, context_windows=4,
                       reference=path_patching_heads())
    assert out["method"] == "sae-features" and len(out["head_scores"]) == smollm2.n_total_heads
    assert {"roc_auc", "average_precision", "faithfulness_curve", "cpr", "cmd", "random_cmd",
            "n_discover", "n_eval", "seconds"} <= set(out)
    features = [n for n in out["nodes"] if n["kind"] == "sae_feature"]
    assert features and all("contexts" in n and "density" in n for n in features)
    json.dumps(out)
