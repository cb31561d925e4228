"""`interp scan`: JSON in the issue's format, one store run with one HeadScores per detector,
clear errors for bad detector names."""

import json

import pytest

import interp_cli.main as cli
from interp_cli.commands import common

pytestmark = pytest.mark.slow


def test_scan_command_writes_json_and_store(smollm2, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "load_model", lambda *a, **k: smollm2, raising=False)
    monkeypatch.setattr("interp.models.load_model", lambda *a, **k: smollm2)
    out = tmp_path / "scan.json"
    store = tmp_path / "results.sqlite"
    code = cli.main(["scan", "smollm2-135m", "--detectors", "induction,sink", "--prompts", "2",
                     "--max-tokens", "48", "--param", "sink.min_queries=8", "--verify", "2",
                     "--random-draws", "1", "--verify-prompts", "2", "--verify-tokens", "48", "--json", str(out), "--store", str(store)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["n_layers"] == smollm2.n_layers and data["n_heads"] == smollm2.n_heads
    assert set(data["detectors"]) == {"induction", "sink"}
    for name, entry in data["detectors"].items():
        assert len(entry["scores"]) == smollm2.n_layers and len(entry["scores"][0]) == smollm2.n_heads
        assert entry["top"][0].keys() == {"layer", "head", "score"}
        assert entry["verify"]["k"] == 2 and len(entry["verify"]["random_k"]) == 1
    assert data["detectors"]["sink"]["params"]["min_queries"] == 8
    printed = capsys.readouterr().out
    assert "induction: top 10 heads" in printed and "Sink_1^0.3" in printed

    from interp.store import Store

    runs = Store(store).list_runs(kind="scan")
    # one run per detector, each complete as soon as its detector finished, one scan group
    assert len(runs) == 2 and all(r.status == "complete" for r in runs)
    assert {d for r in runs for d in r.detectors} == {"induction", "sink"}
    assert len({r.params["scan"] for r in runs}) == 1
    stored = Store(store).latest_scores(smollm2.model_id, "induction")
    assert stored.top(3) == data["detectors"]["induction"]["top"][:3]
    assert stored.verify["k"] == 2


def test_scan_command_rejects_unknown_detectors_before_loading(capsys, monkeypatch):
    def fail(*a, **k):
        raise AssertionError("the model must not load for a bad detector name")
    monkeypatch.setattr("interp.models.load_model", fail)
    assert cli.main(["scan", "smollm2-135m", "--detectors", "induction,nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown detector 'nope'" in err and "retrieval" in err
    assert cli.main(["scan", "--detectors", "sink", "--param", "sink.eps=1"]) == 2
    assert "valid" in capsys.readouterr().err
