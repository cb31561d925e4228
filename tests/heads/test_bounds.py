"""Every detector parameter is bounded by the library (interp.heads.base), so the dashboard's
forms and `interp scan` refuse the same values, with a message naming the bound."""

from __future__ import annotations

import dataclasses
import re
import typing

import pytest

from interp.errors import InvalidInput
from interp.heads import DETECTORS, get_detector
from interp.heads.base import bounds_of
from interp.heads.verify import check_verify_options


def test_every_numeric_parameter_has_bounds_and_its_default_lies_inside():
    for detector in DETECTORS.values():
        hints = typing.get_type_hints(detector.Params)
        for f in dataclasses.fields(detector.Params):
            hint = hints[f.name]
            numeric = hint in (int, float) or (typing.get_origin(hint) is tuple and
                                               typing.get_args(hint)[0] in (int, float))
            if not numeric:
                continue
            bounds = bounds_of(f)
            assert bounds is not None, f"{detector.name}.{f.name} has no bounds"
            items = f.default if isinstance(f.default, tuple) else (f.default,)
            assert all(bounds[0] <= v <= bounds[1] for v in items), (detector.name, f.name)
            described = {p["name"]: p for p in detector.describe_params()}[f.name]
            assert described["bounds"] == list(bounds)  # forms show the range


@pytest.mark.parametrize("detector, name, value, bound", [
    ("induction", "n_prompts", "1e9", "[1, 4096]"),
    ("induction", "n_prompts", 1_000_000_000, "[1, 4096]"),
    ("sink", "epsilon", "-3", "[0.0, 1.0]"),
    ("sink", "epsilon", "1e308", "[0.0, 1.0]"),
    ("streaming", "windows", "64, 0", "[1, 131072]"),
    ("retrieval", "depths", "0,150", "[0.0, 100.0]"),
    ("safety", "eps", "-1", "[0.0, 1.0]"),
])
def test_out_of_bounds_values_are_refused_naming_the_bound(detector, name, value, bound):
    with pytest.raises(InvalidInput, match=re.escape(f"{detector}.{name} must lie in {bound}")):
        get_detector(detector).make_params({name: value})


def test_the_size_of_a_scan_is_bounded():
    get_detector("induction").make_params({"n_prompts": 512, "max_tokens": 2048})
    with pytest.raises(InvalidInput, match="n_prompts x max_tokens = 4096 x 2048"):
        get_detector("induction").make_params({"n_prompts": 4096, "max_tokens": 2048})


def test_non_finite_values_are_refused():
    for value in ("nan", "inf", float("-inf")):
        with pytest.raises(InvalidInput, match="finite|not a valid"):
            get_detector("sink").make_params({"epsilon": value})
    assert get_detector("induction").make_params({"n_prompts": "1e1"}).n_prompts == 10


def test_causal_check_sizes_are_bounded():
    check_verify_options(5, "mean", 5, 8, 64)
    for args, word in [((0,), "k"), ((5, "mean", 10**6), "n_random"), ((5, "mean", 5, 10**9), "n_prompts"),
                       ((5, "mean", 5, 8, 10**9), "max_tokens")]:
        with pytest.raises(InvalidInput, match=f"causal check {word} must be a whole number in"):
            check_verify_options(*args)
    with pytest.raises(InvalidInput, match="ablation must be one of"):
        check_verify_options(5, "bogus")


def test_the_cli_refuses_the_same_values_before_loading(capsys, monkeypatch):
    import interp_cli.main as cli

    def fail(*a, **k):
        raise AssertionError("the model must not load for a bad value")
    monkeypatch.setattr("interp.models.load_model", fail)
    assert cli.main(["scan", "--detectors", "induction", "--prompts", "1000000000", "--no-store"]) == 2
    assert "induction.n_prompts must lie in [1, 4096]" in capsys.readouterr().err
    assert cli.main(["scan", "--detectors", "sink", "--param", "sink.epsilon=-3", "--no-store"]) == 2
    assert "sink.epsilon must lie in [0.0, 1.0]" in capsys.readouterr().err
    assert cli.main(["scan", "--detectors", "sink", "--verify", "3", "--random-draws", "0",
                     "--no-store"]) == 2
    assert "n_random must be a whole number" in capsys.readouterr().err


def test_edit_strengths_are_bounded():
    from interp.edit_kinds import check_edit

    with pytest.raises(InvalidInput, match=re.escape("the scale must lie in [-100, 100], got 1e+308")):
        check_edit("scale", "Hello", "1.1", 1e308)
    with pytest.raises(InvalidInput, match="beta must"):
        check_edit("act", "Hello", "1.1", 3)
    assert check_edit("scale", "Hello", "1.1", 2.0)[1] == 2.0
