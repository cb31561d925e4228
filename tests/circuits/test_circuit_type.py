"""The Circuit type and the GPT-2 reference fixture: JSON in the issue's format, store round trip."""

from __future__ import annotations

import json

import pytest

from circuits.circuit import ROLES, Circuit, CircuitEdge, CircuitHead
from circuits.reference import IOI_CIRCUIT, gpt2_ioi_circuit
from interp.errors import InvalidInput


def _circuit() -> Circuit:
    return Circuit(
        model="smollm2-135m", model_id="smollm2-135m@abc", task="ioi", n_heads_total=270,
        heads=[CircuitHead(23, 3, "name_mover", -0.7), CircuitHead(17, 4, "induction", -0.1)],
        edges=[CircuitEdge((17, 4), (23, 3), "k", -0.08), CircuitEdge((23, 3), None, "resid", -0.7)],
        faithfulness=0.9, random_baseline={"mean": 0.05, "std": 0.04, "n": 20},
    )


def test_json_has_the_issue_format_and_round_trips():
    circuit = _circuit()
    data = json.loads(json.dumps(circuit.to_json()))
    assert {"model", "task", "heads", "edges", "faithfulness", "random_baseline",
            "n_heads_total"} <= set(data)
    assert data["heads"][0] == {"layer": 23, "head": 3, "role": "name_mover", "score": -0.7}
    assert data["edges"][0]["sender"] == {"layer": 17, "head": 4}
    assert data["edges"][1]["receiver"] == "logits"
    again = Circuit.from_json(data)
    assert again.head_set == circuit.head_set and again.edges == circuit.edges
    assert again.by_role() == {"name_mover": [(23, 3)], "induction": [(17, 4)]}
    assert "faithfulness 90.0%" in again.summary()


def test_store_round_trip(tmp_store):
    circuit = _circuit()
    run_id = circuit.save(tmp_store)
    (record,) = tmp_store.list_runs(kind="circuit", status="complete")
    assert record.id == run_id and record.result["task"] == "ioi"
    assert Circuit.load(tmp_store, run_id).head_set == circuit.head_set
    assert Circuit.latest(tmp_store, circuit.model_id).faithfulness == 0.9


def test_invalid_circuits_are_refused():
    with pytest.raises(InvalidInput, match="unknown role"):
        Circuit("m", "ioi", [CircuitHead(0, 0, "wizard")], 4)
    with pytest.raises(InvalidInput, match="twice"):
        Circuit("m", "ioi", [CircuitHead(0, 0, "induction"), CircuitHead(0, 0, "name_mover")], 4)


def test_gpt2_reference_is_the_papers_circuit():
    """Wang et al.'s 26 heads, as listed in the issue and ACDC's IOI_CIRCUIT."""
    assert IOI_CIRCUIT["name_mover"] == [(9, 9), (10, 0), (9, 6)]
    assert sorted(IOI_CIRCUIT["s_inhibition"]) == [(7, 3), (7, 9), (8, 6), (8, 10)]
    assert sorted(IOI_CIRCUIT["induction"]) == [(5, 5), (5, 8), (5, 9), (6, 9)]
    assert sorted(IOI_CIRCUIT["duplicate_token"]) == [(0, 1), (0, 10), (3, 0)]
    assert sorted(IOI_CIRCUIT["previous_token"]) == [(2, 2), (4, 11)]
    assert sorted(IOI_CIRCUIT["negative_name_mover"]) == [(10, 7), (11, 10)]
    assert len(IOI_CIRCUIT["backup_name_mover"]) == 8
    circuit = gpt2_ioi_circuit()
    assert len(circuit) == 26 and circuit.n_heads_total == 144
    assert set(IOI_CIRCUIT) <= set(ROLES)
