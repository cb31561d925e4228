"""The circuits page in headless Chromium: a stored edge circuit drawn by layer with its
threshold slider and faithfulness curve, a feature circuit's node contexts on click, and
discovery launched from the page (a bad task file refused by line, a tiny greater-than EAP run
that lands in the store, a job cancelled)."""

from __future__ import annotations

import json

import pytest
import torch
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.dashboard.test_browser import choose, click, click_plot_point, retype, wait_for, wait_url

N_EDGES = 3000


@pytest.fixture(scope="module")
def edge_circuit(smollm2, dashboard_store):
    """An EAP-like circuit of SmolLM2's graph: its N_EDGES strongest edges under random scores,
    and a made-up faithfulness curve (the page, not a method, is under test here)."""
    from circuits.circuit import Circuit, Edge
    from circuits.graph import Graph

    graph = Graph.from_model(smollm2)
    scores = torch.randn(graph.n_upstream, graph.n_inputs, generator=torch.Generator().manual_seed(0))
    edges = graph.edge_list(scores, graph.top_edges(scores, N_EDGES))
    ks = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
    curve = [{"k_percent": k, "faithfulness": min(1.0, 0.3 + 0.2 * i)} for i, k in enumerate(ks)]
    randoms = [{"k_percent": k, "faithfulness": k / 100} for k in ks]
    circuit = Circuit(model=smollm2.name, model_id=smollm2.model_id, task="greater-than",
                      heads=[], n_heads_total=smollm2.n_total_heads, method="eap",
                      graph_edges=[Edge.from_json(e) for e in edges],
                      evaluation={"faithfulness_curve": curve, "random_curve": randoms,
                                  "cpr": 0.93, "cmd": 0.041, "random_cmd": 0.72, "n_discover": 8,
                                  "n_eval": 8})
    run_id = circuit.save(dashboard_store)
    yield run_id
    dashboard_store.delete_run(run_id)  # the other pages' tests expect the fixture IOI circuit newest


@pytest.fixture(scope="module")
def feature_circuit(smollm2, dashboard_store):
    """A feature circuit as `sae_features` returns it (made-up scores and contexts)."""
    from circuits.discover import result_circuit

    point = "blocks.{}.hook_resid_pre"
    nodes = [{"id": f"{point.format(3)}/f{f}", "kind": "sae_feature", "layer": 3, "feature": f,
              "score": s, "density": 0.02,
              "contexts": [{"text": f"the war lasted from{f}", "token": f"{f}", "activation": 2.5}]}
             for f, s in ((12, 0.5), (40, -0.2))]
    nodes.append({"id": f"{point.format(3)}/error", "kind": "sae_error", "layer": 3, "score": 0.1})
    nodes.append({"id": f"{point.format(9)}/f7", "kind": "sae_feature", "layer": 9, "feature": 7, "score": 0.6})
    edges = [{"src": f"{point.format(3)}/f12", "dst": f"{point.format(9)}/f7", "score": 0.4},
             {"src": f"{point.format(3)}/f40", "dst": f"{point.format(9)}/f7", "score": -0.1},
             {"src": f"{point.format(3)}/error", "dst": f"{point.format(9)}/f7", "score": 0.05},
             {"src": f"{point.format(9)}/f7", "dst": "logits", "score": 0.6}]
    result = {"method": "sae-features", "task": "ioi", "model": smollm2.name,
              "model_id": smollm2.model_id, "nodes": nodes, "edges": edges, "heads": [],
              "head_scores": [{"layer": 0, "head": h, "score": 0.0} for h in range(smollm2.n_total_heads)],
              "faithfulness_curve": [{"k_percent": 50, "faithfulness": 0.7}, {"k_percent": 100, "faithfulness": 1.0}],
              "random_curve": [{"k_percent": 50, "faithfulness": 0.1}, {"k_percent": 100, "faithfulness": 1.0}],
              "cpr": 0.6, "cmd": 0.4, "random_cmd": 0.8}
    run_id = result_circuit(result).save(dashboard_store)
    yield run_id
    dashboard_store.delete_run(run_id)


def _subtitle(browser) -> str:
    return wait_for(browser, "#circuit-graph .gtitle").text


@pytest.mark.browser
@pytest.mark.slow
def test_edge_graph_threshold_slider_and_faithfulness_curve(dashboard, browser, screenshot,
                                                            smollm2, edge_circuit):
    base, _ = dashboard
    browser.get(f"{base}/circuits?model_id={smollm2.model_id}&circuit={edge_circuit}")
    wait_for(browser, "#circuit-graph .scatterlayer")
    assert f"200 of {N_EDGES:,} edges (the 200 strongest)" in _subtitle(browser)
    assert "CMD 0.041" in wait_for(browser, "#circuit-summary").text
    # The slider, moved with the keyboard as a person can: two steps up = 1,000 edges.
    handle = wait_for(browser, "#circuit-threshold [role=slider]")
    handle.click()
    handle.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    wait_for(browser, "#circuit-graph .gtitle", f"1,000 of {N_EDGES:,} edges")
    # By |score|: the slider is rebuilt over the scores; its end keeps the strongest edge only.
    wait_for(browser, "#circuit-threshold-mode label", "|score|").click()
    wait_for(browser, "#circuit-graph .gtitle", "|score| >=")
    handle = wait_for(browser, "#circuit-threshold [role=slider]")
    handle.click()
    handle.send_keys(Keys.END)
    wait_for(browser, "#circuit-graph .gtitle", f"1 of {N_EDGES:,} edges")
    curve = wait_for(browser, "#circuit-curve")
    legend = [t.text for t in curve.find_elements(By.CSS_SELECTOR, ".legendtext")]
    assert legend == ["circuit", "random circuits"]
    assert "random CMD 0.720" in curve.find_element(By.CSS_SELECTOR, ".annotation").text
    assert curve.find_element(By.CSS_SELECTOR, ".xtitle").text.startswith("circuit size (% of edges")
    handle.send_keys(Keys.HOME)  # back to every edge: drawing is capped, and the title says so
    wait_for(browser, "#circuit-graph .gtitle", "drawing the strongest 2,000")
    screenshot(browser, "circuits-edge-graph")


@pytest.mark.browser
@pytest.mark.slow
def test_feature_circuit_node_shows_its_top_contexts(dashboard, browser, screenshot, smollm2,
                                                     feature_circuit):
    base, _ = dashboard
    browser.get(f"{base}/circuits?model_id={smollm2.model_id}&circuit={feature_circuit}")
    wait_for(browser, "#circuit-graph .scatterlayer")
    legend = {t.text for t in browser.find_elements(By.CSS_SELECTOR, "#circuit-graph .legendtext")}
    assert {"SAE feature", "SAE error"} <= legend
    x, y = browser.execute_script("""
        const gd = document.querySelector('#circuit-graph .js-plotly-plot');
        for (const t of gd.data) { if (!t.customdata) continue;
            const i = t.customdata.indexOf(arguments[0]); if (i >= 0) return [t.x[i], t.y[i]]; }
    """, "blocks.3.hook_resid_pre/f12")
    click_plot_point(browser, "circuit-graph", x, y)
    contexts = wait_for(browser, "#circuit-node-contexts", "the war lasted from")
    assert "12" in contexts.text and "2.50" in contexts.text
    assert "fires on 2.00%" in wait_for(browser, "#circuit-node").text
    assert "SAE nodes" in wait_for(browser, "#circuit-curve .xtitle").text
    screenshot(browser, "circuits-feature-circuit")


@pytest.fixture
def own_runs(dashboard):
    """Deletes the circuit runs a test adds to the shared store (the other pages' tests expect
    the fixture IOI circuit to be the newest)."""
    store = dashboard[1].interp_state.store
    before = {r.id for r in store.list_runs(kind="circuit")}
    yield
    for run in store.list_runs(kind="circuit"):
        if run.id not in before and run.status != "running":
            store.delete_run(run.id)


@pytest.mark.browser
@pytest.mark.slow
def test_discovery_from_the_page_bad_file_then_a_run_then_a_cancel(dashboard, browser, screenshot,
                                                                   tmp_path, smollm2, own_runs):
    base, app = dashboard
    browser.get(f"{base}/circuits?model_id={smollm2.model_id}")
    wait_for(browser, "#circuit-launch-box summary").click()
    bad = tmp_path / "mine.jsonl"
    good = {"clean": "When Mary and John went to the store, John gave a drink to",
            "corrupted": "When Alice and Bob went to the store, Carol gave a drink to",
            "answer": " Mary", "wrong": " John"}
    bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, "wrong": None}) + "\n")
    browser.find_element(By.CSS_SELECTOR, "#circuit-upload input[type=file]").send_keys(str(bad))
    error = wait_for(browser, "#circuit-upload-error").text
    assert "mine.jsonl line 2" in error and "wrong" in error
    # greater-than by EAP on 2 + 2 prompts, as a background job; it lands in the store
    choose(browser, "#circuit-task", "greater-than")
    choose(browser, "#circuit-method", "eap: edge attribution")
    retype(wait_for(browser, "#circuit-n-discover"), "2")
    retype(wait_for(browser, "#circuit-n-eval"), "2")
    browser.find_element(By.ID, "circuit-launch").click()
    wait_for(browser, "#circuit-queued", "eap circuit of greater-than (2 + 2 prompts)")
    link = wait_for(browser, "#circuit-jobs .patch-job.complete a", "eap · greater-than", timeout=120)
    run = app.interp_state.store.get_run(link.get_attribute("href").split("circuit=")[1])
    assert run.params["method"] == "eap" and run.result["evaluation"]["n_eval"] == 2
    link.click()
    wait_url(browser, lambda u: f"circuit={run.id}" in u.query)
    assert "eap on greater-than" in wait_for(browser, "#circuit-summary").text
    wait_for(browser, "#circuit-graph .scatterlayer")
    wait_for(browser, "#circuit-curve .scatterlayer")
    screenshot(browser, "circuits-discovered")
    # a second job, cancelled while it runs
    wait_for(browser, "#circuit-launch-box summary").click()
    choose(browser, "#circuit-method", "eap-ig")
    retype(wait_for(browser, "#circuit-n-discover"), "16")
    browser.find_element(By.ID, "circuit-launch").click()
    wait_for(browser, "#circuit-jobs button", "Cancel", timeout=60)
    click(browser, "#circuit-jobs button", "Cancel")
    wait_for(browser, "#circuit-jobs .cancelled", "eap-ig", timeout=60)


# ---- the page's checks, without a browser ----------------------------------------------------

def _state(tmp_path, model=None):
    from types import SimpleNamespace

    return SimpleNamespace(store=SimpleNamespace(path=tmp_path / "results.sqlite"),
                           models=SimpleNamespace(model=model), jobs=None)


def _upload(text: str) -> str:
    import base64

    return "data:application/octet-stream;base64," + base64.b64encode(text.encode()).decode()


def test_task_file_is_checked_line_by_line_before_any_job(tmp_path, smollm2):
    from dashboard.pages.circuits import launch_discovery, receive_task_file
    from interp.errors import InvalidInput

    pair = {"clean": "When Mary and John went to the store, John gave a drink to",
            "corrupted": "When Alice and Bob went to the store, Carol gave a drink to",
            "answer": " Mary", "wrong": " John"}
    state = _state(tmp_path, smollm2)
    path, summary = receive_task_file(state, _upload("\n".join([json.dumps(pair)] * 3)), "ok.jsonl")
    assert summary.startswith("ok.jsonl: 3 prompt pairs") and "single-token answers" in summary
    with pytest.raises(InvalidInput, match="line 1: not valid JSON"):
        receive_task_file(state, _upload("{oops"), "bad.jsonl")
    with pytest.raises(InvalidInput, match="line 2: answer ' Mary and' is not one token"):
        receive_task_file(state, _upload(json.dumps(pair) + "\n" + json.dumps({**pair, "answer": " Mary and"})),
                          "two.jsonl")
    with pytest.raises(InvalidInput, match="not a .jsonl file"):
        receive_task_file(state, _upload("x"), "task.csv")
    # launch: every check before a job is queued (state.jobs is None: a queued job would fail)
    assert "upload a .jsonl task file first" in str(launch_discovery(state, "file", None, "eap", 4, 4, 5))
    assert "works on ioi only" in str(launch_discovery(state, "file", path, "path", 4, 4, 5))
    assert "n_eval must be from 1 to 256" in str(launch_discovery(state, "ioi", None, "eap", 4, 1000, 5))
    assert "steps must be a whole number" in str(launch_discovery(state, "ioi", None, "eap-ig", 4, 4, 2.5))
    assert "circuit_percent must be from 0.1 to 20.0" in str(
        launch_discovery(state, "ioi", None, "eap", 4, 4, 5, 50))
