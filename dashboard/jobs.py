"""Background jobs inside the dashboard server: scans (and patching) launched from the pages.

One worker thread runs one job at a time (the model is shared, and a CPU machine has no cores
to spare for two). A job is a library call that records itself as an ordinary store run, e.g.
`interp.heads.scan.run_scan(model, ..., store=store)`: it writes its progress with
`run.progress`, and its results become visible in the store, whole, when it completes (a scan
opens one run per detector, so its heatmaps fill one by one).

Cancel cannot wedge the server: the job runs inside `interp.forward.stop_when(job.stop.is_set)`,
so every forward it makes checks the flag before each transformer block and raises `Cancelled`
(a `RunCancelled`) at once, wherever the job is; the model lock is then released. The pages read all of that from
the store, so a scan launched from the CLI looks exactly like one launched here.

Jobs that have not started a run yet exist only here ("queued", or "failed" before their run
began, e.g. when the model failed to load); a queued job can be cancelled outright.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from interp.store import RunCancelled

from dashboard.state import AppState

log = logging.getLogger(__name__)

# (model, store) -> anything; the task opens its own store run (see the module doc).
Task = Callable[[object, object], object]


@dataclass
class Job:
    id: str
    kind: str  # the store run kind it will write: "scan", "patch", ...
    label: str  # what the user asked for, e.g. "previous_token (n_prompts=2)"
    submitted_at: float = field(default_factory=time.time)
    state: str = "queued"  # queued | running | complete | failed | cancelled
    run_id: str | None = None  # the run it is writing now (the last one, once done)
    run_ids: list[str] = field(default_factory=list)  # every run it opened (one per detector)
    error: str | None = None
    future: Future | None = None
    # Set by Cancel; every forward of the job polls it before each block (interp.forward.stop_when)
    stop: threading.Event = field(default_factory=threading.Event)
    parts: list[str] = field(default_factory=list)  # e.g. the detectors it scans, in order
    model_id: str | None = None  # the model it was started for, when one was named


class _RecordingStore:
    """The app's store, except that opening a run tells the job its run id (so the page can
    show and cancel the run as soon as it exists)."""

    def __init__(self, store, job: Job):
        self._store, self._job = store, job

    def __getattr__(self, name):
        return getattr(self._store, name)

    @contextmanager
    def run(self, *args, **kwargs):
        with self._store.run(*args, **kwargs) as writer:
            self._job.run_id, self._job.state = writer.id, "running"
            self._job.run_ids.append(writer.id)
            yield writer


class JobRunner:
    """Runs jobs one at a time in a worker thread: `submit`, `cancel`, `without_run`."""

    def __init__(self, state: AppState):
        self.state = state
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, kind: str, label: str, task: Task, parts: list[str] | None = None,
               model_id: str | None = None) -> Job:
        job = Job(id=uuid.uuid4().hex[:12], kind=kind, label=label, parts=list(parts or []),
                  model_id=model_id)
        with self._lock:
            self._jobs[job.id] = job
        job.future = self._executor.submit(self._run, job, task)
        return job

    def _run(self, job: Job, task: Task) -> None:
        from interp.forward import stop_when  # torch: imported by the worker, not at start-up

        if job.state == "cancelled":
            return
        try:
            with self.state.models.use(timeout=None, purpose=f"{job.kind} {job.label}") as model:
                if job.state == "cancelled" or job.stop.is_set():  # cancelled while waiting
                    job.state = "cancelled"
                    return
                with stop_when(job.stop.is_set):
                    task(model, _RecordingStore(self.state.store, job))
            job.state = "complete"
        except RunCancelled:
            job.state = "cancelled"
        except Exception as exc:  # the store keeps the error of a run; the page shows it
            log.warning("%s %s failed: %s", job.kind, job.label, exc)
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"

    def cancel(self, job_or_run_id: str) -> bool:
        """Cancel a queued job at once; stop a running one (given by its id or any of its
        runs' ids) inside its current forward, within one transformer block.

        A run started elsewhere (the CLI on the same store) is asked to stop through the store;
        `run_scan` polls that between blocks too."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            if job.id != job_or_run_id and job_or_run_id not in job.run_ids:
                continue
            job.stop.set()
            if job.state == "queued" and job.run_id is None:
                job.state = "cancelled"
                if job.future is not None:
                    job.future.cancel()
            if job.run_id is not None:
                self.state.store.request_cancel(job.run_id)
            return True
        # A running run, whether started here or by the CLI on the same store.
        self.state.store.request_cancel(job_or_run_id)
        return True

    def active(self) -> list[Job]:
        """Jobs queued or running, oldest first."""
        with self._lock:
            return [j for j in self._jobs.values() if j.state in ("queued", "running")]

    def without_run(self, kind: str | None = None) -> list[Job]:
        """Jobs the store does not know: queued ones, and ones that failed before their run
        started. Oldest first."""
        with self._lock:
            return [j for j in self._jobs.values()
                    if j.run_id is None and j.state in ("queued", "failed")
                    and (kind is None or j.kind == kind)]

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> Job | None:
        job = self.get(job_id)
        if job is not None and job.future is not None:
            try:
                job.future.result(timeout)
            except Exception:  # the job records its own failure
                pass
        return job

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
