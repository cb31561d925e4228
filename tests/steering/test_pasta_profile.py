"""PASTA head profiling on SmolLM2's real weights: deterministic, its per-head gains equal
single-head steering measured directly (full forwards, not the profile's resumed ones), and
`interp steer --pasta PHRASE --heads auto` steers the stored set; bad input is refused before
any model loads."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from interp.edit_kinds import check_edit
from interp.errors import InvalidInput
from interp.steering.pasta_profile import (PastaProfile, choose_heads, evaluate_heads, prepare,
                                           profile_heads)
from interp.tasks.pasta_tasks import BUILTIN, load_pasta_task, split
from interp_cli.main import main

torch.set_num_threads(1)
LAYER = 22          # one late layer keeps the profile to a couple of forwards


@pytest.fixture(scope="module")
def tiny_profile(smollm2):
    return profile_heads(smollm2, ["counterfactual"], n_items=2, layers=None, size=2,
                         batch_size=32, only_layers=[LAYER])


def test_profile_is_deterministic_and_ranks_match_direct_steering(smollm2, tiny_profile):
    again = profile_heads(smollm2, ["counterfactual"], n_items=2, layers=None, size=2,
                          batch_size=32, only_layers=[LAYER])
    assert again.head_gains == tiny_profile.head_gains and again.heads == tiny_profile.heads
    rows = tiny_profile.head_gains["counterfactual"]
    assert len(rows) == smollm2.n_heads and [r[2] for r in rows] == sorted((r[2] for r in rows),
                                                                           reverse=True)
    # the best and the worst head, steered alone on the same items with full forwards
    items = prepare(smollm2, load_pasta_task("counterfactual"), 2, 0).items
    base = evaluate_heads(smollm2, items, None)
    direct = {}
    for layer, head, gain, _ in (rows[0], rows[-1]):
        direct[head] = float((evaluate_heads(smollm2, items, [(layer, head)]) - base).mean())
        assert direct[head] == pytest.approx(gain, abs=2e-3)
    assert direct[rows[0][1]] > direct[rows[-1][1]]
    assert float(base.mean()) == pytest.approx(tiny_profile.baseline["counterfactual"]["margin"],
                                               abs=1e-3)


def test_choose_heads_intersects_the_top_sets():
    gains = {"a": [[0, 0, 3.0], [0, 1, 2.0], [0, 2, 1.0], [0, 3, -1.0]],
             "b": [[0, 2, 5.0], [0, 3, 4.0], [0, 1, 0.5], [0, 0, -0.1]]}
    heads, k = choose_heads(gains, size=2)
    # (0,0) hurts b, (0,3) hurts a: only (0,1) and (0,2) help both; both are in the top 3
    assert sorted(heads) == [(0, 1), (0, 2)] and k == 3


def test_splits_are_disjoint_and_seeded():
    for name in BUILTIN:
        task = load_pasta_task(name)
        profile, evaluation = split(task, seed=0)
        assert not {i.id for i in profile} & {i.id for i in evaluation}
        assert len(profile) + len(evaluation) == len(task) >= 60
        assert [i.id for i in split(task, seed=0)[0]] == [i.id for i in profile]
        assert all(item.highlight in item.prompt for item in task.items)


def test_heads_auto_steers_the_stored_profile(smollm2, tiny_profile, tmp_store, tmp_path,
                                              monkeypatch):
    # the two best heads alone (the chosen set itself may be empty on 2 items)
    profile = replace(tiny_profile, heads=[tuple(r[:2]) for r in
                                           tiny_profile.head_gains["counterfactual"][:2]])
    profile.save_to_store(tmp_store)
    monkeypatch.setattr("interp_cli.commands.steer.load_from_args", lambda args: smollm2)
    out = tmp_path / "edit.json"
    prompt = "The capital of France is Rome. Question: What is the capital of France? Answer:"
    code = main(["steer", "smollm2-135m", "--prompt", prompt, "--pasta",
                 "The capital of France is Rome.", "--heads", "auto", "--max-new-tokens", "1",
                 "--store", str(tmp_store.path), "--edit-json", str(out)])
    assert code == 0
    part = json.loads(out.read_text())["parts"][0]
    assert [tuple(h) for h in part["heads"]] == profile.heads
    stored = PastaProfile.from_store(tmp_store, smollm2.model_id)
    assert PastaProfile.from_json(stored.to_json()).heads == profile.heads


def _no_model(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model must not load for bad input")
    monkeypatch.setattr("interp.models.load_model", fail)


def test_bad_input_is_refused_before_the_model_loads(tmp_path, tmp_store, capsys, monkeypatch):
    _no_model(monkeypatch)
    store = str(tmp_store.path)
    prompt = ["--prompt", "The capital of France is Rome. Answer:"]
    # no profile stored: the error names the command that makes one
    assert main(["steer", "smollm2-135m", *prompt, "--pasta", "Rome", "--heads", "auto",
                 "--store", store]) != 0
    assert "interp pasta smollm2-135m" in capsys.readouterr().err
    # a phrase that is not in the prompt
    PastaProfile("smollm2-135m@x", [(20, 1)]).save_to_store(tmp_store)
    assert main(["steer", "smollm2-135m", *prompt, "--pasta", "Paris", "--heads", "auto",
                 "--store", store]) != 0
    assert "does not occur in the prompt" in capsys.readouterr().err
    # an unknown task file, and a task file whose highlight is not in its prompt
    assert main(["pasta", "smollm2-135m", "--tasks", str(tmp_path / "missing.jsonl"),
                 "--store", store]) != 0
    assert "unknown PASTA task" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a b c", "highlight": "d", "target": " x",
                               "foils": [" y"]}) + "\n")
    with pytest.raises(InvalidInput, match="line 1.*does not occur"):
        load_pasta_task(bad)
    assert main(["pasta", "smollm2-135m", "--n-items", "0", "--store", store]) != 0
    assert "--n-items" in capsys.readouterr().err
    # 'auto' reaching the edit check unresolved (e.g. typed into a form) names the fix
    with pytest.raises(InvalidInput, match="interp pasta MODEL"):
        check_edit("pasta", "a b c", "auto", 0.01, ["b"])
