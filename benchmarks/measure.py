"""Helpers for benchmark scripts: run one case in a fresh process, sample its memory.

Each case runs in its own subprocess so that one case's allocations (and the allocator's
cached pages) never inflate another's peak.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import psutil


class PeakRSS:
    """Samples this process's resident memory every few ms while active: peak in bytes."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._process = psutil.Process()

    def __enter__(self):
        self.start = self._process.memory_info().rss
        self.peak = self.start
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def run_case(module: str, case: dict, timeout: float = 3600) -> dict:
    """Run `python -m module '<case json>'` and parse the JSON line it prints last."""
    result = subprocess.run([sys.executable, "-m", module, json.dumps(case)], capture_output=True,
                            text=True, timeout=timeout)
    if result.returncode != 0:
        return {**case, "error": result.stderr.strip().splitlines()[-1] if result.stderr else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
