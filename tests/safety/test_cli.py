"""`interp safety`: bad input fails fast with a clear message; a tiny real run lands in the store."""

from __future__ import annotations

import json

import pytest

from interp_cli.main import main


@pytest.mark.parametrize("argv,message", [
    (["--train", "0"], "--train must be at least 1"),
    (["--layers", "eight"], "--layers must be integers"),
    (["--ks", "1,0"], "--ks must be positive integers"),
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
            "--sahara-steps", "1", "--max-new-tokens", "4", "--no-verify", "--json",
            "--rank-by", "refusal_logodds"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["top_heads"]) == 10
    # heads that were not scanned score 0 ("no effect"); every head that lowers refusal is scanned
    lowering = [h for h in data["top_heads"] if h["score"] > 0]
    assert lowering and all(h["layer"] == 23 for h in lowering)
    # ranked by the directional score; both scores' tops are in the result
    assert data["rank_by"] == "refusal_logodds" and data["scores"]["params"]["rank_by"] == "refusal_logodds"
    def heads(entries):
        return [(h["layer"], h["head"]) for h in entries]
    assert heads(data["top_heads"]) == heads(data["top_by"]["refusal_logodds"])
    assert heads(data["top_by"]["refusal_logodds"]) != heads(data["top_by"]["ships"])
    assert data["sahara"]["heads"][0][0] == 23
    assert all(h["layer"] == 23 for h in data["top_by"]["ships"])

    from interp.store import Store

    runs = Store(store).list_runs(kind="safety")
    assert len(runs) == 1 and runs[0].status == "complete" and runs[0].detectors == ("safety",)
    stored = Store(store).latest_scores(qwen.model_id, "safety")
    assert stored.top(1)[0]["layer"] == 23
    assert stored.top(1)[0]["score"] == pytest.approx(data["top_heads"][0]["score"], rel=1e-5)


def test_the_report_prints_every_head_set_and_says_where_ablation_does_not_lower_refusal(capsys):
    """The printed check, from a result shaped like `SAFETY.summary` after `causal_check`."""
    from interp.heads.safety.check import _summary_row, _verdict
    from interp_cli.commands.safety import print_report

    def condition(heads, generation, logodds):
        return {"heads": heads, "harmful": {"refusal_rate_generation": generation,
                                            "refusal_rate_logodds": logodds}}

    base = {"n": 24, "refusal_rate_generation": 0.625, "refusal_rate_logodds": 0.5}
    randoms = [condition([[1, 1], [2, 2], [3, 3]], g, 0.5) for g in (0.58, 0.62, 0.60)]
    check = {}
    for name, heads, rate, logodds in (("ships", [[22, 2], [11, 3], [11, 7]], 0.708, 0.55),
                                       ("refusal_logodds", [[8, 3], [12, 2], [10, 7]], 0.25, 0.3)):
        row = _summary_row(condition(heads, rate, logodds), randoms, base, 24)
        row["verdict"] = _verdict(name, 3, row, "query_scale")
        check[name] = {"top3": row}
    top = [{"layer": 22, "head": 2, "score": 0.04}]
    result = {"model_id": "qwen", "n_train": 8, "scan_seconds": 1.0, "rank_by": "ships",
              "top_heads": top, "top_by": {"ships": top,
                                           "refusal_logodds": [{"layer": 8, "head": 3, "score": 0.9}]},
              "baseline": base, "causal_check": check, "check_method": "query_scale",
              "verdicts": [check[n]["top3"]["verdict"] for n in check]}
    print_report(result)
    out = capsys.readouterr().out
    assert "L22H2 0.0400" in out and "L8H3 0.9000" in out          # both rankings
    assert "ships top3" in out and "refusal_logodds top3" in out
    assert "NO/NO" in out and "yes/yes" in out
    assert "top-3 ships (L22H2 L11H3 L11H7), query_scale: generation refusal 0.71 vs baseline " \
           "0.62" in out and "does NOT lower refusal" in out
    assert "LOWERS refusal" in out
