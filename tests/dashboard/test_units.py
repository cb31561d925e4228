"""The dashboard's parts without a browser: input checks, jobs, the model holder, figures, CLI."""

from __future__ import annotations

import threading
import time
import types

import pytest
import torch

from interp.errors import InvalidInput
from interp.scores import HeadScores

from dashboard import detectors, figures
from dashboard.jobs import JobRunner
from dashboard.layout import parse_query, query_string
from dashboard.pages.model import check_model_path
from dashboard.pages.steering import parse_heads
from dashboard.state import AppState, ModelBusy, ModelHolder, ModelNotReady

FAKE_MODEL = types.SimpleNamespace(name="fake", model_id="fake@000000000000")


# ---- typed input -------------------------------------------------------------------------
def test_model_paths_are_checked(tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        check_model_path(str(tmp_path / "missing"))
    with pytest.raises(InvalidInput, match="without a config.json"):
        check_model_path(str(tmp_path))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InvalidInput, match="neither a model directory nor a .gguf"):
        check_model_path(str(tmp_path / "notes.txt"))
    with pytest.raises(InvalidInput, match="type a path"):
        check_model_path("   ")
    (tmp_path / "config.json").write_text("{}")
    assert check_model_path(f"  {tmp_path}  ") == str(tmp_path.resolve())
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert check_model_path(str(tmp_path / "m.gguf")) == str((tmp_path / "m.gguf").resolve())


def test_head_lists_are_parsed_never_evaluated():
    assert parse_heads("18.6, 17.3 ;2.0") == [(18, 6), (17, 3), (2, 0)]
    assert parse_heads("") == []
    for bad in ("18", "a.b", "__import__('os').system('true')", "1.2.3", "-1.2"):
        with pytest.raises(InvalidInput, match="LAYER.HEAD"):
            parse_heads(bad)


def test_query_strings_round_trip():
    query = query_string(model_id="m@1", detector="sink", compare=None, prompt="a b&c=d")
    assert query.startswith("?") and "compare" not in query
    assert parse_query(query) == {"model_id": "m@1", "detector": "sink", "prompt": "a b&c=d"}
    assert query_string() == ""


# ---- the detector registry (interp.heads) as the Scans page uses it ----------------------
def test_every_registered_detector_has_a_form():
    assert detectors.unavailable_reason() is None
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


# ---- figures ---------------------------------------------------------------------------------
def test_heatmap_cells_carry_their_head_and_blank_nans():
    scores = torch.tensor([[0.1, float("nan")], [0.3, 0.4], [0.5, 0.6]])
    fig = figures.head_heatmap(scores, "x", highlight=(2, 1))
    trace = fig.data[0]
    assert trace.z[0][1] is None and trace.z[2][1] == pytest.approx(0.6)
    assert list(trace.customdata[2][1]) == [2, 1]
    assert fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.shapes[0].x0 == 0.5 and fig.layout.shapes[0].y0 == 1.5


def test_pattern_figure_marks_sinks_and_hides_the_future():
    tokens = ["<s>", " a", " b", "\n"]
    pattern = torch.tril(torch.ones(4, 4)) / torch.arange(1, 5).unsqueeze(1)
    fig = figures.attention_pattern_figure(tokens, pattern, sinks=[0], title="t")
    z = fig.data[0].z
    assert z[0][1] is None and z[3][3] == pytest.approx(0.25)
    assert list(fig.data[0].x) == ["0 <s>", "1 ␣a", "2 ␣b", "3 \\n"]
    ticks = list(fig.layout.xaxis.ticktext)
    assert "▼" in ticks[0] and "&lt;s&gt;" in ticks[0] and "▼" not in ticks[1]


def test_patching_colours_are_white_where_a_cell_does_nothing():
    noised = figures.effect_heatmap(torch.tensor([[1.0, 0.25], [1.5, 1.0]]), "t", "layer", "head",
                                    center=1.0).data[0]
    assert (noised.zmid, noised.zmin, noised.zmax) == (1.0, 0.25, 1.75)
    denoised = figures.effect_heatmap(torch.tensor([[0.0, 0.5]]), "t", "layer", "head").data[0]
    assert (denoised.zmid, denoised.zmin, denoised.zmax) == (0.0, -0.5, 0.5)


def test_circuit_edges_are_as_wide_as_their_effect():
    heads = [{"layer": 0, "head": 1, "role": "previous_token"},
             {"layer": 9, "head": 6, "role": "name_mover"}]
    edges = [{"sender": [0, 1], "receiver": [9, 6], "effect": 0.5},
             {"sender": [9, 6], "receiver": "logits", "effect": -1.0}]
    fig = figures.circuit_graph(heads, edges, n_layers=12)
    lines = [t for t in fig.data if t.mode == "lines"]
    assert lines[1].line.width == pytest.approx(8.0) and lines[0].line.width == pytest.approx(4.25)
    assert lines[1].line.dash == "dash" and lines[1].x[1] == 12.5  # logits right of the model
    names = {t.name for t in fig.data if t.mode == "markers+text"}
    assert {"previous_token", "name_mover", "output"} <= names


# ---- command line ----------------------------------------------------------------------------
def test_cli_binds_localhost_by_default_and_checks_the_port(capsys):
    from interp_cli.main import build_parser, main

    args = build_parser().parse_args(["dashboard"])
    assert (args.host, args.port, args.model) == ("127.0.0.1", 8050, "smollm2-135m")
    assert main(["dashboard", "--port", "70000"]) == 2
    assert "not a TCP port" in capsys.readouterr().err
    assert main(["dashboard", "--model", "/no/such/model"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["dashboard", "--model", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
