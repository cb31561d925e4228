"""Dashboard latency: first page interactive after start, and 20 simultaneous clients.

    python benchmarks/dashboard_latency.py [--clients 20] [--requests 15] [--json PATH]

1. Start-up: a store that already holds scans; start `interp dashboard` as a fresh process and
   measure, from the moment it is launched, when (a) it answers HTTP, (b) a headless Chromium
   shows the Heads page with its heatmap drawn (first page interactive), (c) the model is
   loaded (the badge says ready).
2. Concurrency: `--clients` threads, each sending `--requests` callback requests to
   `/_dash-update-component` on 127.0.0.1, cycling through the heatmap callback, the head-scores
   callback and the head-pattern callback (the pattern for 4 prompts x 5 layers: the first
   request of each computes it on the model, later ones hit the cache). Reports p50/p95/max
   latency per callback and HTTP errors. The pattern callback waits up to 2.5 s for the model,
   then answers "model busy" and the page asks again 3 s later; the clients do the same, so a
   pattern's latency is the time until the user sees it, retries included (counted).

The scans in the store are synthetic (random scores named bench_*): the latency of reading and
drawing [30, 9] scores does not depend on their values, and the benchmark must not wait for
real scans. Everything runs on 127.0.0.1 only.

3. `--during-scan`: the same clients while a real scan runs in the server. The synthetic scores
   are stored under the run kind "bench", so the store holds no *scan* of the model and the
   dashboard's first run starts the standard scans (every detector but safety) in its job
   thread, holding the model. The clients start once that scan is running. A pattern request
   the busy model cannot serve is answered at once with "model busy" (the page retries later):
   the answer counts as served, its latency is the answer's, and the busy answers are counted;
   an error is an HTTP failure or a timeout. The store is read at the end to report how far
   the scan got.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPTS = [
    "When Mary and John went to the store, John gave a drink to",
    "The cat sat on the mat. The cat sat on the mat.",
    "In 1492 Columbus sailed the ocean blue, and in 1620 the Mayflower",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill_store(path: Path, model_name: str, detectors: int = 5, kind: str = "scan") -> str:
    from interp.embedded import EMBEDDED_MODELS
    from interp.scores import HeadScores
    from interp.store import Store

    entry = EMBEDDED_MODELS[model_name]
    model_id = f"{entry.name}@{entry.sha256[:12]}"  # what load_model gives an embedded model
    store = Store(path)
    generator = torch.Generator().manual_seed(0)
    for i in range(detectors):
        scores = torch.rand(30, 9, generator=generator)
        with store.run(kind, model_id, {"detector": f"bench_{i}"}, "bench") as run:
            run.add_scores(HeadScores(f"bench_{i}", scores, model_id, {"n": i}, "bench"))
    return model_id


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1400,1000"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def measure_startup(store_path: Path, model_name: str, port: int):
    """-> (server process, {"http_s", "interactive_s", "model_ready_s"})."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()  # started before the server: its own start-up is not the dashboard's
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "interp_cli", "dashboard", "--model", model_name,
         "--store", str(store_path), "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    while True:
        try:
            if requests.get(base + "/", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"the dashboard exited: {server.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    http = time.perf_counter() - start
    driver.get(base + "/heads")
    WebDriverWait(driver, 120, poll_frequency=0.05).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#heads-heatmap .heatmaplayer"))
    interactive = time.perf_counter() - start
    WebDriverWait(driver, 300, poll_frequency=0.1).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#model-badge .dot.ready"))
    ready = time.perf_counter() - start
    driver.quit()
    return server, {"http_s": http, "interactive_s": interactive, "model_ready_s": ready}


def callback_bodies(model_id: str, client: int, i: int) -> tuple[str, dict]:
    """The i-th request of a client: (callback name, request body)."""
    kind = ("heatmap", "head_scores", "head_pattern")[i % 3]
    if kind == "heatmap":
        query = {"model_id": model_id, "detector": f"bench_{(client + i) % 5}",
                 "compare": None, "view": "side"}
        return kind, _body(HEATMAP_OUTPUT, "heads-query", query)
    layer, head = (client + i) % 30, (client * 7 + i) % 9
    query = {"model_id": model_id, "layer": layer % 5 * 6, "head": head,
             "prompt": PROMPTS[(client + i) % len(PROMPTS)], "detector": "bench_0"}
    if kind == "head_scores":
        return kind, _body(SCORES_OUTPUT, "head-query", query)
    return kind, _body(PATTERN_OUTPUT, "head-query", query,
                       extra_inputs=[{"id": "head-retry", "property": "n_intervals", "value": None}])


HEATMAP_OUTPUT = SCORES_OUTPUT = PATTERN_OUTPUT = ""


def _body(output: str, store_id: str, query: dict, extra_inputs=()) -> dict:
    outputs = [{"id": part.rsplit(".", 1)[0], "property": part.rsplit(".", 1)[1]}
               for part in output.strip(".").split("...")]
    return {"output": output, "outputs": outputs if len(outputs) > 1 else outputs[0],
            "inputs": [{"id": store_id, "property": "data", "value": query}, *extra_inputs],
            "changedPropIds": [f"{store_id}.data"], "state": []}


def find_outputs(base: str) -> None:
    global HEATMAP_OUTPUT, SCORES_OUTPUT, PATTERN_OUTPUT
    deps = requests.get(base + "/_dash-dependencies", timeout=10).json()
    outputs = [d["output"] for d in deps]
    HEATMAP_OUTPUT = next(o for o in outputs if "heads-heatmap.figure" in o)
    SCORES_OUTPUT = next(o for o in outputs if o == "head-scores.children")
    PATTERN_OUTPUT = next(o for o in outputs if "head-pattern.figure" in o)


RETRY_S = 3.0  # the head page's retry interval while the model is busy (dcc.Interval)


def run_clients(base: str, model_id: str, clients: int, per_client: int,
                retry_busy: bool = True) -> dict:
    """Each client sends its requests one after another, as one open page would. A pattern
    request answered "model busy" is sent again after RETRY_S, as the page does, until the
    pattern comes: its latency is the time until the user sees the pattern. With retry_busy
    False (a scan holds the model) the busy answer is the response, counted in busy_answers."""
    results: list[tuple[str, float, bool, int]] = []  # (callback, seconds, ok, busy answers)
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(index: int) -> None:
        session = requests.Session()
        barrier.wait()  # all clients start together
        for i in range(per_client):
            kind, body = callback_bodies(model_id, index, i)
            start, busy, ok = time.perf_counter(), 0, False
            while True:
                try:
                    response = session.post(base + "/_dash-update-component", json=body, timeout=120)
                    ok = response.status_code == 200
                except requests.RequestException:
                    ok = False
                if not (ok and "model is busy" in response.text):
                    break
                if not retry_busy:
                    busy += 1
                    break
                if busy == 20:  # a minute of "busy": count it as a failure
                    ok = False
                    break
                busy += 1
                time.sleep(RETRY_S)
            with lock:
                results.append((kind, time.perf_counter() - start, ok, busy))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    summary = {"clients": clients, "requests": len(results), "wall_s": wall}
    for kind in ("heatmap", "head_scores", "head_pattern"):
        times = sorted(s for k, s, ok, _ in results if k == kind and ok)
        summary[kind] = {
            "n": sum(1 for k, *_ in results if k == kind),
            "errors": sum(1 for k, _, ok, _ in results if k == kind and not ok),
            "busy_retries" if retry_busy else "busy_answers": sum(b for k, _, _, b in results if k == kind),
            "p50_ms": 1000 * statistics.median(times) if times else None,
            "p95_ms": 1000 * times[min(len(times) - 1, int(0.95 * len(times)))] if times else None,
            "max_ms": 1000 * times[-1] if times else None,
        }
    return summary


def wait_for_scan(store_path: Path, model_id: str, timeout: float = 120.0) -> None:
    """Block until the dashboard's first-run scan is running (a 'scan' run of the model)."""
    from interp.store import Store

    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        runs = Store(store_path, read_only=True).list_runs(model_id=model_id, kind="scan")
        if any(r.status == "running" for r in runs):
            return
        time.sleep(0.2)
    raise SystemExit("the dashboard's first-run scan did not start")


def scan_state(store_path: Path, model_id: str) -> dict:
    """{"complete": [detectors], "running": [detector (progress)]} of the first-run scan."""
    from interp.store import Store

    runs = Store(store_path, read_only=True).list_runs(model_id=model_id, kind="scan")
    names = lambda r: ",".join(r.params.get("detectors", {}))  # noqa: E731
    return {"complete": [names(r) for r in runs if r.status == "complete"],
            "running": [f"{names(r)} ({r.progress:.0%})" for r in runs if r.status == "running"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=15, help="requests per client")
    parser.add_argument("--during-scan", action="store_true",
                        help="run the clients while the first run's standard scans run (see 3.)")
    parser.add_argument("--json", type=Path, default=None,
                        help="default: benchmarks/results/dashboard_latency[_during_scan].json")
    args = parser.parse_args()
    if args.json is None:
        suffix = "_during_scan" if args.during_scan else ""
        args.json = REPO / "benchmarks" / "results" / f"dashboard_latency{suffix}.json"

    load_before = os.getloadavg()[0]  # the machine is shared: say how busy it was
    scan = None
    with tempfile.TemporaryDirectory(prefix="dashboard-bench-") as tmp:
        store_path = Path(tmp) / "results.sqlite"
        model_id = fill_store(store_path, args.model, kind="bench" if args.during_scan else "scan")
        port = free_port()
        server, startup = measure_startup(store_path, args.model, port)
        try:
            base = f"http://127.0.0.1:{port}"
            find_outputs(base)
            if args.during_scan:
                wait_for_scan(store_path, model_id)
            load = run_clients(base, model_id, args.clients, args.requests,
                               retry_busy=not args.during_scan)
            if args.during_scan:
                scan = scan_state(store_path, model_id)
        finally:
            server.terminate()
            server.wait(timeout=30)
    if scan is not None:
        load["scan"] = scan
    report = {"startup": startup, "concurrency": load, "machine": {
        "cpus": os.cpu_count(), "platform": platform.platform(),
        "load_average_1m_before": load_before, "load_average_1m_after": os.getloadavg()[0]}}
    print(f"start-up: HTTP after {startup['http_s']:.2f} s, first page interactive after "
          f"{startup['interactive_s']:.2f} s, model ready after {startup['model_ready_s']:.2f} s")
    print(f"machine: {os.cpu_count()} CPUs, 1-min load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    print(f"{load['clients']} clients, {load['requests']} requests in {load['wall_s']:.1f} s")
    print(f"{'callback':<14}{'n':>5}{'errors':>8}{'busy':>9}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for kind in ("heatmap", "head_scores", "head_pattern"):
        row = load[kind]
        fmt = lambda v: f"{v:10.1f}" if v is not None else f"{'-':>10}"  # noqa: E731
        busy = row.get("busy_retries", row.get("busy_answers"))
        print(f"{kind:<14}{row['n']:>5}{row['errors']:>8}{busy:>9}"
              f"{fmt(row['p50_ms'])}{fmt(row['p95_ms'])}{fmt(row['max_ms'])}")
    if scan is not None:
        print(f"scan during the load: {scan}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    return 0 if all(load[k]["errors"] == 0 for k in ("heatmap", "head_scores", "head_pattern")) else 1


if __name__ == "__main__":
    sys.exit(main())
