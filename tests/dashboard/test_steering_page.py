"""The steering playground in headless Chromium: the next-token diff, the head's pattern before
and after, the strength sweep, ACT's sinks and the generations export for an ACT edit; and a
calibration search launched from the page that lands in the store and can be applied."""

from __future__ import annotations

import json

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.dashboard.test_browser import choose, click, retype, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROMPT_HEADS = "3.1, 3.5"


def test_playground_views_for_an_act_edit(dashboard, browser, screenshot, tmp_path):
    from interp.exports import generations_csv

    base, _ = dashboard
    browser.get(f"{base}/steering?edit=act")
    wait_for(browser, "h2", "Steering playground")
    retype(wait_for(browser, "#steer-heads"), PROMPT_HEADS)
    retype(wait_for(browser, "#steer-tokens"), "3")
    retype(wait_for(browser, "#steer-target-a"), " Mary")
    retype(wait_for(browser, "#steer-target-b"), " John and")       # two tokens: refused
    browser.find_element(By.ID, "steer-run").click()
    assert "tokens" in wait_for(browser, "#steer-error", "single tokens").text
    retype(wait_for(browser, "#steer-target-b"), " John")
    browser.find_element(By.ID, "steer-run").click()
    wait_for(browser, ".notice", "greedy continuations", timeout=120)
    table = wait_for(browser, "#steer-top-table")
    assert "Mary" in table.text and len(table.find_elements(By.CSS_SELECTOR, "tbody tr")) == 10
    assert "logit(' Mary') - logit(' John')" in wait_for(browser, "#steer-logit-diff-value").text
    wait_for(browser, "#steer-distribution-graph .barlayer")
    wait_for(browser, "#steer-sweep-graph .scatterlayer")
    assert "beta" in wait_for(browser, "#steer-sweep-graph").text
    assert "L3.H1 with the edit" in wait_for(browser, "#steer-pattern-edited").text
    wait_for(browser, "#steer-pattern-plain .heatmaplayer")
    sinks = wait_for(browser, "#steer-sinks-table")
    assert "3.1" in sinks.text and "3.5" in sinks.text
    screenshot(browser, "steering-playground")

    choose(browser, "#steer-head", "3.5")                           # another edited head
    wait_for(browser, "#steer-pattern-edited", "L3.H5 with the edit", timeout=60)

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow",
                                                         "downloadPath": str(downloads)})
    click(browser, "#steer-download-json")
    target = downloads / "generations.json"
    WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda d: target.exists())
    data = json.loads(target.read_text())
    assert data["plain"]["text"] == wait_for(browser, "#steer-plain").text
    assert data["edited"]["text"] == wait_for(browser, "#steer-edited").text
    assert data["edit"]["parts"][0]["kind"] == "sink_calibration"
    click(browser, "#steer-download-csv")
    csv_file = downloads / "generations.csv"
    WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda d: csv_file.exists())
    assert csv_file.read_text() == generations_csv(data)


def test_calibration_search_from_the_page(dashboard, browser, screenshot, shared_data):
    """Launch a search on SST-2 (bounds checked first), watch it run, cancel it; then Apply a
    stored calibration (made up here: the page, not the search, is under test; the search
    itself is tested in tests/steering/test_playground.py)."""
    from interp.steering import Calibration

    base, app = dashboard
    store = app.interp_state.store
    model_id = app.interp_state.models.status()["model_id"]
    stored = Calibration(model_id, [(2, 3), (5, 1)], beta=0.3, data={"shots": 0},
                         dev_accuracy=0.7, baseline_dev_accuracy=0.6)
    stored_id = stored.save_to_store(store)
    sst2 = shared_data / "icl" / "sst2"
    browser.get(f"{base}/steering")
    wait_for(browser, "h3", "ACT calibration search")
    for split, name in (("train", "train"), ("dev", "dev"), ("eval", "test")):
        retype(wait_for(browser, f"#cal-{split}"), str(sst2 / f"stsa.binary.{name}"))
    retype(wait_for(browser, "#cal-n_dev"), "100000")                # past the bound
    browser.find_element(By.ID, "cal-launch").click()
    assert "n_dev must be a whole number in [1, 512]" in wait_for(browser, "#cal-error").text
    retype(wait_for(browser, "#cal-n_dev"), "256")
    retype(wait_for(browser, "#cal-n_calibration"), "256")
    browser.find_element(By.ID, "cal-launch").click()
    wait_for(browser, "#cal-queued", "queued the calibration search")
    wait_for(browser, "#cal-runs-table .status.running", timeout=60)
    screenshot(browser, "steering-calibration")
    running = store.list_runs(kind="calibration", status="running")[0]
    assert running.params["n_dev"] == 256 and running.params["train"].endswith("stsa.binary.train")
    click(browser, f"#cal-run-{running.id} button")                  # Cancel
    wait_for(browser, f"#cal-run-{running.id} .status.cancelled", timeout=30)
    assert store.get_run(running.id).status == "cancelled"
    # the job is over and the model free again (the next tests need it)
    WebDriverWait(browser, 10, poll_frequency=0.2).until(lambda d: not app.interp_state.jobs.active())
    assert not app.interp_state.models.status()["busy"]

    click(browser, f"#cal-run-{stored_id} button")                   # Apply
    wait_for(browser, "#cal-applied", stored_id)
    assert browser.find_element(By.ID, "steer-heads").get_attribute("value") == "2.3, 5.1"
    assert browser.find_element(By.ID, "steer-strength").get_attribute("value") == "0.3"
    assert browser.find_element(By.ID, "steer-strength-label").text == "beta"
