"""`interp patch` and `interp circuit` call the library, print, write JSON and store the run."""

from __future__ import annotations

import json

import pytest

from interp_cli.main import main


@pytest.fixture()
def use_smollm2(smollm2, monkeypatch):
    # The commands load their model from the arguments; reuse the session's copy instead.
    import interp_cli.commands.circuit as circuit_command
    import interp_cli.commands.patch as patch_command

    monkeypatch.setattr(patch_command, "load_from_args", lambda args: smollm2)
    monkeypatch.setattr(circuit_command, "load_from_args", lambda args: smollm2)


def test_patch_command(use_smollm2, tmp_path, capsys):
    store, out = tmp_path / "runs.sqlite", tmp_path / "patch.json"
    code = main(["patch", "smollm2-135m", "--task", "ioi", "--component", "heads", "--method",
                 "attribution", "--n-prompts", "3", "--json", str(out), "--store", str(store)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["axes"] == ["layer", "head"] and len(data["values"]) == 30
    assert data["method"] == "attribution" and data["normalization"]["zero"] == "corrupted"
    printed = capsys.readouterr().out
    assert "stored as run" in printed and data["run_id"] in printed

    from interp.store import Store

    (record,) = Store(store).list_runs(kind="patch", status="complete")
    assert record.id == data["run_id"]


def test_circuit_command(use_smollm2, tmp_path, capsys):
    store, out = tmp_path / "runs.sqlite", tmp_path / "circuit.json"
    code = main(["circuit", "smollm2-135m", "--task", "ioi", "--levels", "1", "--n-prompts", "3",
                 "--n-eval-prompts", "3", "--screen-k", "4", "--n-random", "2", "--skip-criteria", "--json", str(out),
                 "--store", str(store)])
    assert code == 0
    data = json.loads(out.read_text())
    assert {"model", "task", "heads", "edges", "faithfulness", "random_baseline",
            "n_heads_total"} <= set(data)
    assert data["n_heads_total"] == 270 and data["heads"]
    assert {"mean", "std"} <= set(data["random_baseline"])
    assert "faithfulness" in capsys.readouterr().out

    from circuits.circuit import Circuit
    from interp.store import Store

    (record,) = Store(store).list_runs(kind="circuit", status="complete")
    assert Circuit.load(Store(store), record.id).head_set == {(h["layer"], h["head"]) for h in data["heads"]}
