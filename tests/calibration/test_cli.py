"""`interp calibrate` / `interp evaluate`: bad input is refused before the model loads and leaves
nothing written; the JSON contract of `evaluate` on real SmolLM2 weights."""

from __future__ import annotations

import json

import pytest

from interp_cli.main import main


@pytest.fixture()
def files(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in [
        ("a wonderful, moving film", "positive"), ("boring and far too long", "negative"),
        ("the best thing I saw this year", "positive"), ("a waste of time", "negative")]))
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"text": "I loved every minute", "label": "positive"}) + "\n" +
                    json.dumps({"text": "dreadful acting", "label": "negative"}) + "\n")
    return tmp_path, train, test


def test_bad_arguments_are_refused_before_the_model_loads(files, capsys, monkeypatch):
    tmp, train, test = files
    monkeypatch.setattr("interp_cli.commands.evaluate.load_from_args",
                        lambda *a: pytest.fail("model loaded before the checks"))
    monkeypatch.setattr("interp_cli.commands.calibrate.load_from_args",
                        lambda *a: pytest.fail("model loaded before the checks"))
    out, cal = tmp / "out.json", tmp / "cal.json"
    (tmp / "empty.jsonl").write_text("")
    (tmp / "odd.jsonl").write_text(json.dumps({"text": "x", "label": "neutral"}) + "\n")
    (tmp / "cols.csv").write_text("sentence,label\nhi,positive\n")
    cases = [
        (["evaluate", "--eval", tmp / "missing.jsonl"], "does not exist"),
        (["evaluate", "--eval", tmp / "empty.jsonl"], "is empty"),
        (["evaluate", "--eval", tmp / "cols.csv", "--train", train], "no column 'text'"),
        (["evaluate", "--eval", tmp / "odd.jsonl", "--train", train], "outside the task's label"),
        (["evaluate", "--eval", test, "--shots", "2"], "--train"),
        (["evaluate", "--eval", test, "--train", train, "--shots", "9"], "lower --shots"),
        (["evaluate", "--eval", test, "--calibration", tmp / "nope.json"], "does not exist"),
        (["calibrate", "--eval", test, "--train", train, "--dev", tmp / "missing.jsonl",
          "--save", cal, "--json", out], "does not exist"),
        (["calibrate", "--eval", test, "--train", train, "--dev", train, "--shots", "-1",
          "--json", out], "--shots"),
        (["calibrate", "--eval", test, "--train", train, "--dev", test, "--json", out],
         "same file"),
        # the dashboard form's bounds (interp.steering.act_eval.SEARCH_BOUNDS)
        (["calibrate", "--eval", test, "--train", train, "--dev", train, "--n-dev", "100000"],
         "--n-dev must be a whole number in [1, 512]"),
        (["calibrate", "--eval", test, "--train", train, "--dev", train, "--screen", "99"],
         "--screen must be"),
    ]
    for argv, message in cases:
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert code == 2 and message in err, (argv, err)
        assert not out.exists() and not cal.exists()


def test_evaluate_writes_the_json_contract(files, smollm2, monkeypatch, capsys):
    tmp, train, test = files
    from interp.steering.act_search import Calibration

    cal = tmp / "cal.json"
    Calibration(smollm2.model_id, [(3, 2)]).save(cal)
    monkeypatch.setattr("interp_cli.commands.evaluate.load_from_args", lambda args: smollm2)
    out = tmp / "out.json"
    assert main(["evaluate", "--eval", str(test), "--train", str(train), "--shots", "1",
                 "--calibration", str(cal), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"model", "task", "n", "shots", "baseline", "calibrated", "heads", "tau",
                           "beta"}
    assert set(report["baseline"]) == set(report["calibrated"]) == {"accuracy", "ci95"}
    assert report["heads"] == [[3, 2]] and report["n"] == 2 and report["shots"] == 1
    assert "per" not in capsys.readouterr().err


def test_calibrate_reports_all_three_and_saves_an_applicable_calibration(files, smollm2,
                                                                         monkeypatch, tmp_path):
    tmp, train, test = files
    monkeypatch.setattr("interp_cli.commands.calibrate.load_from_args", lambda args: smollm2)
    out, cal = tmp / "out.json", tmp / "cal.json"
    assert main(["calibrate", "--train", str(train), "--dev", str(train), "--eval", str(test),
                 "--n-calibration", "2", "--n-dev", "2", "--screen", "2", "--json", str(out),
                 "--save", str(cal),
                 "--store", str(tmp_path / "store.sqlite")]) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"model", "task", "n", "shots", "baseline", "calibrated", "heads", "tau",
                           "beta", "all_heads"}
    assert set(report["all_heads"]) == {"accuracy", "ci95"}
    from interp.steering.act_search import Calibration
    from interp.store import Store

    saved = Calibration.load(cal)
    assert [list(h) for h in saved.heads] == report["heads"] and saved.tau == report["tau"] == 0.1
    assert Calibration.from_store(Store(tmp_path / "store.sqlite"),
                                  model_id=smollm2.model_id) == saved
