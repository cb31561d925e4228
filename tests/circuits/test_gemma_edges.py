"""Edge circuits on Gemma-3, whose attention output is normalised before it joins the residual
stream (`post_attention_layernorm`): each head's share of the update (`interp.head_writes`) sums to the
update exactly, the edge-patching evaluation is exact at both ends, and EAP tracks exact patching
of single edges."""

from __future__ import annotations

import pytest
import torch

from circuits.eap import edge_scores
from circuits.faithfulness import CircuitRunner
from circuits.tasks import task_split
from interp.forward import run
from interp.head_writes import head_writes
from interp.patching.attribution import correlation

torch.set_num_threads(1)  # 2 cores shared by several sessions


@pytest.fixture(scope="module")
def greater_than_eap(gemma):
    discover, _ = task_split(gemma, "greater-than", n_discover=4, n_eval=2)
    scores = edge_scores(gemma, discover, "eap", batch_size=4)
    return discover, scores, CircuitRunner(gemma, discover, batch_size=4)


def test_head_shares_sum_to_the_normalised_attention_update(gemma):
    layer, seen = 5, {}

    def keep(name):
        def hook(x, hook=None):
            seen[name] = x.detach().clone()
        return hook

    names = [f"blocks.{layer}.{n}" for n in ("attn.hook_z", "hook_resid_pre", "hook_resid_mid")]
    from interp.tokens import TokenBatch

    run(gemma, TokenBatch.from_lists([gemma.encode("The war lasted from the year 1739 to the year 17")]),
        hooks=[(name, keep(name)) for name in names])
    shares = head_writes(gemma, layer)(seen[names[0]])  # [1, pos, n_heads, d_model]
    update = seen[names[2]] - seen[names[1]]
    assert shares.shape[2] == gemma.n_heads
    assert torch.allclose(shares.sum(2), update, atol=1e-3 * float(update.abs().max()))
    # the plain z @ W_O would not: the norm rescales the sum by hundreds
    plain = torch.einsum("bphe,hed->bpd", seen[names[0]], gemma.bridge.blocks[layer].attn.W_O.detach())
    assert not torch.allclose(plain, update, atol=0.1 * float(update.abs().max()))


def test_gemma_edge_patching_is_exact_at_both_ends_and_eap_tracks_it(gemma, greater_than_eap):
    discover, found, runner = greater_than_eap
    graph, scores = found.graph, found.scores
    rows = torch.arange(len(discover))
    with torch.no_grad():
        clean = float(discover.metric(run(gemma, discover.prompts.tokens).float(), rows).mean())
        corrupted = float(discover.metric(run(gemma, discover.prompts.corrupted).float(), rows).mean())
    assert runner.metric(torch.zeros_like(graph.allowed)) == pytest.approx(corrupted, abs=1e-3)
    assert runner.metric(graph.allowed.clone()) == pytest.approx(clean, abs=1e-3)
    order = scores.abs().flatten().argsort(descending=True).tolist()
    strong = [(u, v) for u, v in (divmod(i, graph.n_inputs) for i in order[:40]) if u != 0][:5]
    estimated, exact = [], []
    for u, v in strong:
        keep = graph.allowed.clone()
        keep[u, v] = False
        exact.append(clean - runner.metric(keep))
        estimated.append(float(scores[u, v]))
    assert correlation(torch.tensor(estimated), torch.tensor(exact))["pearson"] > 0.8, (estimated, exact)
