"""The results store: round trips, and runs that fail, are cancelled or are killed half-way."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from interp.errors import InvalidInput
from interp.scores import HeadScores
from interp.store import RunCancelled, Store


def _scores(detector="induction", value=0.0):
    scores = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 12 + value
    return HeadScores(detector=detector, scores=scores, model_id="m@1", params={"n": 3},
                      prompt_hash="abc", details={"per_prompt": torch.ones(2, 3, 4)},
                      info={"sinks": [{"position": 0, "token": "<s>"}]}, verify={"ratio": 2.0})


def test_round_trip(tmp_store):
    with tmp_store.run("scan", "m@1", {"detectors": ["induction"]}, "abc") as run:
        run.progress(0.5, "half")
        run.add_scores(_scores())
        run.add_artifact("extra", {"x": torch.arange(5)})
        run.set_result({"top": [1, 2]})
    back = tmp_store.latest_scores("m@1", "induction")
    original = _scores()
    assert torch.equal(back.scores, original.scores)
    assert back.params == original.params and back.info == original.info and back.verify == original.verify
    assert torch.equal(back.details["per_prompt"], original.details["per_prompt"])
    [record] = tmp_store.list_runs(model_id="m@1")
    assert record.status == "complete" and record.detectors == ("induction",)
    assert record.result == {"top": [1, 2]} and record.progress == 1
    assert torch.equal(tmp_store.load_artifact(record.id, "extra")["x"], torch.arange(5))
    assert tmp_store.detectors_for("m@1") == ["induction"]


def test_latest_scores_is_the_newest_complete_run(tmp_store):
    for value in (0.0, 1.0):
        with tmp_store.run("scan", "m@1") as run:
            run.add_scores(_scores(value=value))
    assert float(tmp_store.latest_scores("m@1", "induction").scores[0, 0]) == 1.0
    assert tmp_store.latest_scores("m@1", "sink") is None
    assert tmp_store.latest_scores("other@2", "induction") is None


def test_failed_run_keeps_its_error_and_no_results(tmp_store):
    with pytest.raises(RuntimeError):
        with tmp_store.run("scan", "m@1") as run:
            run.add_scores(_scores())
            raise RuntimeError("boom")
    [record] = tmp_store.list_runs()
    assert record.status == "failed" and "boom" in record.error
    assert tmp_store.latest_scores("m@1", "induction") is None
    with pytest.raises(InvalidInput):
        tmp_store.head_scores(record.id, "induction")


def test_cancel_request_stops_the_run(tmp_store):
    with pytest.raises(RunCancelled):
        with tmp_store.run("scan", "m@1") as run:
            tmp_store.request_cancel(run.id)
            run.progress(0.1)
    assert tmp_store.list_runs()[0].status == "cancelled"


def test_killed_run_reads_back_as_incomplete(tmp_path):
    """A process killed after writing scores but before completing leaves no visible result."""
    path = tmp_path / "r.sqlite"
    code = textwrap.dedent(f"""
        import os, torch
        from interp.store import Store
        from interp.scores import HeadScores
        run = Store({str(path)!r}).start_run("scan", "m@1")
        run.add_scores(HeadScores("induction", torch.zeros(2, 2), "m@1",
                                  details={{"d": torch.ones(1)}}))
        run.progress(0.7, "almost")
        os._exit(9)  # killed: no completion, no cleanup
    """)
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    store = Store(path)
    [record] = store.list_runs()
    assert record.status == "incomplete" and record.progress == pytest.approx(0.7)
    assert store.latest_scores("m@1", "induction") is None
    assert store.list_runs(status="complete") == []
