"""circuits.plots: the circuit graph the dashboard and the notebooks draw."""

from __future__ import annotations

import pytest

from circuits.plots import circuit_graph


def test_circuit_edges_are_as_wide_as_their_effect():
    heads = [{"layer": 0, "head": 1, "role": "previous_token"},
             {"layer": 9, "head": 6, "role": "name_mover"}]
    edges = [{"sender": [0, 1], "receiver": [9, 6], "effect": 0.5},
             {"sender": [9, 6], "receiver": "logits", "effect": -1.0}]
    fig = circuit_graph(heads, edges, n_layers=12)
    lines = [t for t in fig.data if t.mode == "lines"]
    assert lines[1].line.width == pytest.approx(8.0) and lines[0].line.width == pytest.approx(4.25)
    assert lines[1].line.dash == "dash" and lines[1].x[1] == 12.5  # logits right of the model
    names = {t.name for t in fig.data if t.mode == "markers+text"}
    assert {"previous_token", "name_mover", "output"} <= names


# ---- the edge graph, the threshold and the faithfulness curve (synthetic circuits) ------------

import json  # noqa: E402

import torch  # noqa: E402

from circuits.circuit import Circuit, CircuitHead, Edge  # noqa: E402
from circuits.graph import Graph  # noqa: E402
from circuits.plots import (circuit_edge_graph, circuit_faithfulness_figure,  # noqa: E402
                            edge_graph, faithfulness_figure, node_positions, select_edges,
                            threshold_slider, threshold_value)


def _graph_edges(n_layers=4, n_heads=6, n_kv=2, seed=0) -> list[dict]:
    """Every edge of a small GQA graph with random scores (both signs)."""
    graph = Graph(n_layers, n_heads, n_kv)
    scores = torch.randn(graph.n_upstream, graph.n_inputs, generator=torch.Generator().manual_seed(seed))
    return graph.edge_list(scores)


def _edge_traces(fig) -> list:
    return [t for t in fig.data if t.mode == "lines" and t.showlegend is False]


def _drawn(fig) -> int:
    """Edges drawn: segments in the line traces (x0, x1, None per edge)."""
    return sum(len(t.x) // 3 for t in _edge_traces(fig))


def test_nodes_are_placed_by_layer_heads_stacked_mlp_on_top():
    where = node_positions(["input", "a0.h0", "a0.h5", "m0", "a2.h3<q>", "a2.kv1<k>", "3.4",
                            "logits"], n_layers=4, n_heads=6)
    assert where["input"][0] < where["a0.h0"][0] < where["m0"][0] < where["a2.h3"][0] < where["logits"][0]
    assert where["a0.h0"] == (0.0, 0.0) and where["a0.h5"] == (0.0, 5.0)
    assert where["m0"][1] > where["a0.h5"][1]                       # the MLP above its layer's heads
    assert where["a2.kv1"][0] < 2 and 3 <= where["a2.kv1"][1] <= 5  # K/V group 1 = heads 3..5
    assert where["3.4"] == (3.0, 4.0) and where["logits"][0] == 4.0  # "L.H" names of sae-heads
    features = node_positions(["blocks.1.hook_resid_pre/f7", "blocks.1.hook_resid_pre/error",
                               "blocks.1.hook_resid_pre/f2", "blocks.3.hook_mlp_out/f0"],
                              scores={"blocks.1.hook_resid_pre/f7": 0.1, "blocks.1.hook_resid_pre/f2": -0.9})
    assert features["blocks.1.hook_resid_pre/error"][1] == 0        # error first, then by |score|
    assert features["blocks.1.hook_resid_pre/f2"][1] < features["blocks.1.hook_resid_pre/f7"][1]
    assert features["blocks.1.hook_resid_pre/f7"][0] < 1 < 3 < features["blocks.3.hook_mlp_out/f0"][0]


def test_threshold_keeps_the_strongest_edges_and_the_cap_is_said():
    edges = _graph_edges()
    magnitudes = sorted((abs(e["score"]) for e in edges), reverse=True)
    top, passing = select_edges(edges, "top", 50)
    assert passing == 50 and [abs(e["score"]) for e in top] == magnitudes[:50]
    cut = magnitudes[99]
    chosen, passing = select_edges(edges, "score", cut)
    assert passing == 100 and min(abs(e["score"]) for e in chosen) >= cut
    fig = edge_graph(edges, mode="score", value=cut, n_layers=4, n_heads=6)
    assert _drawn(fig) == 100
    widths = {t.line.width for t in _edge_traces(fig)}
    assert len(widths) > 2                                           # width follows |score|
    colours = {t.line.color.split("(")[1][:6] for t in _edge_traces(fig)}
    assert len(colours) == 2                                         # both signs, two colours
    capped = edge_graph(edges, mode="top", value=len(edges), cap=300)
    assert _drawn(capped) == 300 and "drawing the strongest 300" in capped.layout.title.text
    # the slider: a position gives a threshold, and a higher position draws fewer / more edges
    spec = threshold_slider(edges, "score")
    low, high = threshold_value(edges, "score", spec["min"]), threshold_value(edges, "score", spec["max"])
    assert select_edges(edges, "score", low)[1] == len(edges) and select_edges(edges, "score", high)[1] == 1
    spec = threshold_slider(edges, "top", default_edges=200)
    assert threshold_value(edges, "top", spec["value"]) == 200
    assert threshold_value(edges, "top", spec["max"]) == len(edges)


def test_feature_circuit_draws_features_errors_and_contexts_from_the_store(tmp_store):
    nodes = [{"id": "blocks.2.hook_resid_pre/f5", "kind": "sae_feature", "layer": 2, "feature": 5,
              "score": 0.4, "contexts": [{"text": "the cat sat", "token": " sat", "activation": 3.2}],
              "density": 0.01},
             {"id": "blocks.2.hook_resid_pre/error", "kind": "sae_error", "layer": 2, "feature": None,
              "score": 0.1},
             {"id": "blocks.6.hook_resid_pre/f9", "kind": "sae_feature", "layer": 6, "feature": 9,
              "score": -0.3}]
    from circuits.discover import result_circuit
    result = {"method": "sae-features", "task": "ioi", "model": "m", "heads": [],
              "head_scores": [{"layer": 0, "head": 0, "score": 0.0}], "nodes": nodes,
              "edges": [{"src": "blocks.2.hook_resid_pre/f5", "dst": "blocks.6.hook_resid_pre/f9", "score": 0.2},
                        {"src": "blocks.2.hook_resid_pre/error", "dst": "blocks.6.hook_resid_pre/f9", "score": -0.05},
                        {"src": "blocks.6.hook_resid_pre/f9", "dst": "logits", "score": -0.3}],
              "faithfulness_curve": [{"k_percent": 50, "faithfulness": 0.6},
                                     {"k_percent": 100, "faithfulness": 1.0}],
              "random_curve": [{"k_percent": 50, "faithfulness": 0.2}, {"k_percent": 100, "faithfulness": 1.0}],
              "cpr": 0.5, "cmd": 0.3, "random_cmd": 0.6}
    stored = Circuit.load(tmp_store, result_circuit(result).save(tmp_store))  # the store keeps the node details
    assert stored.node_info["blocks.2.hook_resid_pre/f5"]["contexts"][0]["token"] == " sat"
    fig = circuit_edge_graph(stored, mode="top", value=None)
    groups = {t.name: t for t in fig.data if t.mode and "markers" in t.mode and t.customdata is not None}
    assert set(groups) == {"SAE feature", "SAE error", "embeddings / logits"}
    assert list(groups["SAE error"].customdata) == ["blocks.2.hook_resid_pre/error"]
    hover = dict(zip(groups["SAE feature"].customdata, groups["SAE feature"].hovertext))
    assert "the cat sat" in hover["blocks.2.hook_resid_pre/f5"]
    assert _drawn(fig) == 3
    curve = circuit_faithfulness_figure(stored)
    assert "SAE nodes" in curve.layout.xaxis.title.text


def test_faithfulness_curve_has_the_random_baseline_and_its_figures():
    curve = [{"k_percent": k, "faithfulness": f} for k, f in ((0.1, 0.2), (1, 0.7), (100, 1.0))]
    randoms = [{"k_percent": k, "faithfulness": f} for k, f in ((0.1, 0.0), (1, 0.05), (100, 1.0))]
    fig = faithfulness_figure(curve, randoms, cpr=0.91, cmd=0.04, random_cmd=0.7)
    assert fig.layout.xaxis.type == "log"
    names = [t.name for t in fig.data]
    assert names == ["circuit", "random circuits"] and list(fig.data[1].y) == [0.0, 0.05, 1.0]
    text = fig.layout.annotations[0].text
    assert "CPR 0.910" in text and "CMD 0.040" in text and "random CMD 0.700" in text


def test_path_circuit_keeps_its_roles_and_edges_on_the_edge_graph():
    circuit = Circuit(model="m", task="ioi", n_heads_total=54,
                      heads=[CircuitHead(1, 2, "induction"), CircuitHead(3, 0, "name_mover")],
                      graph_edges=[Edge("a1.h2", "a3.h0<q>", 0.3), Edge("a3.h0", "logits", -0.6)])
    again = Circuit.from_json(json.loads(json.dumps(circuit.to_json())))
    fig = circuit_edge_graph(again, n_layers=6, n_heads=9)
    legend = {t.name for t in fig.data if t.showlegend is not False and t.mode and "markers" in t.mode}
    assert {"induction", "name_mover", "embeddings / logits"} <= legend and _drawn(fig) == 2
    # path-patching effects: negative = the metric drops when the path is corrupted = helps
    strongest = max(_edge_traces(fig), key=lambda t: t.line.width)
    assert strongest.line.color.startswith("rgba(31,119,180") and "edge helps (score < 0)" in {t.name for t in fig.data}
