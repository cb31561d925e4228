"""The EAP graph (node, input and edge counts, grouped-query K/V inputs), the generalised
Circuit (nodes + edges, optional roles; JSON and store round trips; IOI circuits stored in the
old format still load), MIB's curve areas, and the task-file loader's line-numbered errors."""

from __future__ import annotations

import json

import pytest
import torch

from circuits.circuit import Circuit, CircuitEdge, CircuitHead, Edge
from circuits.faithfulness import curve_areas
from circuits.graph import Graph
from interp.errors import InvalidInput
from interp.tasks.pairs import pairs_prompts, read_pairs

torch.set_num_threads(1)  # 2 cores shared by several sessions


def test_graph_counts_for_a_grouped_query_model():
    graph = Graph(n_layers=30, n_heads=9, n_kv_heads=3)  # SmolLM2-135M's shape
    assert graph.n_upstream == 1 + 30 * 10 and graph.n_inputs == 30 * (9 + 3 + 3 + 1) + 1
    # attention inputs of layer L read 1 + 10 L nodes; the MLP also reads layer L's 9 heads
    expected = sum(15 * (1 + 10 * L) + (1 + 10 * L + 9) for L in range(30)) + 301
    assert graph.n_edges == expected == int(graph.allowed.sum())
    k = graph.k_index(4, 1)
    assert graph.inputs[k] == "a4.kv1<k>"
    assert graph.input_owners(k) == ["a4.h3", "a4.h4", "a4.h5"]  # one K/V head, three query heads
    assert graph.kv_of(5) == 1
    # no edge from a later node, nor from a head into its own layer's attention
    assert not graph.allowed[graph.head_index(4, 0), graph.q_index(4, 2)]
    assert graph.allowed[graph.head_index(4, 0), graph.mlp_input_index(4)]
    assert graph.allowed[graph.mlp_index(29), graph.logits_index]


def test_top_and_random_edges_count_only_real_edges():
    graph = Graph(3, 2, 1)
    scores = torch.randn(graph.n_upstream, graph.n_inputs)
    keep = graph.top_edges(scores, 5)
    assert int(keep.sum()) == 5 and not (keep & ~graph.allowed).any()
    chosen = scores.abs()[keep].min()
    assert (scores.abs()[graph.allowed & ~keep] <= chosen).all()
    rand = graph.random_edges(7, torch.Generator().manual_seed(0))
    assert int(rand.sum()) == 7 and not (rand & ~graph.allowed).any()
    edges = graph.edge_list(scores, keep)
    assert len(edges) == 5 and set(edges[0]) == {"src", "dst", "score"}


def test_curve_areas_of_a_perfect_and_an_empty_circuit():
    ks = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]
    cpr, cmd = curve_areas([{"k_percent": k, "faithfulness": 1.0} for k in ks])
    assert cmd == pytest.approx(0.0005) and cpr == pytest.approx(1 - 0.0005)  # f(0) = 0 first
    cpr, cmd = curve_areas([{"k_percent": k, "faithfulness": 0.0} for k in ks])
    assert cpr == 0 and cmd == pytest.approx(1.0)


def _edge_circuit() -> Circuit:
    return Circuit(model="smollm2-135m", model_id="smollm2-135m@abc", task="greater-than",
                   heads=[CircuitHead(9, 1, None, 0.4)], n_heads_total=270, method="eap-ig",
                   nodes=["input", "a9.h1", "m10", "logits"],
                   graph_edges=[Edge("a9.h1", "m10", 0.3), Edge("m10", "logits", 0.5)])


def test_edge_circuit_round_trips_through_json_and_the_store(tmp_store):
    circuit = _edge_circuit()
    again = Circuit.from_json(json.loads(json.dumps(circuit.to_json())))
    assert again.graph_edges == circuit.graph_edges and again.nodes == circuit.nodes
    assert again.method == "eap-ig" and again.heads[0].role is None
    run_id = circuit.save(tmp_store)
    assert Circuit.load(tmp_store, run_id).graph_edges == circuit.graph_edges
    assert "9.1" in again.summary()
    # an EAP circuit is not taken for the path-patching IOI reference
    assert Circuit.latest(tmp_store, circuit.model_id, "greater-than") is None
    assert Circuit.latest(tmp_store, circuit.model_id, "greater-than", method=None).method == "eap-ig"


def test_ioi_circuit_stored_in_the_old_format_still_loads(tmp_store):
    old = {"model": "smollm2-135m", "model_id": "smollm2-135m@abc", "task": "ioi",
           "heads": [{"layer": 23, "head": 3, "role": "name_mover", "score": -0.61}],
           "edges": [{"sender": {"layer": 23, "head": 3}, "receiver": "logits", "input": "resid",
                      "effect": -0.61}],
           "faithfulness": 0.9, "random_baseline": None, "n_heads_total": 270,
           "evaluation": {}, "params": {}, "prompt_hash": ""}
    with tmp_store.run("circuit", "smollm2-135m@abc", {"task": "ioi"}) as run:
        run.set_result(old)
    loaded = Circuit.load(tmp_store, run.id)
    assert loaded.method == "path" and loaded.nodes == [] and loaded.graph_edges == []
    assert loaded.all_edges() == [Edge("a23.h3", "logits", -0.61)]
    assert Circuit.latest(tmp_store, "smollm2-135m@abc").head_set == {(23, 3)}
    path = Circuit("m", "ioi", [CircuitHead(1, 0, "induction")], 4,
                   edges=[CircuitEdge((0, 1), (1, 0), "k", 0.2)])
    assert path.all_edges() == [Edge("a0.h1", "a1.h0<k>", 0.2)]


GOOD = {"clean": "When Mary and John went to the store, John gave a drink to",
        "corrupted": "When Alice and Bob went to the store, Carol gave a drink to",
        "answer": " Mary", "wrong": " John"}


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2: not valid JSON"),
    ("[1, 2]", "line 2: expected a JSON object"),
    (json.dumps({"clean": "a", "corrupted": "b", "answer": " x"}), "line 2: missing wrong"),
    (json.dumps({**GOOD, "answer": 3}), "line 2: answer must be"),
    (json.dumps({**GOOD, "wrong": " Mary"}), "line 2: answer and wrong are the same"),
])
def test_task_file_rejects_each_bad_line_without_a_model(tmp_path, line, message):
    path = tmp_path / "task.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(InvalidInput, match=message):
        read_pairs(path)


def test_task_file_token_checks_name_the_line(tmp_path, smollm2):
    path = tmp_path / "task.jsonl"
    lines = [GOOD, {**GOOD, "corrupted": "When Alice and Bob went to the big store, Carol gave a drink to"},
             {**GOOD, "answer": " Maryanne-Louise"}]
    path.write_text("\n".join(json.dumps(x) for x in lines))
    pairs = read_pairs(path)
    with pytest.raises(InvalidInput, match="line 2: clean is 14 tokens and corrupted 15"):
        pairs_prompts(smollm2, pairs[:2])
    with pytest.raises(InvalidInput, match="line 3: answer ' Maryanne-Louise' is not one token"):
        pairs_prompts(smollm2, [pairs[0], pairs[2]])
    prompts = pairs_prompts(smollm2, [pairs[0], pairs[0]])
    assert prompts.answers.tolist() == [smollm2.single_token_id(" Mary")] * 2
