"""`interp circuit MODEL --task FILE.jsonl --method eap --json OUT`: the issue's JSON contract,
the task file checked before any model loads."""

from __future__ import annotations

import json

import pytest
import torch

from interp_cli.main import main

torch.set_num_threads(1)  # 2 cores shared by several sessions

CONTRACT = {"method", "task", "model", "nodes", "edges", "heads", "head_scores",
            "faithfulness_curve", "cpr", "cmd", "random_cmd", "n_discover", "n_eval", "seconds"}
PAIRS = [("When Mary and John went to the store, John gave a drink to",
          "When Alice and Bob went to the store, Carol gave a drink to", " Mary", " John"),
         ("When Tom and Anna went to the park, Anna gave a ball to",
          "When Lucy and Mark went to the park, Paul gave a ball to", " Tom", " Anna"),
         ("When Sarah and David went to the office, David handed a pen to",
          "When Emma and James went to the office, Kevin handed a pen to", " Sarah", " David"),
         ("When Paul and Lisa went to the beach, Lisa gave a towel to",
          "When Mike and Kate went to the beach, Jack gave a towel to", " Paul", " Lisa")]


def _write(path, rows):
    path.write_text("\n".join(json.dumps(dict(zip(("clean", "corrupted", "answer", "wrong"), r)))
                              if isinstance(r, tuple) else r for r in rows) + "\n")


def test_bad_task_file_fails_before_the_model_loads(tmp_path, monkeypatch, capsys):
    import interp_cli.commands.circuit as circuit_command

    def no_load(args):
        raise AssertionError("the model must not load for a bad task file")

    monkeypatch.setattr(circuit_command, "load_from_args", no_load)
    task = tmp_path / "task.jsonl"
    _write(task, [PAIRS[0], '{"clean": "x", "corrupted": "y"}'])
    code = main(["circuit", "smollm2-135m", "--task", str(task), "--method", "eap",
                 "--store", str(tmp_path / "s.sqlite")])
    assert code == 2 and "line 2: missing answer, wrong" in capsys.readouterr().err
    code = main(["circuit", "smollm2-135m", "--task", str(task), "--method", "path",
                 "--store", str(tmp_path / "s.sqlite")])
    assert code == 2 and "works on ioi only" in capsys.readouterr().err


def test_eap_on_a_task_file_writes_the_contract(tmp_path, monkeypatch, smollm2, capsys):
    import interp_cli.commands.circuit as circuit_command

    monkeypatch.setattr(circuit_command, "load_from_args", lambda args: smollm2)
    task, out = tmp_path / "pairs.jsonl", tmp_path / "out.json"
    _write(task, PAIRS)
    code = main(["circuit", "smollm2-135m", "--task", str(task), "--method", "eap",
                 "--n-prompts", "2", "--json", str(out), "--store", str(tmp_path / "s.sqlite")])
    assert code == 0
    data = json.loads(out.read_text())
    assert CONTRACT <= set(data)
    assert data["method"] == "eap" and data["task"] == "pairs.jsonl"
    assert (data["n_discover"], data["n_eval"]) == (2, 2)
    assert set(data["edges"][0]) == {"src", "dst", "score"} and len(data["head_scores"]) == 270
    curve = data["faithfulness_curve"]
    assert [p["k_percent"] for p in curve] == [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]
    assert curve[-1]["faithfulness"] == pytest.approx(1.0, abs=1e-4)  # every edge: the model
    assert 0 <= data["cmd"] <= 1.5 and data["random_cmd"] is not None
    assert "CPR" in capsys.readouterr().out

    from circuits.circuit import Circuit
    from interp.store import Store

    (record,) = Store(tmp_path / "s.sqlite").list_runs(kind="circuit", status="complete")
    stored = Circuit.load(Store(tmp_path / "s.sqlite"), record.id)
    assert stored.method == "eap" and len(stored.graph_edges) == len(data["edges"])
