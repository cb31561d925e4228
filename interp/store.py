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

Nothing here unpickles: tensors are safetensors, everything else JSON. Importing this module
imports no torch (torch loads when scores or artifacts are read or written), so store-only
commands (`interp runs`) answer at once. `Store(path, read_only=True)` opens an existing store
and never writes; a file that is not a results store is refused with the fix.
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

from typing import TYPE_CHECKING

from interp.errors import InvalidInput
from interp.paths import default_store_path

if TYPE_CHECKING:
    import torch

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
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
# Columns a `runs` table must have for the file to be read as a results store.
RUN_COLUMNS = {"id", "kind", "model_id", "params", "status", "created_at", "result"}
# Separates the detector names GROUP_CONCAT joins (a character no detector name contains).
_SEPARATOR = "\x1f"


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
    """A results store at `path` (default: the cache directory's results.sqlite).

    read_only: open an existing store and never write to it (nor create it, its folder or
        anything else); a missing file is InvalidInput. Otherwise the store (and its folder) is
        created on first use.
    A file that exists but is not a results store is InvalidInput naming it, in both modes.
    """

    def __init__(self, path: str | Path | None = None, *, read_only: bool = False):
        self.path = Path(path).expanduser() if path else default_store_path(create=not read_only)
        self.read_only = read_only
        self.artifact_dir = self.path.with_suffix(".artifacts")
        if self.path.exists():
            if not _check_is_store(self.path) and read_only:
                raise InvalidInput(f"{self.path} is empty: not a results store yet; {_STORE_FIX}")
        elif read_only:
            raise InvalidInput(f"no results store at {self.path}: the file does not exist. Check "
                               "the path; a scan (`interp scan --store PATH`) creates one")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.executescript(SCHEMA)

    @contextmanager
    def _connect(self):
        # One short-lived connection per operation: the dashboard's worker threads and a CLI
        # scan may use the same file at once; WAL lets readers proceed during a write. A
        # read-only store uses an ordinary connection that refuses writes (query_only): SQLite's
        # mode=ro would leave the -wal and -shm files behind.
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA query_only=ON" if self.read_only else "PRAGMA journal_mode=WAL")
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

    def cancel_requested(self, run_id: str) -> bool:
        """Has `request_cancel(run_id)` been called?"""
        with self._connect() as db:
            row = db.execute("SELECT cancel_requested FROM runs WHERE id = ?", (run_id,)).fetchone()
        return bool(row and row[0])

    def delete_run(self, run_id: str) -> list[Path]:
        """Delete a run: its rows (scores, detector results, artifacts) and the files it owns
        (its artifact folder, and the folder its result names as "folder", relative to the
        store's folder, e.g. an SAE's saes/<run id>/). A running run must be cancelled first.
        Returns the folders removed."""
        import shutil

        if self.read_only:
            raise InvalidInput(f"{self.path} is open read-only; open it writable to delete runs")
        record = self.get_run(run_id)
        if record.status == "running":
            raise InvalidInput(f"run {run_id} is still running: cancel it first, then delete it")
        folders = [self.artifact_dir / run_id]
        named = (record.result or {}).get("folder") if isinstance(record.result, dict) else None
        if isinstance(named, str) and named:
            folder = (self.path.parent / named).resolve()
            # Only a folder inside the store's folder and named after the run: never anything
            # a malformed result could point at.
            if folder.name == run_id and self.path.parent.resolve() in folder.parents:
                folders.append(folder)
        with self._connect() as db:
            for table in ("head_scores", "detector_results", "artifacts"):
                db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        removed = []
        for folder in folders:
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed

    # ---- reading -------------------------------------------------------------------------
    def list_runs(self, model_id: str | None = None, kind: str | None = None,
                  status: str | None = None, limit: int = 200) -> list[RunRecord]:
        """Newest first. `status="complete"` gives only runs whose results are whole;
        "incomplete" gives the running rows whose process is gone, "running" the others."""
        where, args = [], []
        for column, value in (("model_id", model_id), ("kind", kind)):
            if value is not None:
                where.append(f"runs.{column} = ?")
                args.append(value)
        if status is not None:  # an incomplete run is a `running` row whose process is gone
            where.append("runs.status = ?")
            args.append("running" if status == "incomplete" else status)
        records = self._select_runs(" AND ".join(where), args, limit)
        if status in ("running", "incomplete"):
            records = [r for r in records if r.status == status]
        return records

    def get_run(self, run_id: str) -> RunRecord:
        records = self._select_runs("runs.id = ?", [run_id], 1)
        if not records:
            raise InvalidInput(f"no run {run_id!r} in {self.path}; `interp runs` lists them")
        return records[0]

    def _select_runs(self, where: str, args: list, limit: int) -> list[RunRecord]:
        """Runs matching the SQL condition `where`, newest first, each with its detectors (one
        query: the detectors come from a join, not a query per run)."""
        sql = ("SELECT runs.*, GROUP_CONCAT(d.detector, ?) AS detector_names"
               " FROM runs LEFT JOIN detector_results d ON d.run_id = runs.id"
               + (f" WHERE {where}" if where else "")
               + " GROUP BY runs.id ORDER BY runs.created_at DESC LIMIT ?")
        with self._connect() as db:
            rows = db.execute(sql, (_SEPARATOR, *args, limit)).fetchall()
        return [self._record(row, tuple(sorted(filter(None, (row["detector_names"] or "").split(
            _SEPARATOR))))) for row in rows]

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
        import torch

        from interp.scores import HeadScores

        with self._connect() as db:
            run = db.execute("SELECT model_id, status FROM runs WHERE id = ?", (run_id,)).fetchone()
            meta = db.execute(
                "SELECT * FROM detector_results WHERE run_id = ? AND detector = ?", (run_id, detector)
            ).fetchone()
            if run is None or meta is None or run["status"] != "complete":
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
        from safetensors.torch import load_file

        with self._connect() as db:
            row = db.execute("SELECT path FROM artifacts WHERE run_id = ? AND name = ?",
                             (run_id, name)).fetchone()
        if row is None:
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
        from safetensors.torch import save_file

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


_STORE_FIX = ("point --store at a results store that interp wrote (default: "
              "$INTERP_CACHE/results.sqlite), or at a path that does not exist yet to start a new one")


def _check_is_store(path: Path) -> bool:
    """Refuse a file that is not a results store before anything reads or writes it: not
    SQLite at all, or an SQLite database of something else. Returns False for an empty file or
    an empty database (a writer makes it a new store), True for a results store."""
    if path.is_dir():
        raise InvalidInput(f"{path} is a folder, not a results store; {_STORE_FIX}")
    try:
        with open(path, "rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise InvalidInput(f"cannot read the results store {path}: {exc.strerror}") from None
    if not header:
        return False
    if header != SQLITE_HEADER:
        raise InvalidInput(f"{path} is not a results store (not an SQLite database); {_STORE_FIX}")
    try:
        db = sqlite3.connect(path, timeout=30)
        try:
            db.execute("PRAGMA query_only=ON")
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            columns = {r[1] for r in db.execute("PRAGMA table_info(runs)")}
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise InvalidInput(f"{path} is not a readable results store ({exc}); {_STORE_FIX}") from None
    if tables and not RUN_COLUMNS <= columns:
        raise InvalidInput(f"{path} is an SQLite database but not a results store (its tables: "
                           f"{', '.join(sorted(tables))}); {_STORE_FIX}")
    return bool(tables)


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
