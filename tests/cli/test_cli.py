"""The `interp` command line: models, load, runs, help, the dashboard command's checks."""

from __future__ import annotations

import json
import subprocess
import sys

from interp_cli.main import main


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("models", "load", "runs"):
        assert command in out


def test_models_lists_registry(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "qwen2.5-coder-0.5b-instruct" in out and "gemma-3-270m" in out


def test_load_prints_facts_and_ioi_check(smollm2, capsys):
    assert main(["load", "smollm2-135m", "--device", "cpu", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["facts"]["n_layers"] == 30
    assert data["ioi_check"]["top"][0]["token"] == " Mary"
    assert data["facts"]["sha256_verified"].startswith("b179c952")


def test_runs_on_an_empty_store(tmp_path, capsys):
    assert main(["runs", "--store", str(tmp_path / "s.sqlite")]) == 0
    assert "no runs" in capsys.readouterr().out


def test_unknown_model_is_an_error_without_traceback():
    result = subprocess.run([sys.executable, "-m", "interp_cli", "load", "nope-model"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown model 'nope-model'" in result.stderr and "Traceback" not in result.stderr


def test_cli_binds_localhost_by_default_and_checks_the_port(capsys):
    from interp_cli.main import build_parser, main

    args = build_parser().parse_args(["dashboard"])
    assert (args.host, args.port, args.model) == ("127.0.0.1", 8050, "smollm2-135m")
    assert main(["dashboard", "--port", "70000"]) == 2
    assert "not a TCP port" in capsys.readouterr().err
    assert main(["dashboard", "--model", "/no/such/model"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["dashboard", "--model", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


def test_sae_train_stores_an_saelens_folder_that_sae_list_shows(tiny_llama_dir, tmp_path, capsys):
    """`interp sae train` on a tiny random model: the SAE lands in the store in SAELens's layout
    and `interp sae list` shows it with its quality figures."""
    store = tmp_path / "results.sqlite"
    out = tmp_path / "report.json"
    assert main(["sae", "train", str(tiny_llama_dir), "--hook", "blocks.1.hook_resid_pre",
                 "--features", "64", "--k", "8", "--tokens", "2048", "--store", str(store),
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    folder = tmp_path / "saes" / report["run_id"]
    assert {p.name for p in folder.iterdir()} >= {"cfg.json", "sae_weights.safetensors"}
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_pre" and cfg["d_sae"] == 64
    assert report["l0"] <= 8 and 0 <= report["dead_fraction"] <= 1
    capsys.readouterr()
    assert main(["sae", "list", "--store", str(store)]) == 0
    listed = capsys.readouterr().out
    assert report["run_id"] in listed and "blocks.1.hook_resid_pre" in listed
