"""EAP on real SmolLM2 weights: its edge scores agree with exact patching of single edges, the
edge-patching evaluation is the corrupted run with no edges and the model with all of them, and
a random circuit scores near the empty one."""

from __future__ import annotations

import pytest
import torch

from circuits.eap import edge_scores
from circuits.faithfulness import CircuitRunner
from circuits.tasks import task_split
from interp.forward import run
from interp.patching.attribution import correlation

torch.set_num_threads(1)  # 2 cores shared by several sessions


@pytest.fixture(scope="module")
def ioi_eap(smollm2):
    torch.manual_seed(0)
    discover, evaluate = task_split(smollm2, "ioi", n_discover=4, n_eval=4)
    scores = edge_scores(smollm2, discover, "eap", batch_size=4)
    return discover, evaluate, scores, CircuitRunner(smollm2, discover, batch_size=4)


def test_empty_circuit_is_the_corrupted_run_and_full_circuit_the_model(smollm2, ioi_eap):
    discover, _, found, runner = ioi_eap
    rows = torch.arange(len(discover))
    with torch.no_grad():
        clean = float(discover.metric(run(smollm2, discover.prompts.tokens).float(), rows).mean())
        corrupted = float(discover.metric(run(smollm2, discover.prompts.corrupted).float(), rows).mean())
    assert clean - corrupted > 1.0  # IOI: the corruption removes the logit difference
    assert runner.metric(torch.zeros_like(found.graph.allowed)) == pytest.approx(corrupted, abs=1e-3)
    assert runner.metric(found.graph.allowed.clone()) == pytest.approx(clean, abs=1e-3)


def test_eap_scores_match_exact_single_edge_patching(ioi_eap):
    """Syed et al.'s claim at the edge level: gradient x activation difference tracks the
    metric drop of corrupting one edge. The strongest edges out of attention heads and MLPs
    (EAP is known to miss at the embeddings, Hanna et al. 2024) and a few random edges."""
    _, _, found, runner = ioi_eap
    graph, scores = found.graph, found.scores
    clean = runner.metric(None)
    order = scores.abs().flatten().argsort(descending=True).tolist()
    strong = [divmod(i, graph.n_inputs) for i in order[:40]]
    strong = [(u, v) for u, v in strong if u != 0][:6]
    generator = torch.Generator().manual_seed(1)
    allowed = graph.allowed.nonzero().tolist()
    picks = [tuple(allowed[i]) for i in torch.randperm(len(allowed), generator=generator)[:3].tolist()]
    estimated, exact = [], []
    for u, v in strong + picks:
        keep = graph.allowed.clone()
        keep[u, v] = False
        exact.append(clean - runner.metric(keep))
        estimated.append(float(scores[u, v]))
    agreement = correlation(torch.tensor(estimated), torch.tensor(exact))
    assert agreement["pearson"] > 0.9, (estimated, exact)


def test_random_circuit_scores_near_the_empty_circuit(ioi_eap):
    _, _, found, runner = ioi_eap
    graph = found.graph
    empty, full = runner.metric(torch.zeros_like(graph.allowed)), runner.metric(None)
    k = round(0.005 * graph.n_edges)
    randoms = [(runner.metric(graph.random_edges(k, torch.Generator().manual_seed(s))) - empty)
               / (full - empty) for s in range(2)]
    top = (runner.metric(graph.top_edges(found.scores, 20 * k)) - empty) / (full - empty)
    assert all(abs(f) < 0.25 for f in randoms), randoms
    assert top > max(randoms) + 0.3, (top, randoms)
