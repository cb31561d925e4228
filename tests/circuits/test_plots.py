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
