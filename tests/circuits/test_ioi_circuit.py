"""IOI circuit discovery and evaluation on SmolLM2's real weights (and GPT-2 when available)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from circuits.circuit import Circuit, CircuitHead
from circuits.evaluate import (
    ablated_metric,
    completeness,
    faithfulness,
    minimality,
    random_baseline,
    template_means,
)
from circuits.head_evidence import attention_to_positions, copying_scores, direct_logit_attribution
from circuits.ioi import DiscoveryConfig, discover_ioi_circuit, trim_heads
from interp.errors import InvalidInput
from interp.names import hook_name
from interp.tasks.ioi import ioi_prompts


@pytest.fixture(scope="module")
def eval_prompts(smollm2):
    return ioi_prompts(smollm2, n=10, seed=2024)


@pytest.fixture(scope="module")
def means(smollm2, eval_prompts):
    return template_means(smollm2, eval_prompts)


@pytest.fixture(scope="module")
def discovered(smollm2):
    config = DiscoveryConfig(n_prompts=10, screen_k=10, evaluate=False, edges=False)
    return discover_ioi_circuit(smollm2, config)


def test_ablation_extremes(smollm2, eval_prompts, means):
    """Keeping every head reproduces the clean logit difference exactly; ablating every head
    at its ABC template mean leaves about the corrupted one."""
    from interp.patching.activation import final_logits_and_cache

    everything = {(l, h): None for l in range(smollm2.n_layers) for h in range(smollm2.n_heads)}
    kept, nothing = ablated_metric(smollm2, eval_prompts, [everything, {}], means).tolist()
    # (one batched forward: each row is a (head set, prompt) pair)
    logits, _ = final_logits_and_cache(smollm2, eval_prompts.tokens, [])
    rows = torch.arange(len(eval_prompts))
    clean = float((logits[rows, eval_prompts.answers] - logits[rows, eval_prompts.wrong_answers]).mean())
    assert kept == pytest.approx(clean, abs=1e-3)
    assert nothing < 0.3 * clean


def test_discovered_circuit_beats_random_circuits(smollm2, discovered, eval_prompts, means):
    circuit, stages = discovered
    assert 0 < len(circuit) <= smollm2.n_total_heads // 10
    roles = circuit.by_role()
    assert roles.get("name_mover"), circuit.summary()
    assert "logits" in stages and stages["logits"].method == "path"
    faithful = faithfulness(smollm2, eval_prompts, circuit, means)
    baseline = random_baseline(smollm2, eval_prompts, len(circuit), n=5, seed=1, means=means,
                               f_model=faithful["F_model"])
    # Far above every random circuit of the same size (those sit around or below zero).
    assert faithful["faithfulness"] > 0.25, circuit.summary()
    assert faithful["faithfulness"] > max(baseline["values"]) + 0.15, baseline
    assert faithful["faithfulness"] > baseline["mean"] + 3 * baseline["std"], baseline
    # Without per-receiver edges only the name movers' edges to the logits are recorded.
    assert {e.receiver for e in circuit.edges} == {None}
    assert {e.sender for e in circuit.edges} == set(roles["name_mover"]) | set(roles.get("negative_name_mover", []))


def test_a_tight_budget_keeps_a_working_subcircuit(smollm2, discovered, eval_prompts, means):
    """Over budget, the faithfulness trim keeps a subset of what the levels found whose logit
    difference on fresh prompts is closer to the model's than the cut by path-patching effect
    (which drops the small-effect lower levels a chain needs)."""
    circuit, _ = discovered
    prompts = ioi_prompts(smollm2, n=10, seed=0, corruption="abc")  # the discovery's prompts
    gap = {}
    for trim in ("faithfulness", "effect"):
        kept = trim_heads(smollm2, prompts, circuit.heads, budget=4, trim=trim)
        assert len(kept) == 4 and {(c.layer, c.head) for c in kept} <= circuit.head_set
        trimmed = Circuit(model=circuit.model, task="ioi", heads=kept,
                          n_heads_total=circuit.n_heads_total, model_id=circuit.model_id)
        gap[trim] = abs(1 - faithfulness(smollm2, eval_prompts, trimmed, means)["faithfulness"])
    assert gap["faithfulness"] < gap["effect"], gap
    with pytest.raises(InvalidInput, match="trim"):
        discover_ioi_circuit(smollm2, DiscoveryConfig(trim="largest"))


def test_name_movers_look_like_name_movers(smollm2, discovered):
    """The paper's signature of name movers: from END they attend to the indirect object more
    than to the subject, and they write the IO name (positive direct logit attribution);
    negative name movers write against it."""
    circuit, _ = discovered
    prompts = ioi_prompts(smollm2, n=6, seed=77)
    attention = attention_to_positions(smollm2, prompts)
    dla = direct_logit_attribution(smollm2, prompts)
    movers = circuit.by_role()["name_mover"]
    to_io = sum(float(attention["end->IO"][l, h]) for l, h in movers) / len(movers)
    to_s = sum(float(attention["end->S1"][l, h]) for l, h in movers) / len(movers)
    assert to_io > to_s
    assert sum(float(dla[l, h]) for l, h in movers) > 0.5
    for layer, head in circuit.by_role().get("negative_name_mover", []):
        assert dla[layer, head] < 0
    # Their OV circuits copy names (Wang et al.'s copying score) more than heads at large.
    names = [" " + n for n in ("Mary", "John", "Anna", "David", "Sarah", "Peter", "Laura", "Tom")]
    others = [(l, h) for l in range(0, 30, 3) for h in (0, 4, 8)]
    scores = copying_scores(smollm2, names, movers + others)
    mover_mean = sum(float(scores[l, h]) for l, h in movers) / len(movers)
    other_mean = sum(float(scores[l, h]) for l, h in others) / len(others)
    assert mover_mean > other_mean + 0.2, (mover_mean, other_mean)


def test_dla_matches_the_explicit_formula(smollm2):
    """DLA with frozen norms == z W_O (final RMSNorm scale and weight) W_U[IO] - W_U[S]."""
    prompts = ioi_prompts(smollm2, n=3, seed=8)
    dla = direct_logit_attribution(smollm2, prompts)
    from interp.hooks import cache_activations

    layer, head, d = 23, 3, smollm2.d_head
    names = [hook_name("z", layer), "ln_final.hook_scale"]
    cache = cache_activations(smollm2, prompts.tokens, names)
    rows, end = torch.arange(3), prompts.tokens.final_positions
    z = cache[names[0]][rows, end, head]  # [3, d_head]
    scale = cache[names[1]][rows, end]  # [3, 1]
    with torch.no_grad():
        w_o = smollm2.bridge.blocks[layer].attn.o.original_component.weight[:, head * d:(head + 1) * d]
        out = z @ w_o.T / scale * smollm2.hf_model.model.norm.weight
        w_u = smollm2.hf_model.lm_head.weight
        direction = w_u[prompts.answers] - w_u[prompts.wrong_answers]
        expected = (out * direction).sum(-1).mean()
    assert float(dla[layer, head]) == pytest.approx(float(expected), rel=1e-3, abs=1e-4)


def test_completeness_and_minimality_are_reported(smollm2, eval_prompts, means):
    """On a tiny hand-made circuit, the criteria run and give numbers with the paper's meaning:
    the empty K measures F(C) - F(M); minimality of each head is non-negative."""
    circuit = Circuit("smollm2-135m", "ioi", [CircuitHead(23, 3, "name_mover"),
                                              CircuitHead(20, 0, "name_mover")], 270)
    subset = eval_prompts.subset(slice(0, 4))
    small_means = template_means(smollm2, subset)
    complete = completeness(smollm2, subset, circuit, small_means, n_random=1)
    assert set(complete["by_K"]) == {"empty", "class:name_mover", "random_half:0"}
    assert complete["max_incompleteness"] >= complete["by_K"]["empty"]["incompleteness"] > 0
    minimal = minimality(smollm2, subset, circuit, small_means)
    assert set(minimal["by_head"]) == {"23.3", "20.0"}
    assert all(h["minimality"] >= 0 for h in minimal["by_head"].values())


def _gpt2_path() -> str | None:
    explicit = os.environ.get("INTERP_GPT2_PATH")
    if explicit and Path(explicit, "config.json").is_file():
        return explicit
    cache = Path(os.environ.get("HF_HUB_CACHE", Path.home() / ".cache/huggingface/hub"))
    for repo in ("models--openai-community--gpt2", "models--gpt2"):
        for snapshot in sorted((cache / repo / "snapshots").glob("*")):
            if (snapshot / "config.json").is_file():
                return str(snapshot)
    return None


@pytest.mark.slow
def test_gpt2_reference_circuit_and_name_movers():
    """With GPT-2 small weights available locally: the paper's circuit is far more faithful
    than random circuits on our prompts, and discovery's first level finds the paper's name
    movers."""
    path = _gpt2_path()
    if path is None:
        reason = ("GPT-2 small weights not available locally: set INTERP_GPT2_PATH to a Hugging "
                  "Face GPT-2 directory, or put openai-community/gpt2 in the HF hub cache")
        print(reason)
        pytest.skip(reason)
    from circuits.reference import IOI_CIRCUIT, gpt2_ioi_circuit
    from interp.models import load_model

    model = load_model(path, device="cpu", show_progress=False)
    prompts = ioi_prompts(model, n=24, seed=3)
    means = template_means(model, prompts)
    reference = gpt2_ioi_circuit(model.model_id)
    faithful = faithfulness(model, prompts, reference, means)
    baseline = random_baseline(model, prompts, len(reference), n=8, means=means,
                               f_model=faithful["F_model"])
    assert faithful["faithfulness"] > 0.6
    assert faithful["faithfulness"] > baseline["mean"] + 3 * baseline["std"]
    circuit, _ = discover_ioi_circuit(model, DiscoveryConfig(n_prompts=12, levels=1, evaluate=False))
    found = set(circuit.by_role().get("name_mover", []))
    assert len(found & set(IOI_CIRCUIT["name_mover"] + IOI_CIRCUIT["backup_name_mover"])) >= 2
