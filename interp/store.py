"""The results store: SQLite (WAL) for runs and head scores, safetensors files for big tensors.

A run goes `running` -> `complete` | `failed` | `cancelled`. Its head scores, artifacts and JSON
result are inserted in ONE transaction together with the `complete` status, so a reader sees a
run's results whole or not at all. A process killed half-way leaves a `running` row whose
process is gone: `list_runs` reports it as `incomplete`, and no result reader returns it.

    store = Store()                                     # $INTERP_CACHE/results.sqlite
    with store.run("scan", model.model_id, params, prompt_hash) as run:
        run.progress(0.5, "layer 15/30")
        run.add_scores(head_scores)
    store.latest_scores(model.model_id, "induction")   # -> HeadScores

Nothing here unpickles: tensors are safetensors, everything else JSON.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from interp.paths import default_store_path
from interp.scores import HeadScores

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,               -- scan | patch | circuit | safety | ...
    model_id TEXT NOT NULL,
    params TEXT NOT NULL,             -- JSON
    prompt_hash TEXT NOT NULL,
    status TEXT NOT NULL,             -- running | complete | failed | cancelled
    created_at REAL NOT NULL,
    finished_at REAL,
    error TEXT,
    progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    host TEXT,
    result TEXT                       -- JSON, written with the complete status
);
CREATE INDEX IF NOT EXISTS runs_by_model ON runs (model_id, kind, status, created_at);
CREATE TABLE IF NOT EXISTS detector_results (
    run_id TEXT NOT NULL REFERENCES runs(id),
    detector TEXT NOT NULL,
    params TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    info TEXT NOT NULL,
    verify TEXT,
    n_layers INTEGER NOT NULL,
    n_heads INTEGER NOT NULL,
    PRIMARY KEY (run_id, detector)
);
CREATE INDEX IF NOT EXISTS detector_results_by_detector ON detector_results (detector, run_id);
CREATE TABLE IF NOT EXISTS head_scores (
    run_id TEXT NOT NULL REFERENCES runs(id),
    detector TEXT NOT NULL,
    layer INTEGER NOT NULL,
    head INTEGER NOT NULL,
    score REAL NOT NULL,
    PRIMARY KEY (run_id, detector, layer, head)
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    path TEXT NOT NULL,               -- relative to the store's artifact directory
    PRIMARY KEY (run_id, name)
);
"""


class RunCancelled(Exception):
    """Raised inside a run when a cancel was requested (e.g. from the dashboard)."""


@dataclass(frozen=True)
class RunRecord:
    id: str
    kind: str
    model_id: str
    params: dict
    prompt_hash: str
    status: str  # running | complete | failed | cancelled | incomplete (running, process gone)
    created_at: float
    finished_at: float | None
    error: str | None
    progress: float
    message: str
    result: dict | None
    detectors: tuple[str, ...]

    def to_json(self) -> dict:
        return {**self.__dict__, "detectors": list(self.detectors)}


class Store:
    """A results store at `path` (default: the cache directory's results.sqlite)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.artifact_dir = self.path.with_suffix(".artifacts")
        with self._connect() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self):
        # One short-lived connection per operation: the dashboard's worker threads and a CLI
        # scan may use the same file at once; WAL lets readers proceed during a write.
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    # ---- writing -------------------------------------------------------------------------
    def start_run(self, kind: str, model_id: str, params: dict | None = None,
                  prompt_hash: str = "") -> "RunWriter":
        run_id = uuid.uuid4().hex[:16]
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs (id, kind, model_id, params, prompt_hash, status, created_at,"
                " pid, host) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                (run_id, kind, model_id, json.dumps(params or {}, sort_keys=True), prompt_hash,
                 time.time(), os.getpid(), socket.gethostname()),
            )
        return RunWriter(self, run_id)

    @contextmanager
    def run(self, kind: str, model_id: str, params: dict | None = None, prompt_hash: str = ""):
        """A run that completes when the block ends, fails (error kept) if it raises."""
        writer = self.start_run(kind, model_id, params, prompt_hash)
        try:
            yield writer
        except RunCancelled:
            writer.finish("cancelled", error="cancelled by the user")
            raise
        except BaseException as exc:
            writer.finish("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        else:
            writer.complete()

    def request_cancel(self, run_id: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))

    # ---- reading -------------------------------------------------------------------------
    def list_runs(self, model_id: str | None = None, kind: str | None = None,
                  status: str | None = None, limit: int = 200) -> list[RunRecord]:
        """Newest first. `status="complete"` gives only runs whose results are whole."""
        where, args = [], []
        for column, value in (("model_id", model_id), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if status is not None and status != "incomplete":
            where.append("status = ?")
            args.append(status if status != "running" else "running")
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at DESC LIMIT ?"
        with self._connect() as db:
            rows = db.execute(sql, (*args, limit)).fetchall()
            detectors = {}
            for row in rows:
                detectors[row["id"]] = tuple(r[0] for r in db.execute(
                    "SELECT detector FROM detector_results WHERE run_id = ? ORDER BY detector",
                    (row["id"],)))
        records = [self._record(row, detectors[row["id"]]) for row in rows]
        if status in ("running", "incomplete"):
            records = [r for r in records if r.status == status]
        return records

    def get_run(self, run_id: str) -> RunRecord:
        records = [r for r in self.list_runs(limit=1_000_000) if r.id == run_id]
        if not records:
            from interp.errors import InvalidInput

            raise InvalidInput(f"no run {run_id!r} in {self.path}; `interp runs` lists them")
        return records[0]

    def detectors_for(self, model_id: str) -> list[str]:
        """Detectors with at least one complete run for this model."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT DISTINCT d.detector FROM detector_results d JOIN runs r ON r.id = d.run_id"
                " WHERE r.model_id = ? AND r.status = 'complete' ORDER BY d.detector",
                (model_id,),
            ).fetchall()
        return [r[0] for r in rows]

    def latest_scores(self, model_id: str, detector: str) -> HeadScores | None:
        """The newest complete scores of `detector` on `model_id`, or None."""
        with self._connect() as db:
            row = db.execute(
                "SELECT d.run_id FROM detector_results d JOIN runs r ON r.id = d.run_id"
                " WHERE r.model_id = ? AND d.detector = ? AND r.status = 'complete'"
                " ORDER BY r.finished_at DESC LIMIT 1",
                (model_id, detector),
            ).fetchone()
        return None if row is None else self.head_scores(row[0], detector)

    def head_scores(self, run_id: str, detector: str) -> HeadScores:
        with self._connect() as db:
            run = db.execute("SELECT model_id, status FROM runs WHERE id = ?", (run_id,)).fetchone()
            meta = db.execute(
                "SELECT * FROM detector_results WHERE run_id = ? AND detector = ?", (run_id, detector)
            ).fetchone()
            if run is None or meta is None or run["status"] != "complete":
                from interp.errors import InvalidInput

                raise InvalidInput(f"run {run_id!r} has no complete scores for detector {detector!r}")
            rows = db.execute(
                "SELECT layer, head, score FROM head_scores WHERE run_id = ? AND detector = ?",
                (run_id, detector),
            ).fetchall()
        scores = torch.full((meta["n_layers"], meta["n_heads"]), float("nan"))
        for layer, head, score in rows:
            scores[layer, head] = score
        details = self.load_artifact(run_id, f"details-{detector}") if self.has_artifact(
            run_id, f"details-{detector}") else {}
        return HeadScores(
            detector=detector, scores=scores, model_id=run["model_id"],
            params=json.loads(meta["params"]), prompt_hash=meta["prompt_hash"], details=details,
            info=json.loads(meta["info"]), verify=json.loads(meta["verify"]) if meta["verify"] else None,
        )

    def has_artifact(self, run_id: str, name: str) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM artifacts WHERE run_id = ? AND name = ?",
                              (run_id, name)).fetchone() is not None

    def load_artifact(self, run_id: str, name: str) -> dict[str, torch.Tensor]:
        with self._connect() as db:
            row = db.execute("SELECT path FROM artifacts WHERE run_id = ? AND name = ?",
                             (run_id, name)).fetchone()
        if row is None:
            from interp.errors import InvalidInput

            raise InvalidInput(f"run {run_id!r} has no artifact {name!r}")
        return load_file(self.artifact_dir / row["path"])

    def _record(self, row: sqlite3.Row, detectors: tuple[str, ...]) -> RunRecord:
        status = row["status"]
        if status == "running" and not _process_alive(row["pid"], row["host"]):
            status = "incomplete"
        return RunRecord(
            id=row["id"], kind=row["kind"], model_id=row["model_id"],
            params=json.loads(row["params"]), prompt_hash=row["prompt_hash"], status=status,
            created_at=row["created_at"], finished_at=row["finished_at"], error=row["error"],
            progress=row["progress"], message=row["message"],
            result=json.loads(row["result"]) if row["result"] else None, detectors=detectors,
        )


class RunWriter:
    """Collects a run's results; nothing of them is visible until `complete()`."""

    def __init__(self, store: Store, run_id: str):
        self.store = store
        self.id = run_id
        self._scores: list[HeadScores] = []
        self._artifacts: dict[str, str] = {}
        self._result: dict | None = None

    def progress(self, fraction: float, message: str = "") -> None:
        """Record progress (0..1); raises RunCancelled if a cancel was requested."""
        with self.store._connect() as db:
            db.execute("UPDATE runs SET progress = ?, message = ? WHERE id = ?",
                       (float(fraction), message, self.id))
            cancel = db.execute("SELECT cancel_requested FROM runs WHERE id = ?",
                                (self.id,)).fetchone()[0]
        if cancel:
            raise RunCancelled(self.id)

    def add_scores(self, scores: HeadScores) -> None:
        self._scores.append(scores)
        if scores.details:
            self.add_artifact(f"details-{scores.detector}", scores.details)

    def add_artifact(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        """Write tensors now (to a temp file renamed into place); referenced at completion."""
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"artifact name {name!r}: use letters, digits, '-', '_', '.'")
        relative = f"{self.id}/{name}.safetensors"
        target = self.store.artifact_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, target)
        self._artifacts[name] = relative

    def set_result(self, result: dict) -> None:
        """A JSON-able summary (a circuit, a patching result's metadata, ...)."""
        self._result = json.loads(json.dumps(result))  # fail now, not at completion

    def complete(self) -> None:
        with self.store._connect() as db:
            for s in self._scores:
                db.execute(
                    "INSERT INTO detector_results VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.id, s.detector, json.dumps(s.params, sort_keys=True), s.prompt_hash,
                     json.dumps(s.info), json.dumps(s.verify) if s.verify is not None else None,
                     s.n_layers, s.n_heads),
                )
                db.executemany(
                    "INSERT INTO head_scores VALUES (?, ?, ?, ?, ?)",
                    [(self.id, s.detector, layer, head, float(s.scores[layer, head]))
                     for layer in range(s.n_layers) for head in range(s.n_heads)],
                )
            db.executemany("INSERT INTO artifacts VALUES (?, ?, ?)",
                           [(self.id, name, path) for name, path in self._artifacts.items()])
            db.execute(
                "UPDATE runs SET status = 'complete', finished_at = ?, progress = 1, result = ?"
                " WHERE id = ?",
                (time.time(), json.dumps(self._result) if self._result is not None else None, self.id),
            )

    def finish(self, status: str, error: str | None = None) -> None:
        with self.store._connect() as db:
            db.execute("UPDATE runs SET status = ?, finished_at = ?, error = ? WHERE id = ?",
                       (status, time.time(), error, self.id))


def _process_alive(pid: int | None, host: str | None) -> bool:
    if pid is None:
        return False
    if host != socket.gethostname():
        return True  # cannot tell for another machine; trust the row
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
