"""Deleting runs: rows and the files a run owns go; a running run is refused."""

from __future__ import annotations

import pytest
import torch

from interp.errors import InvalidInput
from interp.scores import HeadScores


def test_delete_run_removes_its_rows_and_files(tmp_store):
    with tmp_store.run("scan", "m@1", {"detectors": {"sink": {}}}) as run:
        run.add_scores(HeadScores("sink", torch.rand(2, 3), "m@1", details={"x": torch.ones(2)}))
    with tmp_store.run("scan", "m@1", {"detectors": {"sink": {}}}) as kept:
        kept.add_scores(HeadScores("sink", torch.rand(2, 3), "m@1"))
    with tmp_store.run("sae", "m@1", {}) as sae:  # as circuits.sae.io.store_sae lays it out
        folder = tmp_store.path.parent / "saes" / sae.id
        folder.mkdir(parents=True)
        (folder / "cfg.json").write_text("{}")
        sae.set_result({"folder": f"saes/{sae.id}"})
    artifacts = tmp_store.artifact_dir / run.id
    assert artifacts.is_dir()

    removed = tmp_store.delete_run(run.id)
    assert artifacts in removed and not artifacts.exists()
    assert [r.id for r in tmp_store.list_runs(kind="scan")] == [kept.id]
    assert torch.equal(tmp_store.latest_scores("m@1", "sink").scores,
                       tmp_store.head_scores(kept.id, "sink").scores)
    tmp_store.delete_run(sae.id)
    assert not folder.exists() and (tmp_store.path.parent / "saes").is_dir()
    with pytest.raises(InvalidInput, match="no run"):
        tmp_store.delete_run(run.id)


def test_a_running_run_is_not_deleted(tmp_store):
    writer = tmp_store.start_run("scan", "m@1")
    with pytest.raises(InvalidInput, match="cancel it first"):
        tmp_store.delete_run(writer.id)


def test_interp_runs_delete(tmp_store, capsys):
    import interp_cli.main as cli

    with tmp_store.run("patch", "m@1", {}) as run:
        pass
    assert cli.main(["runs", "--store", str(tmp_store.path), "--delete", run.id]) == 0
    assert f"deleted run {run.id}" in capsys.readouterr().out
    assert tmp_store.list_runs() == []
