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


def _filled(store):
    """Three runs: two complete scans of m@1 and m@2 (with detectors) and a failed patch."""
    with store.run("scan", "m@1") as run:
        run.add_scores(_scores("sink"))
        run.add_scores(_scores("induction"))
    with store.run("scan", "m@2") as run:
        run.add_scores(_scores("induction"))
    with pytest.raises(RuntimeError):
        with store.run("patch", "m@1"):
            raise RuntimeError("boom")
    return store


def test_list_runs_filters_in_one_query(tmp_store, monkeypatch):
    """The filters are SQL (WHERE) and the detectors come from a join: one statement however
    many runs match, where there used to be one per run."""
    store = _filled(tmp_store)
    statements = []
    connect = Store._connect.__wrapped__  # the generator under @contextmanager

    def traced(self):
        for db in connect(self):
            db.set_trace_callback(statements.append)
            yield db

    monkeypatch.setattr(Store, "_connect", __import__("contextlib").contextmanager(traced))
    runs = store.list_runs()
    assert [r.kind for r in runs] == ["patch", "scan", "scan"]  # newest first
    assert runs[2].detectors == ("induction", "sink") and runs[0].detectors == ()
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
    assert [r.model_id for r in store.list_runs(kind="scan")] == ["m@2", "m@1"]
    assert [r.kind for r in store.list_runs(model_id="m@1", status="complete")] == ["scan"]
    assert [r.status for r in store.list_runs(status="failed")] == ["failed"]
    assert store.list_runs(model_id="m@1", kind="scan", limit=1)[0].detectors == ("induction", "sink")
    assert store.list_runs(status="incomplete") == [] and store.list_runs(model_id="nope") == []


def test_get_run_asks_for_that_run(tmp_store):
    store = _filled(tmp_store)
    newest_scan = store.list_runs(kind="scan")[0]
    assert store.get_run(newest_scan.id) == newest_scan
    with pytest.raises(InvalidInput, match="no run 'nope'.*interp runs"):
        store.get_run("nope")


@pytest.mark.parametrize("content, message", [
    (b"just some notes\n", "not a results store \\(not an SQLite database\\)"),
    ("sqlite", "an SQLite database but not a results store \\(its tables: songs\\)"),
    ("folder", "is a folder, not a results store"),
])
def test_a_file_that_is_not_a_store_is_refused_with_the_fix(tmp_path, content, message):
    import sqlite3

    path = tmp_path / "results.sqlite"
    if content == "sqlite":
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE songs (title TEXT)")
        db.close()
    elif content == "folder":
        path.mkdir()
    else:
        path.write_bytes(content)
    before = path.read_bytes() if path.is_file() else None
    for read_only in (False, True):
        with pytest.raises(InvalidInput, match=message) as error:
            Store(path, read_only=read_only)
        assert str(path) in str(error.value) and "--store" in str(error.value)
    assert (path.read_bytes() if path.is_file() else None) == before  # left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"]


def test_read_only_store_creates_nothing(tmp_path):
    missing = tmp_path / "no" / "such" / "results.sqlite"
    with pytest.raises(InvalidInput, match="does not exist"):
        Store(missing, read_only=True)
    assert list(tmp_path.iterdir()) == []
    path = tmp_path / "results.sqlite"
    _filled(Store(path))
    files = sorted(p.name for p in tmp_path.iterdir())
    reader = Store(path, read_only=True)
    assert len(reader.list_runs()) == 3 and reader.latest_scores("m@1", "sink") is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == files  # no -wal / -shm left behind
    with pytest.raises(Exception, match="readonly|read-only|query_only"):
        reader.request_cancel(reader.list_runs()[0].id)
    (tmp_path / "empty.sqlite").write_bytes(b"")
    with pytest.raises(InvalidInput, match="is empty: not a results store yet"):
        Store(tmp_path / "empty.sqlite", read_only=True)
    assert Store(tmp_path / "empty.sqlite").list_runs() == []  # a writer makes it a new store


def test_importing_the_store_imports_no_torch():
    code = "import sys, interp.store; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
