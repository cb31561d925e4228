"""One dashboard server and one headless Chromium for all the dashboard's browser tests.

The server runs in a thread of the test process on a free port of 127.0.0.1, with the session's
SmolLM2 (no second load) and a temporary store holding two fixture detectors. The fixture
scores are made up on purpose (a known top head and a known rank correlation) to test the UI;
real scores enter the store through the real scans launched from the Scans page.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
import torch

from interp.scores import HeadScores

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--window-size=1400,1000"]
# The fixture's top head and its made-up prompt hash, which the tests look for on the pages.
FIXTURE_TOP = (5, 3)
FIXTURE_HASH = "fixture0000hash"


def fixture_scores(model_id: str, n_layers: int, n_heads: int) -> tuple[HeadScores, HeadScores]:
    """fixture_a: a fixed permutation of 0..1 with its maximum at FIXTURE_TOP;
    fixture_b = 1 - fixture_a, so the two rank-correlate at exactly -1."""
    n = n_layers * n_heads
    values = torch.randperm(n, generator=torch.Generator().manual_seed(0)).float() / (n - 1)
    grid = values.view(n_layers, n_heads)
    top = int(grid.flatten().argmax())
    grid.view(-1)[[top, FIXTURE_TOP[0] * n_heads + FIXTURE_TOP[1]]] = \
        grid.view(-1)[[FIXTURE_TOP[0] * n_heads + FIXTURE_TOP[1], top]]
    a = HeadScores("fixture_a", grid, model_id, {"kind": "fixture"}, FIXTURE_HASH,
                   verify={"behaviour": "fixture behaviour", "metric": "loss", "k": 1,
                           "heads": [list(FIXTURE_TOP)], "baseline": 2.0, "top_k": 4.5,
                           "random_k_mean": 2.5, "ratio": 5.0, "claim": "top_k_hurts_more"})
    b = HeadScores("fixture_b", 1 - grid, model_id, {"kind": "fixture"}, FIXTURE_HASH)
    return a, b


def fixture_patch_and_circuit(model_id: str, n_layers: int, n_heads: int):
    """A head-patching result and an IOI circuit with made-up numbers, built and saved by the
    real library classes (a real sweep takes minutes on a CPU: too slow for the UI tests)."""
    from circuits.circuit import Circuit, CircuitEdge, CircuitHead
    from interp.patching.results import PatchResult

    values = torch.zeros(n_layers, n_heads)
    values[FIXTURE_TOP] = 0.8
    values[1, 1] = -0.4
    patch = PatchResult(values=values, axes=("layer", "head"),
                        labels={"layer": list(range(n_layers)), "head": list(range(n_heads))},
                        metric="logit_diff", clean=3.0, corrupted=0.5, method="activation",
                        component="heads", model_id=model_id, prompt_hash=FIXTURE_HASH)
    circuit = Circuit(
        model="smollm2-135m", task="ioi", n_heads_total=n_layers * n_heads, model_id=model_id,
        heads=[CircuitHead(2, 1, "previous_token"), CircuitHead(4, 2, "induction"),
               CircuitHead(FIXTURE_TOP[0], FIXTURE_TOP[1], "s_inhibition"),
               CircuitHead(20, 4, "name_mover")],
        edges=[CircuitEdge((2, 1), (4, 2), "k", -0.1), CircuitEdge((4, 2), FIXTURE_TOP, "v", -0.2),
               CircuitEdge(FIXTURE_TOP, (20, 4), "q", -0.3), CircuitEdge((20, 4), None, "", -0.6)],
        faithfulness=0.87, random_baseline={"mean": 0.12, "std": 0.05, "n": 20},
        prompt_hash=FIXTURE_HASH)
    return patch, circuit


@pytest.fixture(scope="session")
def dashboard_store(tmp_path_factory, smollm2):
    from interp.store import Store

    store = Store(tmp_path_factory.mktemp("dashboard") / "results.sqlite")
    a, b = fixture_scores(smollm2.model_id, smollm2.n_layers, smollm2.n_heads)
    with store.run("scan", smollm2.model_id, {"detector": "fixture"}, FIXTURE_HASH) as run:
        run.add_scores(a)
        run.add_scores(b)
    patch, circuit = fixture_patch_and_circuit(smollm2.model_id, smollm2.n_layers, smollm2.n_heads)
    patch.save(store)
    circuit.save(store)
    return store


@pytest.fixture(scope="session")
def dashboard(smollm2, dashboard_store):
    """(base url, app) of a live dashboard on 127.0.0.1."""
    from werkzeug.serving import make_server

    from dashboard.app import create_app

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no log line per request
    app = create_app(model=smollm2, store_path=dashboard_store.path)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="dashboard-test", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()
    app.interp_state.jobs.shutdown()


@pytest.fixture(scope="session")
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"headless Chromium not installed ({CHROMIUM}, {CHROMEDRIVER}); "
                    "`make browser` installs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def screenshot():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(driver, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        # Full-page height, so a screenshot shows what a person scrolling would see.
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1400, min(max(1000, height + 40), 4000))
        driver.save_screenshot(str(path))
        driver.set_window_size(1400, 1000)
        return path

    return save


@pytest.fixture(autouse=True)
def no_job_left_running(request):
    """After a test on the live dashboard, cancel any job it left running, so that one failure
    cannot hold the shared model and time out every later browser test."""
    yield
    if "dashboard" not in request.fixturenames:
        return
    import time

    jobs = request.getfixturevalue("dashboard")[1].interp_state.jobs
    left = jobs.active()
    for job in left:
        jobs.cancel(job.id)
    deadline = time.monotonic() + 60
    while jobs.active() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"the test left jobs running (cancelled now): {[job.label for job in left]}"
