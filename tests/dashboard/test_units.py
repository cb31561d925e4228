"""The dashboard's parts without a browser: input checks, jobs, the model holder, the frame."""

from __future__ import annotations

import threading
import time
import types

import pytest
import torch

from interp.errors import InvalidInput
from interp.scores import HeadScores

from dashboard import detectors
from dashboard.jobs import JobRunner
from dashboard.layout import parse_query, query_string
from dashboard.state import AppState, ModelBusy, ModelHolder, ModelNotReady

FAKE_MODEL = types.SimpleNamespace(name="fake", model_id="fake@000000000000")


# ---- typed input -------------------------------------------------------------------------
def test_query_strings_round_trip():
    query = query_string(model_id="m@1", detector="sink", compare=None, prompt="a b&c=d")
    assert query.startswith("?") and "compare" not in query
    assert parse_query(query) == {"model_id": "m@1", "detector": "sink", "prompt": "a b&c=d"}
    assert query_string() == ""


# ---- the detector registry (interp.heads) as the Scans page uses it ----------------------
def test_every_registered_detector_has_a_form():
    names = detectors.names()
    assert {"previous_token", "induction", "sink", "retrieval", "streaming"} <= set(names)
    for name in names:
        described = detectors.describe(name)
        assert described["params"] and all({"name", "type", "default", "help"} <= set(p)
                                           for p in described["params"])


def test_form_values_are_converted_by_the_registry():
    parsed = detectors.parse_params("previous_token", {"n_prompts": "4", "exclude_bos": "True",
                                                       "seed": "", "prompts": None})
    assert parsed["n_prompts"] == 4 and parsed["exclude_bos"] is True
    assert parsed["seed"] == 0 and parsed["prompts"] == "mixed"  # empty fields keep defaults
    with pytest.raises(InvalidInput, match="'two' is not a valid int"):
        detectors.parse_params("previous_token", {"n_prompts": "two"})
    with pytest.raises(InvalidInput, match="no parameter"):
        detectors.parse_params("previous_token", {"bogus": "1"})
    with pytest.raises(InvalidInput, match="unknown detector 'nope'.*induction"):
        detectors.describe("nope")
    assert detectors.parse_verify_k("") == 0 and detectors.parse_verify_k(" 5 ") == 5
    for bad in ("five", "-1"):
        with pytest.raises(InvalidInput, match="causal check k"):
            detectors.parse_verify_k(bad)


# ---- the model holder ------------------------------------------------------------------------
def test_a_failed_load_is_reported_not_raised():
    def loader(name):
        raise OSError(f"cannot read {name}")

    holder = ModelHolder(loader)
    assert holder.load_async("broken")
    holder.wait_ready(10)
    status = holder.status()
    assert status["state"] == "failed" and "cannot read broken" in status["error"]
    with pytest.raises(ModelNotReady, match="failed to load"):
        with holder.use(timeout=0.1):
            pass


def test_one_forward_at_a_time():
    holder = ModelHolder()
    holder.set_model(FAKE_MODEL)
    entered, release = threading.Event(), threading.Event()

    def hold():
        with holder.use(purpose="a long scan"):
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    entered.wait(10)
    assert holder.status()["busy"] == "a long scan"
    with pytest.raises(ModelBusy, match="a long scan"):
        with holder.use(timeout=0.1):
            pass
    release.set()
    thread.join()
    with holder.use(timeout=1) as model:
        assert model is FAKE_MODEL


def test_the_pattern_cache_is_bounded_by_entries_and_bytes():
    from dashboard.state import LRU

    cache = LRU(3, weigh=len, max_weight=10)
    for key, value in [("a", "xxxx"), ("b", "xxxx"), ("c", "xx")]:
        cache.put(key, value)
    assert cache.get("a") == "xxxx"                # "a" is now the most recently used
    cache.put("d", "xxx")                           # 4 entries > 3 and 13 chars > 10: evict "b"
    assert cache.get("b") is None and cache.get("a") and cache.get("c") and cache.get("d")
    cache.put("e", "x" * 20)                        # alone over the weight: kept, all else gone
    assert [k for k in "acde" if cache.get(k)] == ["e"]


@pytest.mark.slow
def test_waiting_pattern_requests_share_one_forward(smollm2, tmp_store):
    from dashboard.pages.head import compute_pattern

    models = ModelHolder()
    models.set_model(smollm2)
    state = AppState(store=tmp_store, models=models)
    text = "The cat sat on the mat."
    for layer in (3, 99):  # pages that asked while the model was busy (99: impossible)
        state.caches["pending_patterns"].add((text, layer))
    pattern, model_id = compute_pattern(state, text, 5)
    assert pattern.layer == 5 and model_id == smollm2.model_id
    assert state.caches["patterns"].get((model_id, text, 3)).layer == 3  # computed alongside
    assert state.caches["pending_patterns"].take(text) == set()
    with pytest.raises(InvalidInput, match="layer 99 does not exist"):
        compute_pattern(state, text, 99)


# ---- background jobs -------------------------------------------------------------------------
def job_state(tmp_store):
    models = ModelHolder()
    models.set_model(FAKE_MODEL)
    return AppState(store=tmp_store, models=models)


def stepping_task(steps: int = 3, pause: float = 0.0, fail: bool = False):
    """A test double of a library call that records itself as a store run, as run_scan does:
    progress in steps, then scores (or an error)."""
    def task(model, store):
        with store.run("scan", model.model_id, {"detector": "stepper", "steps": steps}) as run:
            for step in range(steps):
                run.progress(step / steps, f"step {step}")
                time.sleep(pause)
            if fail:
                raise InvalidInput("the haystack is shorter than the asked length")
            run.add_scores(HeadScores("stepper", torch.arange(6.0).view(2, 3), model.model_id))
    return task


def test_a_job_completes_into_the_store(tmp_store):
    runner = JobRunner(job_state(tmp_store))
    job = runner.wait(runner.submit("scan", "stepper", stepping_task()).id, timeout=30)
    assert job.state == "complete"
    run = tmp_store.get_run(job.run_id)
    assert run.status == "complete" and run.params == {"detector": "stepper", "steps": 3}
    assert torch.equal(tmp_store.latest_scores(FAKE_MODEL.model_id, "stepper").scores,
                       torch.arange(6.0).view(2, 3))


def test_a_failed_job_keeps_its_error(tmp_store):
    runner = JobRunner(job_state(tmp_store))
    job = runner.wait(runner.submit("scan", "stepper", stepping_task(fail=True)).id, timeout=30)
    assert job.state == "failed" and "haystack is shorter" in job.error
    run = tmp_store.get_run(job.run_id)
    assert run.status == "failed" and "haystack is shorter" in run.error
    assert runner.without_run() == []  # the store shows it; the page must not list it twice


def test_a_job_without_a_model_fails_before_its_run(tmp_store):
    runner = JobRunner(AppState(store=tmp_store, models=ModelHolder()))
    job = runner.wait(runner.submit("scan", "stepper", stepping_task()).id, timeout=30)
    assert job.state == "failed" and "no model is loaded" in job.error
    assert runner.without_run("scan") == [job] and runner.without_run("patch") == []


def test_a_running_job_can_be_cancelled(tmp_store):
    runner = JobRunner(job_state(tmp_store))
    job = runner.submit("scan", "stepper", stepping_task(steps=200, pause=0.05))
    deadline = time.time() + 30
    while job.run_id is None and time.time() < deadline:
        time.sleep(0.02)
    assert runner.cancel(job.run_id)
    runner.wait(job.id, timeout=30)
    assert job.state == "cancelled"
    assert tmp_store.get_run(job.run_id).status == "cancelled"


def test_a_queued_job_is_cancelled_before_it_starts(tmp_store):
    runner = JobRunner(job_state(tmp_store))
    first = runner.submit("scan", "first", stepping_task(steps=20, pause=0.05))
    second = runner.submit("scan", "second", stepping_task(steps=1))
    assert runner.cancel(second.id) and second.state == "cancelled"
    runner.wait(first.id, timeout=30)
    assert second.run_id is None and runner.without_run() == []
    assert first.state == "complete"


# ---- the frame: navigation from the pages list, the first page served ----------------------
def test_navigation_lists_every_page_in_order(tmp_store):
    from dashboard.app import create_app
    from dashboard.pages import PAGES

    app = create_app(None, tmp_store.path)
    nav = app.layout.children[1].children[1]
    assert [(link.children, link.href) for link in nav.children] == \
        [(page.TITLE, page.PATH) for page in PAGES]
    app.interp_state.jobs.shutdown()


def callback_request(client, output_part: str, inputs: list[dict]):
    """POST one callback as the browser would; the output string comes from the app itself."""
    deps = client.get("/_dash-dependencies").get_json()
    output = next(d["output"] for d in deps if output_part in d["output"])
    outputs = [{"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]}
               for o in output.strip(".").split("...")]
    return client.post("/_dash-update-component", json={
        "output": output, "outputs": outputs if len(outputs) > 1 else outputs[0],
        "inputs": inputs, "changedPropIds": [f"{inputs[0]['id']}.{inputs[0]['property']}"],
        "state": []})


def test_page_served_is_set_by_page_content_not_by_the_frame(tmp_store):
    """The start-up model load waits for `page_served`: the router (the page's frame) and the
    badge must not set it; the first callback that answers with page content does."""
    from dashboard.app import create_app

    app = create_app(None, tmp_store.path)
    served = app.interp_state.page_served
    client = app.server.test_client()
    url = [{"id": "url", "property": "pathname", "value": "/heads"},
           {"id": "url", "property": "search", "value": ""}]
    assert callback_request(client, "page.children", url).status_code == 200
    assert callback_request(client, "model-badge.children",
                            [{"id": "badge-poll", "property": "n_intervals", "value": 1}]
                            ).status_code == 200
    assert not served.is_set()
    query = {"model_id": None, "detector": None, "compare": None, "view": "side"}
    response = callback_request(client, "heads-heatmap.figure",
                                [{"id": "heads-query", "property": "data", "value": query}])
    assert response.status_code == 200 and served.is_set()
    app.interp_state.jobs.shutdown()


# ---- a failed load keeps the working model -------------------------------------------------
def test_a_failed_load_keeps_the_working_model():
    def loader(name):
        if name == "good":
            return types.SimpleNamespace(name="good", model_id="good@1")
        raise InvalidInput(f"{name} is a text file, not a GGUF model")

    holder = ModelHolder(loader)
    holder.load_async("good")
    assert holder.wait_ready(10).name == "good"
    holder.load_async("/tmp/fake.gguf")
    holder.wait_ready(10)
    status = holder.status()
    assert status["state"] == "ready" and status["name"] == "good"  # the picker shows this one
    assert status["last_failure"]["name"] == "/tmp/fake.gguf"
    assert "text file" in status["last_failure"]["error"]
    with holder.use(timeout=1) as model:
        assert model.name == "good"


# ---- cancel stops a real scan inside its forward ---------------------------------------------
@pytest.mark.slow
def test_cancel_stops_a_huge_scan_within_seconds_and_frees_the_model(smollm2, tmp_store):
    """A scan sized to run for hours (many long prompts, one per forward) is cancelled while
    its first forwards run; the job ends within seconds, the model is free again."""
    torch.set_num_threads(1)
    models = ModelHolder()
    models.set_model(smollm2)
    runner = JobRunner(AppState(store=tmp_store, models=models))
    params = {"induction": detectors.parse_params("induction", {
        "n_prompts": 512, "max_tokens": 2048, "prompts": "repeated", "batch_size": 4})}
    job = runner.submit("scan", "huge", detectors.scan_task(["induction"], params))
    deadline = time.time() + 60
    while job.run_id is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(4.0)                     # its prompts built, inside the first forward by now
    asked = time.perf_counter()
    runner.cancel(job.id)
    runner.wait(job.id, timeout=30)
    took = time.perf_counter() - asked
    assert job.state == "cancelled" and took < 3, (job.state, took)
    assert tmp_store.get_run(job.run_id).status == "cancelled"
    with models.use(timeout=1) as model:
        assert model is smollm2


@pytest.mark.slow
def test_loading_a_model_the_store_has_no_scan_of_starts_the_standard_scans(smollm2, tmp_store):
    from dashboard.app import create_app
    from dashboard.first_run import active_job
    from interp.heads.scan import STANDARD_SCANS

    app = create_app(model=smollm2, store_path=tmp_store.path)
    state = app.interp_state
    job = active_job(state, smollm2.model_id)
    assert job is not None and job.parts == list(STANDARD_SCANS) and "safety" not in job.parts
    state.jobs.cancel(job.id)
    state.jobs.wait(job.id, timeout=30)
    assert job.state == "cancelled"
    # A store that holds a scan of the model (even a cancelled one): nothing starts.
    again = create_app(model=smollm2, store_path=tmp_store.path)
    assert active_job(again.interp_state, smollm2.model_id) is None


def test_steering_heads_auto_resolve_to_the_stored_pasta_profile(tmp_store):
    """The Steering page's heads "auto" are what `interp steer --heads auto` steers: the newest
    PASTA profile of the loaded weights; other edits and missing profiles are refused."""
    from dashboard.pages.steering import resolve_auto_heads
    from interp.steering.pasta_profile import PastaProfile

    state = types.SimpleNamespace(store=tmp_store, models=types.SimpleNamespace(
        model=types.SimpleNamespace(model_id="smollm2-135m@abc")))
    request = {"kind": "pasta", "heads": "auto", "prompt": "p", "strength": 0.01, "phrases": "p"}
    with pytest.raises(InvalidInput, match="interp pasta smollm2-135m"):
        resolve_auto_heads(state, request)
    PastaProfile("smollm2-135m@abc", [(20, 1), (21, 3)]).save_to_store(tmp_store)
    assert resolve_auto_heads(state, request)["heads"] == "20.1, 21.3"
    with pytest.raises(InvalidInput, match="choose the PASTA edit"):
        resolve_auto_heads(state, {**request, "kind": "scale"})
    assert resolve_auto_heads(state, {**request, "heads": "3.1"})["heads"] == "3.1"
