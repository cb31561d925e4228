"""The dashboard in real headless Chromium, used as a person would: open each page, click a
heatmap cell, type a prompt, launch a scan, get an error for bad input, go back and forward.

Screenshots of every page land in test-artifacts/screenshots/.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.dashboard.conftest import FIXTURE_HASH, FIXTURE_TOP

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a real model and a real Chromium
TIMEOUT = 60


def wait_for(driver, css: str, text: str | None = None, timeout: float = TIMEOUT):
    """The first visible element matching `css` (containing `text`, if given)."""
    def found(d):
        for element in d.find_elements(By.CSS_SELECTOR, css):
            try:
                if element.is_displayed() and (text is None or text in element.text):
                    return element
            except Exception:  # re-rendered between find and check: look again
                continue
        return False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(found)
    except Exception:
        errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".error-box")]
        raise AssertionError(f"{css!r} with {text!r} not shown within {timeout}s at "
                             f"{driver.current_url}; errors on the page: {errors}") from None


def wait_url(driver, predicate, timeout: float = TIMEOUT):
    WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: predicate(urlparse(d.current_url)))
    return urlparse(driver.current_url)


def query(url) -> dict:
    return {k: v[-1] for k, v in parse_qs(url.query).items()}


def retype(element, text: str) -> None:
    """Select all and type over it, as a person does (element.clear() bypasses React)."""
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(text)


def choose(driver, css: str, label: str) -> None:
    """Open the dcc.Dropdown at `css` and click the option `label` (its list opens in a popup
    elsewhere in the page, named by the button's aria-controls)."""
    button = wait_for(driver, css)
    button.click()
    WebDriverWait(driver, TIMEOUT).until(lambda d: button.get_attribute("aria-controls"))
    popup = f"[id='{button.get_attribute('aria-controls')}']"
    wait_for(driver, f"{popup} [role=option]", label).click()


def click_plot_point(driver, graph_id: str, x: float, y: float) -> None:
    """Scroll the Plotly graph `graph_id` into view, move the real mouse to its data coordinates
    (x, y) and click, as a person would."""
    px, py = driver.execute_script("""
        const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
        gd.scrollIntoView({block: 'center'});
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
        return [box.left + xa.l2p(arguments[1]), box.top + ya.l2p(arguments[2])];
    """, f"#{graph_id}", x, y)
    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.move_to_location(int(px), int(py))
    actions.w3c_actions.pointer_action.click()
    actions.perform()


def click_heatmap_cell(driver, graph_id: str, layer: int, head: int) -> None:
    """Click the cell of (layer, head): x is the head, y the layer."""
    click_plot_point(driver, graph_id, head, layer)


def test_heads_page_draws_the_heatmap_and_its_top_heads(dashboard, browser, screenshot):
    base, app = dashboard
    model_id = app.interp_state.models.status()["model_id"]
    browser.get(f"{base}/heads?detector=fixture_a")
    wait_for(browser, "#heads-heatmap .heatmaplayer")
    first = wait_for(browser, "#heads-top tbody tr")
    assert f"L{FIXTURE_TOP[0]}.H{FIXTURE_TOP[1]}" in first.text and "1.0000" in first.text
    assert FIXTURE_HASH in wait_for(browser, ".facts", FIXTURE_HASH).text
    assert model_id in browser.find_element(By.ID, "heads-model").text
    screenshot(browser, "heads")


def test_compare_view_side_by_side_and_rank_correlation(dashboard, browser, screenshot):
    base, _ = dashboard
    browser.get(f"{base}/heads?detector=fixture_a&compare=fixture_b&view=side")
    wait_for(browser, "#heads-heatmap-b .heatmaplayer")
    screenshot(browser, "heads-compare")
    browser.get(f"{base}/heads?detector=fixture_a&compare=fixture_b&view=rank")
    title = wait_for(browser, "#heads-rank .gtitle")
    assert "ρ = -1.000" in title.text  # fixture_b = 1 - fixture_a
    screenshot(browser, "heads-rank")


def test_switching_detector_updates_the_url_and_back_forward_work(dashboard, browser):
    base, _ = dashboard
    browser.get(f"{base}/heads?detector=fixture_a")
    wait_for(browser, "#heads-top", "fixture_a")
    choose(browser, "#heads-detector", "fixture_b")
    url = wait_url(browser, lambda u: query(u).get("detector") == "fixture_b")
    assert url.path == "/heads"
    wait_for(browser, "#heads-top", "fixture_b")
    browser.back()
    wait_url(browser, lambda u: query(u).get("detector") == "fixture_a")
    wait_for(browser, "#heads-top", "fixture_a")
    browser.forward()
    wait_for(browser, "#heads-top", "fixture_b")


def test_clicking_a_cell_opens_that_head(dashboard, browser, screenshot):
    base, _ = dashboard
    layer, head = FIXTURE_TOP
    browser.get(f"{base}/heads?detector=fixture_a")
    wait_for(browser, "#heads-heatmap .heatmaplayer")
    click_heatmap_cell(browser, "heads-heatmap", layer, head)
    url = wait_url(browser, lambda u: u.path == "/head")
    assert query(url)["layer"] == str(layer) and query(url)["head"] == str(head)
    assert wait_for(browser, "#head-title").text == f"Head L{layer}.H{head}"
    row = wait_for(browser, "#head-scores-table tr.highlight")
    assert "fixture_a" in row.text and "1 / 270" in row.text  # the top head ranks first
    assert "this head was among those ablated" in wait_for(browser, "#head-scores li").text
    assert "role s_inhibition" in wait_for(browser, "#head-circuit-role").text
    assert "+0.800" in wait_for(browser, "#head-scores li", "activation patching").text
    browser.back()
    wait_url(browser, lambda u: u.path == "/heads")
    wait_for(browser, "#heads-heatmap .heatmaplayer")


def test_typed_prompt_shows_its_pattern(dashboard, browser, screenshot):
    base, _ = dashboard
    browser.get(f"{base}/head?layer=3&head=2")
    wait_for(browser, "#head-pattern .heatmaplayer")  # the default prompt's pattern
    text = "The cat sat on the mat. The cat sat on the mat."
    retype(wait_for(browser, "#head-prompt"), text)
    browser.find_element(By.ID, "head-show").click()
    wait_url(browser, lambda u: query(u).get("prompt") == text)
    graph = wait_for(browser, "#head-pattern .xtick", "␣mat")
    assert graph is not None
    ticks = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#head-pattern .xtick")]
    assert ticks[0].startswith("▼") or any(t.startswith("▼") for t in ticks)  # a sink is marked
    assert len(ticks) == 14  # every token labelled
    assert wait_for(browser, "#head-top-table tbody tr") is not None
    assert "sink keys" in wait_for(browser, "#head-sinks").text
    screenshot(browser, "head")


def test_bad_inputs_show_errors(dashboard, browser, screenshot):
    base, _ = dashboard
    browser.get(f"{base}/head?layer=99&head=0")
    error = wait_for(browser, "#head-error")
    assert "layer 99 does not exist" in error.text
    browser.get(f"{base}/head?layer=abc&head=0")
    assert "is not a layer number" in wait_for(browser, ".error-box").text
    browser.get(f"{base}/model")
    wait_for(browser, "#model-facts-table")
    path = wait_for(browser, "#model-path")
    path.send_keys("/no/such/model/dir")
    browser.find_element(By.ID, "model-load").click()
    assert "does not exist" in wait_for(browser, "#model-error").text
    retype(path, "/etc/hostname")
    browser.find_element(By.ID, "model-load").click()
    assert "neither a model directory nor a .gguf" in wait_for(browser, "#model-error", "neither").text
    screenshot(browser, "model")


def test_model_page_lists_the_runs(dashboard, browser):
    base, app = dashboard
    browser.get(f"{base}/model")
    table = wait_for(browser, "#model-runs-table")
    assert "fixture_a" in table.text and "complete" in table.text
    facts = wait_for(browser, "#model-facts-table").text
    assert "n_layers" in facts and "30" in facts
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#model-runs-table tbody tr")
               if r.text.startswith("circuit"))
    row_text = row.text
    row.find_element(By.LINK_TEXT, "view").click()
    url = wait_url(browser, lambda u: u.path == "/circuits")
    assert query(url)["circuit"] in row_text
    wait_for(browser, "#circuit-graph .scatterlayer")


def fill_scan_form(browser, values: dict, detector: str = "previous_token") -> None:
    """Type into the Scans page's parameter fields of `detector` (text inputs and choice
    dropdowns)."""
    for name, value in values.items():
        css = (f"[id='{{\"detector\":\"{detector}\",\"name\":\"{name}\","
               f"\"type\":\"scan-param\"}}']")
        field = wait_for(browser, css)
        if field.tag_name == "input":
            retype(field, str(value))
        else:
            choose(browser, css, str(value))


def running_progress(browser) -> float:
    """The progress (percent) of the running scan's bar; the table re-renders every second."""
    for _ in range(20):
        try:
            bar = wait_for(browser, "#scan-runs-table tr.run.running [role=progressbar]")
            return float(bar.get_attribute("aria-valuenow"))
        except StaleElementReferenceException:
            continue
    raise AssertionError("the running scan's progress bar kept changing under the test")


def click(browser, css: str, text: str | None = None) -> None:
    """Click `css` (containing `text`, if given) in the middle of the window (the sticky top bar
    covers the top), looking it up again if a re-render replaced it in between."""
    for _ in range(20):
        try:
            element = wait_for(browser, css, text)
            browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
            element.click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{css} kept changing under the test")


def run_row(browser, status: str):
    return wait_for(browser, f"#scan-runs-table tr.run.{status}", timeout=120)


def failed_row(browser, status: str):
    """Failed and cancelled runs are listed apart from the results."""
    return wait_for(browser, f"#scan-failed-table tr.run.{status}", timeout=120)


def test_a_scan_runs_in_the_background_and_can_be_cancelled(dashboard, browser, screenshot):
    base, _ = dashboard
    browser.get(f"{base}/scans?detector=previous_token")
    wait_for(browser, ".param-form")
    # Many one-prompt batches: progress moves in small steps, and there is time to cancel.
    fill_scan_form(browser, {"n_prompts": 64, "max_tokens": 96, "batch_size": 1})
    browser.find_element(By.ID, "scan-launch").click()
    wait_for(browser, "#scan-queued", "queued scan previous_token")
    WebDriverWait(browser, 60, poll_frequency=0.2).until(lambda d: running_progress(d) > 0)
    screenshot(browser, "scans-running")
    first = running_progress(browser)
    # The page stays responsive while the scan runs: another page renders at once.
    started = time.perf_counter()
    browser.get(f"{base}/heads?detector=fixture_a")
    wait_for(browser, "#heads-heatmap .heatmaplayer")
    assert time.perf_counter() - started < 15
    browser.get(f"{base}/scans")
    WebDriverWait(browser, 60, poll_frequency=0.2).until(lambda d: running_progress(d) > first)
    click(browser, "#scan-runs-table tr.run.running button")
    wait_for(browser, "#scan-cancelled")
    assert "cancelled by the user" in failed_row(browser, "cancelled").text


def test_a_small_scan_finishes_and_lands_in_heads(dashboard, browser, screenshot):
    base, app = dashboard
    browser.get(f"{base}/scans?detector=previous_token")
    wait_for(browser, ".param-form")
    fill_scan_form(browser, {"n_prompts": 2, "max_tokens": 24, "prompts": "repeated"})
    browser.find_element(By.ID, "scan-launch").click()
    wait_for(browser, "#scan-queued")
    link = wait_for(browser, "#scan-runs-table tr.run.complete a", "open previous_token in Heads",
                    timeout=180)
    screenshot(browser, "scans")
    link.click()
    url = wait_url(browser, lambda u: u.path == "/heads")
    assert query(url)["detector"] == "previous_token"
    wait_for(browser, "#heads-heatmap .heatmaplayer")
    top = wait_for(browser, "#heads-top tbody tr").text
    store = app.interp_state.store
    model_id = app.interp_state.models.status()["model_id"]
    best = store.latest_scores(model_id, "previous_token").top(1)[0]
    assert top.split()[1] == f"L{best['layer']}.H{best['head']}"  # the page shows the stored scan
    screenshot(browser, "heads-after-scan")


def test_bad_scan_inputs_show_errors(dashboard, browser, screenshot):
    base, _ = dashboard
    browser.get(f"{base}/scans?detector=previous_token")
    wait_for(browser, ".param-form")
    fill_scan_form(browser, {"n_prompts": "two"})
    browser.find_element(By.ID, "scan-launch").click()
    assert "'two' is not a valid int" in wait_for(browser, "#scan-error").text
    # A value that passes the form but fails in the scan: the run fails and shows its error.
    fill_scan_form(browser, {"n_prompts": 1, "max_tokens": 9000, "prompts": "repeated"})
    browser.find_element(By.ID, "scan-launch").click()
    wait_for(browser, "#scan-queued")
    assert "exceed" in failed_row(browser, "failed").text and "context" in failed_row(browser, "failed").text
    screenshot(browser, "scans-failed")


def test_patching_heatmap_and_circuit_graph(dashboard, browser, screenshot):
    base, _ = dashboard
    browser.get(f"{base}/circuits")
    wait_for(browser, "#patch-heatmap .heatmaplayer")
    wait_for(browser, "#circuit-graph .scatterlayer")
    faithfulness = wait_for(browser, "#circuit-faithfulness").text
    assert "faithfulness 87.0%" in faithfulness and "12.0% ± 5.0%" in faithfulness
    roles = wait_for(browser, "#circuit-roles").text
    assert "name_mover" in roles and "20.4" in roles and "s_inhibition" in roles
    legend = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#circuit-graph .legendtext")]
    assert {"previous_token", "induction", "s_inhibition", "name_mover"} <= set(legend)
    screenshot(browser, "circuits")
    layer, head = FIXTURE_TOP
    click_heatmap_cell(browser, "patch-heatmap", layer, head)
    url = wait_url(browser, lambda u: u.path == "/head")
    assert (query(url)["layer"], query(url)["head"]) == (str(layer), str(head))


def test_patching_launched_from_the_page_lands_as_a_heatmap(dashboard, browser, screenshot):
    base, app = dashboard
    browser.get(f"{base}/circuits")
    wait_for(browser, ".launch summary").click()
    choose(browser, "#patch-method", "attribution")
    retype(wait_for(browser, "#patch-prompts"), "2")
    browser.find_element(By.ID, "patch-launch").click()
    wait_for(browser, "#patch-queued", "attribution heads (noise, 2 IOI prompts)")
    link = wait_for(browser, ".patch-job.complete a", "attribution", timeout=240)
    link.click()
    wait_url(browser, lambda u: "patch=" in u.query)
    title = wait_for(browser, "#patch-heatmap .gtitle").text
    assert "attribution patching of heads" in title and "noise" in title
    store = app.interp_state.store
    run = store.list_runs(kind="patch", status="complete")[0]
    assert run.params["method"] == "attribution" and run.result["axes"] == ["layer", "head"]
    screenshot(browser, "circuits-attribution")


def test_steering_generates_with_and_without_the_edit(dashboard, browser, screenshot):
    base, _ = dashboard
    browser.get(f"{base}/steering")
    wait_for(browser, "h2", "Steering playground")
    retype(wait_for(browser, "#steer-heads"), "99.0")
    browser.find_element(By.ID, "steer-run").click()
    assert "do not exist" in wait_for(browser, "#steer-error").text
    retype(wait_for(browser, "#steer-heads"), "18.6, 17.3")
    retype(wait_for(browser, "#steer-tokens"), "3")
    browser.find_element(By.ID, "steer-run").click()
    wait_for(browser, ".notice", "greedy continuations", timeout=120)
    plain = wait_for(browser, "#steer-plain").text
    assert plain.strip() and wait_for(browser, "#steer-edited").text.strip()
    assert "head_scale" in browser.find_element(By.ID, "steer-edit-json").get_attribute("textContent")
    screenshot(browser, "steering")


def test_unknown_page_says_so(dashboard, browser):
    base, _ = dashboard
    browser.get(f"{base}/nowhere")
    assert "no page at '/nowhere'" in wait_for(browser, ".error-box").text
