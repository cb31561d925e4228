"""Issue 15 as a person meets it, in headless Chromium: the first run fills the heatmaps by
itself; Cancel stops a long job and frees the model within seconds; a bad model path keeps the
working model; any run can be picked, exported (the file matches the library's export) and
deleted; failed runs are listed apart."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.dashboard.test_browser import (choose, click, failed_row, fill_scan_form, query,
                                          retype, running_progress, wait_for, wait_url)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture()
def first_run_dashboard(smollm2, tmp_path, monkeypatch):
    """A second dashboard on an EMPTY store, with the standard scans shrunk to two tiny ones
    (the real ones take ~90 s; what is tested here is that they start and fill the page)."""
    from werkzeug.serving import make_server

    from dashboard.app import create_app
    from interp.heads import scan

    monkeypatch.setattr(scan, "STANDARD_SCANS", {
        "previous_token": {"n_prompts": 1, "max_tokens": 24, "prompts": "repeated"},
        "sink": {"n_prompts": 1, "max_tokens": 32, "min_queries": 4}})
    # first_run=False: the test starts it itself while it holds the model, so the page is seen
    # before the tiny scans finish (test_units checks that loading a model starts it).
    app = create_app(model=smollm2, store_path=tmp_path / "empty.sqlite", first_run=False)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()
    app.interp_state.jobs.shutdown()


def test_first_run_starts_the_standard_scans_and_the_heatmaps_fill(first_run_dashboard, browser,
                                                                    screenshot, smollm2):
    from dashboard import first_run

    base, app = first_run_dashboard
    state = app.interp_state
    state.models.compute.acquire()  # the model is busy: the job waits in the queue
    try:
        assert first_run.start_if_needed(state, smollm2) is not None
        assert first_run.start_if_needed(state, smollm2) is None  # once
        browser.get(f"{base}/heads")
        notice = wait_for(browser, "#first-run-notice")
        assert "standard scans are running" in notice.text and "previous_token" in notice.text
        screenshot(browser, "heads-first-run")
    finally:
        state.models.compute.release()
    # The first detector lands: the page opens it without a reload; the second follows.
    url = wait_url(browser, lambda u: query(u).get("detector") == "previous_token", timeout=90)
    assert url.path == "/heads"
    wait_for(browser, "#heads-heatmap .heatmaplayer")
    assert "What this score means" in wait_for(browser, "#heads-meaning", "Olsson").text
    store = app.interp_state.store
    WebDriverWait(browser, 90, poll_frequency=0.5).until(
        lambda d: store.detectors_for(smollm2.model_id) == ["previous_token", "sink"])
    choose(browser, "#heads-detector", "sink")
    wait_for(browser, "#heads-meaning", "Gu et al.")
    WebDriverWait(browser, 30, poll_frequency=0.5).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, "#first-run-notice"))
    screenshot(browser, "heads-first-run-done")


def test_cancel_frees_the_model_within_seconds(dashboard, browser, screenshot):
    base, app = dashboard
    browser.get(f"{base}/scans?detector=induction")
    wait_for(browser, ".param-form")
    # Long prompts in big batches: one forward takes many seconds, so a cancel that waited for
    # the next progress report would be slow; the forward checks before every layer.
    fill_scan_form(browser, {"n_prompts": 256, "max_tokens": 1024, "batch_size": 64,
                             "prompts": "repeated"}, detector="induction")
    browser.find_element(By.ID, "scan-launch").click()
    wait_for(browser, "#scan-queued")
    wait_for(browser, "#scan-runs-table tr.run.running .elapsed", "elapsed")
    store = app.interp_state.store
    run_id = store.list_runs(kind="scan", status="running")[0].id
    time.sleep(2)  # well inside the first forward
    for _ in range(5):  # the table re-renders every second: a click may hit a replaced button
        click(browser, f"#run-{run_id} button")
        try:
            wait_for(browser, "#scan-cancelled", timeout=5)
            break
        except AssertionError:
            continue
    asked = time.perf_counter()
    while not store.cancel_requested(run_id) and time.perf_counter() - asked < 10:
        time.sleep(0.05)
    asked = time.perf_counter()  # from the moment the server knew
    while store.get_run(run_id).status == "running" and time.perf_counter() - asked < 30:
        time.sleep(0.05)
    took = time.perf_counter() - asked
    assert store.get_run(run_id).status == "cancelled" and took < 5, took
    assert "cancelled by the user" in failed_row(browser, "cancelled").text
    with app.interp_state.models.use(timeout=2):  # the model is free again
        pass
    screenshot(browser, "scans-cancelled")


def test_a_bad_model_path_keeps_the_working_model(dashboard, browser, screenshot, tmp_path):
    base, app = dashboard
    fake = tmp_path / "fake.gguf"
    fake.write_text("this is a text file, not a model")
    browser.get(f"{base}/model")
    wait_for(browser, "#model-facts-table")
    path = wait_for(browser, "#model-path")
    retype(path, str(fake))  # refused before anything loads
    browser.find_element(By.ID, "model-load").click()
    assert "not a GGUF file" in wait_for(browser, "#model-error", str(fake)).text
    # A directory that passes the checks but whose architecture cannot load: the load fails
    # in the background, and the working model stays.
    bogus = tmp_path / "bogus-model"
    bogus.mkdir()
    (bogus / "config.json").write_text('{"model_type": "no_such_architecture"}')
    retype(path, str(bogus))
    browser.find_element(By.ID, "model-load").click()
    error = wait_for(browser, "#model-load-failed", timeout=60)
    assert str(bogus) in error.text and "smollm2-135m is still loaded" in error.text
    status = app.interp_state.models.status()
    assert status["state"] == "ready" and status["name"] == "smollm2-135m"
    assert "smollm2-135m" in wait_for(browser, "#model-badge").text
    browser.get(f"{base}/model")
    assert wait_for(browser, "#model-loaded-name").text == "smollm2-135m"  # not the bad path
    screenshot(browser, "model-bad-path")


def test_pick_export_and_delete_runs(dashboard, browser, screenshot, tmp_path, smollm2):
    from interp.exports import head_scores_csv
    from interp.heads.scan import run_scan

    base, app = dashboard
    store = app.interp_state.store
    small = {"n_prompts": 1, "max_tokens": 24, "prompts": "repeated"}
    with app.interp_state.models.use(timeout=60):
        older = run_scan(smollm2, ["duplicate_token"], params={"duplicate_token": small}, store=store)
        newer = run_scan(smollm2, ["duplicate_token"], params={"duplicate_token": {**small, "seed": 1}},
                         store=store)
    browser.get(f"{base}/heads?detector=duplicate_token")
    wait_for(browser, "#heads-heatmap .heatmaplayer")
    assert newer.run_id in wait_for(browser, "#heads-details", newer.run_id).text  # newest first
    choose(browser, "#heads-run", older.run_id[:8])
    wait_url(browser, lambda u: query(u).get("run") == older.run_id)
    wait_for(browser, "#heads-details", older.run_id)

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow",
                                                         "downloadPath": str(downloads)})
    browser.find_element(By.ID, "heads-export-csv").click()
    target = downloads / f"duplicate_token-{older.run_id}.csv"
    WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda d: target.exists())
    assert target.read_text() == head_scores_csv(store.head_scores(older.run_id, "duplicate_token"))
    screenshot(browser, "heads-run-picked")

    browser.find_element(By.ID, "heads-delete").click()
    browser.switch_to.alert.accept()
    wait_for(browser, "#heads-deleted", older.run_id)
    assert older.run_id not in {r.id for r in store.list_runs(kind="scan")}
    assert not (store.artifact_dir / older.run_id).exists()


def test_failed_runs_are_listed_apart_and_can_be_deleted(dashboard, browser, screenshot):
    base, app = dashboard
    store = app.interp_state.store
    with pytest.raises(RuntimeError):
        with store.run("scan", "m@failed", {"detectors": {"sink": {}}}):
            raise RuntimeError("out of memory on purpose")
    browser.get(f"{base}/scans")
    row = failed_row(browser, "failed")
    assert "out of memory on purpose" in row.text
    assert "out of memory" not in wait_for(browser, "#scan-runs-table").text
    screenshot(browser, "scans-failed-apart")
    click(browser, "#scan-failed-table tr.run.failed button")
    wait_for(browser, "#scan-deleted")
    assert not store.list_runs(model_id="m@failed")


def test_layer_grid_long_pattern_and_npy_export(dashboard, browser, screenshot, tmp_path, smollm2):
    import numpy as np

    from interp.patterns import attention_pattern

    base, _ = dashboard
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow",
                                                         "downloadPath": str(downloads)})
    text = "The cat sat on the mat. The dog sat on the log."
    browser.get(f"{base}/head?layer=3&head=2&view=grid&prompt={text.replace(' ', '+')}")
    WebDriverWait(browser, 60, poll_frequency=0.2).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#head-grid .heatmaplayer")) == smollm2.n_heads)
    screenshot(browser, "head-layer-grid")
    browser.find_element(By.ID, "head-export-npy").click()
    target = downloads / f"pattern-{smollm2.model_id.replace('@', '-')}-L3H2.npy"
    WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda d: target.exists())
    expected = attention_pattern(smollm2, text, 3).head(2).numpy()
    assert np.allclose(np.load(target), expected, atol=1e-6)

    # A 1,200-token prompt: the pattern is pooled on the server and drawn in a few seconds.
    long_text = " ".join(f"word{i % 97}" for i in range(400))
    retype(wait_for(browser, "#head-prompt"), long_text)
    started = time.perf_counter()
    browser.find_element(By.ID, "head-show").click()
    title = wait_for(browser, "#head-pattern .gtitle", "pooled", timeout=60)
    assert time.perf_counter() - started < 20, time.perf_counter() - started
    assert "tokens" in title.text
    screenshot(browser, "head-long-pattern")


def test_patching_and_circuit_exports_match_the_library(dashboard, browser, tmp_path):
    import json

    from circuits.circuit import Circuit
    from interp.exports import patch_result_csv
    from interp.patching.results import PatchResult

    base, app = dashboard
    store = app.interp_state.store
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow",
                                                         "downloadPath": str(downloads)})
    browser.get(f"{base}/circuits")
    wait_for(browser, "#patch-heatmap .heatmaplayer")
    patch_id = store.list_runs(kind="patch", status="complete")[0].id  # the page's default: newest
    circuit_run = store.list_runs(kind="circuit", status="complete")[0]
    browser.find_element(By.ID, "patch-export-csv").click()
    browser.find_element(By.ID, "circuit-export-json").click()
    patch_file = downloads / f"patch-{patch_id}.csv"
    circuit_file = downloads / f"circuit-{circuit_run.id}.json"
    WebDriverWait(browser, 30, poll_frequency=0.2).until(
        lambda d: patch_file.exists() and circuit_file.exists())
    assert patch_file.read_text() == patch_result_csv(PatchResult.load(store, patch_id))
    assert json.loads(circuit_file.read_text()) == \
        json.loads(json.dumps(Circuit.load(store, circuit_run.id).to_json()))
