"""`interp safety`: bad input fails fast with a clear message; a tiny real run lands in the store."""

from __future__ import annotations

import json

import pytest

from interp_cli.main import main


@pytest.mark.parametrize("argv,message", [
    (["--train", "0"], "--train must be at least 1"),
    (["--layers", "eight"], "--layers must be integers"),
])
def test_bad_arguments(argv, message, capsys):
    assert main(["safety", *argv]) == 2
    assert message in capsys.readouterr().err


def test_empty_prompt_file_fails_before_loading_a_model(tmp_path, capsys, monkeypatch):
    import interp_cli.commands.common as common

    monkeypatch.setattr(common, "load_from_args",
                        lambda args: pytest.fail("the model must not load for a bad prompt file"))
    empty = tmp_path / "harmful.json"
    empty.write_text("[]")
    assert main(["safety", "--harmful", str(empty)]) == 2
    assert "holds no instructions" in capsys.readouterr().err


def test_small_run_writes_the_store_and_json(qwen, instructions, refused, tmp_path, capsys,
                                             monkeypatch):
    import interp_cli.commands.common as common

    monkeypatch.setattr(common, "load_from_args", lambda args: qwen)  # reuse the session's model
    harmful = tmp_path / "harmful.json"
    harmful.write_text(json.dumps(refused[:4]))  # 1 calibrates, 1 is held out, 2 to scan
    harmless = tmp_path / "harmless.json"
    harmless.write_text(json.dumps(instructions["harmless"][10:12]))
    store = tmp_path / "results.sqlite"
    argv = ["safety", "--harmful", str(harmful), "--harmless", str(harmless), "--store", str(store),
            "--calibration", "1", "--train", "2", "--test", "1", "--layers", "23",
            "--sahara-steps", "1", "--max-new-tokens", "4", "--no-verify", "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["top_heads"]) == 10 and all(h["layer"] == 23 for h in data["top_heads"])
    assert data["sahara"]["heads"][0][0] == 23

    from interp.store import Store

    runs = Store(store).list_runs(kind="safety")
    assert len(runs) == 1 and runs[0].status == "complete" and runs[0].detectors == ("safety",)
    stored = Store(store).latest_scores(qwen.model_id, "safety")
    assert stored.top(1)[0]["layer"] == 23
    assert stored.top(1)[0]["score"] == pytest.approx(data["top_heads"][0]["score"], rel=1e-5)
