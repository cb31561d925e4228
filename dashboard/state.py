"""Server-side state shared by every page: the results store, the one loaded model, the jobs.

A Dash server answers callbacks on many threads at once. Two rules keep that safe:

- ONE model per process, loaded in a background thread (the server answers pages meanwhile,
  from the store). Loading another model replaces it; loads never run two at a time.
- Forward passes take the model's `compute` lock. TransformerLens hooks and the workbench's
  attention sessions are installed on the shared modules, so two forwards at once would see
  each other's hooks. A scan holds the lock for its whole run; interactive requests wait a
  little and otherwise tell the user the model is busy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from interp.store import Store

log = logging.getLogger(__name__)

# After the first page was answered, the start-up load waits this long more: the browser
# draws the page then, often on the same few CPU cores.
DRAW_GRACE_S = 1.0


class ModelNotReady(RuntimeError):
    """The model is loading, failed to load, or none was asked for."""


class ModelBusy(RuntimeError):
    """Another forward (usually a scan) holds the model."""


def _default_loader(name: str):
    from interp.models import load_model

    return load_model(name, show_progress=False)


class ModelHolder:
    """The process's one loaded model: `load_async(name)`, `status()`, `use(timeout)`."""

    def __init__(self, loader: Callable[[str], object] = _default_loader):
        self._loader = loader
        self._state_lock = threading.Lock()
        self._load_lock = threading.Lock()  # one load at a time
        self.compute = threading.Lock()  # one forward pass at a time (see module doc)
        self._model = None
        self._name: str | None = None  # the name being loaded or loaded
        self._state = "none"  # none | loading | ready | failed
        self._error: str | None = None
        self._ready = threading.Event()
        self._busy_with = ""  # what holds `compute`, for the user
        # The last load that failed while another model stayed loaded: {"name", "error"}.
        self._last_failure: dict | None = None
        self._on_ready: list[Callable[[object], None]] = []  # called with each model loaded

    def on_ready(self, callback: Callable[[object], None]) -> None:
        """Call `callback(model)` whenever a model finished loading (or was set)."""
        self._on_ready.append(callback)

    def _loaded(self, model) -> None:
        for callback in list(self._on_ready):
            try:
                callback(model)
            except Exception:  # a hook must never break loading
                log.exception("on_ready callback failed")

    def load_async(self, name: str, after: threading.Event | None = None,
                   max_wait: float = 0.0) -> bool:
        """Start loading `name` in the background; False if a load is already running.

        after, max_wait: begin only once `after` is set, or after `max_wait` seconds. At start-up
        the load waits for the first page to be drawn: loading competes for the CPU (and the
        GIL), and the first page needs only the store.
        """
        with self._state_lock:
            if self._state == "loading":
                return False
            if self._state == "ready" and self._name == name:
                return True
            self._state, self._name, self._error = "loading", name, None
            self._last_failure = None
            self._ready.clear()
        threading.Thread(target=self._load, args=(name, after, max_wait), name=f"load-{name}",
                         daemon=True).start()
        return True

    def _load(self, name: str, after: threading.Event | None = None, max_wait: float = 0.0) -> None:
        if after is not None and after.wait(max_wait):
            time.sleep(DRAW_GRACE_S)  # the browser, on the same CPUs, is drawing that page
        with self._load_lock:
            start = time.perf_counter()
            try:
                model = self._loader(name)
            except Exception as exc:  # shown on the page; the server keeps running
                log.warning("loading %s failed: %s", name, exc)
                error = f"{type(exc).__name__}: {exc}"
                with self._state_lock:
                    if self._model is not None:
                        # The working model stays loaded: a bad path must not cost the user
                        # the model they were using (nor make the picker retry the bad path).
                        self._state, self._name, self._error = "ready", self._model.name, None
                        self._last_failure = {"name": name, "error": error}
                    else:
                        self._state, self._error = "failed", error
                self._ready.set()
                return
            # Swap under the compute lock: a running scan keeps the model it started with.
            with self.compute, self._state_lock:
                self._model, self._state = model, "ready"
            log.info("loaded %s in %.1f s", name, time.perf_counter() - start)
            self._ready.set()
        self._loaded(model)

    def set_model(self, model) -> None:
        """Use an already loaded model (tests, notebooks)."""
        with self.compute, self._state_lock:
            self._model, self._name, self._state, self._error = model, model.name, "ready", None
            self._last_failure = None
        self._ready.set()
        self._loaded(model)

    def status(self) -> dict:
        """{"state": none|loading|ready|failed, "name", "error", "model_id", "busy",
        "last_failure": {"name", "error"} of a failed load that left this model loaded, or None}."""
        with self._state_lock:
            model = self._model if self._state == "ready" else None
            return {"state": self._state, "name": self._name, "error": self._error,
                    "model_id": model.model_id if model is not None else None,
                    "busy": self._busy_with if self.compute.locked() else "",
                    "last_failure": self._last_failure}

    @property
    def model(self):
        """The loaded model, or None while loading / after a failure."""
        with self._state_lock:
            return self._model if self._state == "ready" else None

    def wait_ready(self, timeout: float | None = None):
        """Block until a load finished (ready or failed); returns the model or None."""
        self._ready.wait(timeout)
        return self.model

    @contextmanager
    def use(self, timeout: float | None = 5.0, purpose: str = "") -> Iterator[object]:
        """Hold the model for one piece of compute. Raises ModelNotReady / ModelBusy."""
        model = self.wait_ready(timeout) if self._state == "loading" else self.model
        if model is None:
            status = self.status()
            if status["state"] == "loading":
                raise ModelNotReady(f"the model {status['name']} is still loading; try again "
                                    "in a few seconds")
            if status["state"] == "failed":
                raise ModelNotReady(f"the model {status['name']} failed to load: {status['error']}")
            raise ModelNotReady("no model is loaded: pick one on the Model page")
        if not self.compute.acquire(timeout=-1 if timeout is None else timeout):
            raise ModelBusy(f"the model is busy ({self._busy_with or 'another request'}); "
                            "this will run when it is free")
        try:
            self._busy_with = purpose
            # The model may have been swapped while we waited for the lock.
            yield self.model
        finally:
            self._busy_with = ""
            self.compute.release()


class LRU:
    """A small thread-safe least-recently-used cache (patterns, scores of complete runs).

    size: at most this many entries; weigh(value) and max_weight (optional): also at most this
    much in total, e.g. bytes of attention patterns.
    """

    def __init__(self, size: int, weigh: Callable[[object], int] | None = None,
                 max_weight: int | None = None):
        self.size, self.weigh, self.max_weight = size, weigh, max_weight
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def get(self, key):
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size or (len(self._items) > 1 and self._over_weight()):
                self._items.popitem(last=False)

    def _over_weight(self) -> bool:
        if self.weigh is None or self.max_weight is None:
            return False
        return sum(self.weigh(v) for v in self._items.values()) > self.max_weight


def _pattern_bytes(pattern) -> int:
    return pattern.pattern.numel() * pattern.pattern.element_size()


class PendingPatterns:
    """(text, layer) pairs pages are waiting for; taken by text by whoever gets the model."""

    def __init__(self):
        self._pairs: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    LIMIT = 256  # requests whose page went away are never taken: do not let them pile up

    def add(self, pair: tuple[str, int]) -> None:
        with self._lock:
            if len(self._pairs) >= self.LIMIT:
                self._pairs.clear()
            self._pairs.add(pair)

    def take(self, text: str) -> set[int]:
        with self._lock:
            layers = {layer for t, layer in self._pairs if t == text}
            self._pairs -= {(text, layer) for layer in layers}
            return layers


@dataclass
class AppState:
    """Everything a page's callbacks need; one per Dash app."""

    store: Store
    models: ModelHolder
    jobs: object = None  # dashboard.jobs.JobRunner, set by create_app
    # Set once the first page's content has been answered (dashboard.app._mark_page_served):
    # the start-up model load waits for it (see ModelHolder.load_async).
    page_served: threading.Event = field(default_factory=threading.Event)
    caches: dict = field(default_factory=lambda: {
        "scores": LRU(64),
        # one layer's pattern is n_heads x N x N floats: 9 x 768^2 x 4 B = 21 MB for SmolLM2
        "patterns": LRU(32, weigh=_pattern_bytes, max_weight=256 * 2**20),
        "pending_patterns": PendingPatterns(),
    })
