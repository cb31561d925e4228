"""The edit kinds the CLI and the dashboard offer (interp.edit_kinds) and build_edit, the one
function both call to build them."""

from __future__ import annotations

import types

import pytest

from interp.edit_kinds import EDIT_KINDS, check_edit, parse_edit_heads
from interp.errors import InvalidInput

SHAPE = types.SimpleNamespace(name="tiny", n_layers=2, n_heads=4)
PROMPT = "When Mary and John went to the store, John gave a drink to"


def test_head_lists_are_parsed_never_evaluated():
    assert parse_edit_heads("18.6, 17.3 ;2.0") == [(18, 6), (17, 3), (2, 0)]
    assert parse_edit_heads("") == []
    for bad in ("18", "a.b", "__import__('os').system('true')", "1.2.3", "-1.2"):
        with pytest.raises(InvalidInput, match="LAYER.HEAD"):
            parse_edit_heads(bad)


@pytest.mark.parametrize("kind, prompt, heads, strength, phrases, message", [
    ("scale", "  ", "1.0", 0.0, (), "the prompt is empty"),
    ("scale", PROMPT, "", 0.0, (), "the scale edit needs heads"),
    ("pasta", PROMPT, None, 0.01, ["John"], "the pasta edit needs heads"),
    ("scale", PROMPT, "99.0", 0.0, (), r"heads \[\(99, 0\)\] do not exist in tiny"),
    ("scale", PROMPT, "1.0", None, (), "type a number for the scale"),
    ("scale", PROMPT, "1.0", float("inf"), (), "finite"),
    ("pasta", PROMPT, "1.0", 0.0, ["John"], "alpha must be > 0"),
    ("pasta", PROMPT, "1.0", 0.01, ["  "], "PASTA needs a phrase"),
    ("pasta", PROMPT, "1.0", 0.01, ["Alice"], "'Alice' does not occur in the prompt"),
    ("act", PROMPT, "1.0", 1.5, (), r"beta must be in \[0, 1\]"),
    ("bold", PROMPT, None, 1.0, (), "unknown edit 'bold'; choose one of scale, pasta, act"),
])
def test_bad_requests_are_refused_without_a_model(kind, prompt, heads, strength, phrases, message):
    with pytest.raises(InvalidInput, match=message):
        check_edit(kind, prompt, heads, strength, phrases, shape=SHAPE)


def test_good_requests_come_back_normalized():
    assert check_edit("pasta", PROMPT, "1.2; 0.3", 0.01, "John", shape=SHAPE) == \
        ([(1, 2), (0, 3)], 0.01, ["John"])
    assert check_edit("act", PROMPT, "1.0", EDIT_KINDS["act"].default) == ([(1, 0)], 0.4, [])
    assert check_edit("scale", PROMPT, [(1, 3)], 0) == ([(1, 3)], 0.0, [])
    assert {kind.strength for kind in EDIT_KINDS.values()} == {"scale", "alpha", "beta"}


@pytest.mark.slow
def test_build_edit_builds_what_the_edit_functions_build(smollm2):
    from interp.steering import act_calibration, build_edit, pasta_highlight, scale_heads

    assert build_edit(smollm2, "scale", PROMPT, "20.0,21.1", 0.0).to_dict() == \
        scale_heads(smollm2, [(20, 0), (21, 1)], 0.0).to_dict()
    assert build_edit(smollm2, "pasta", PROMPT, "12.3", 0.01, ["John"]).to_dict() == \
        pasta_highlight(smollm2, PROMPT, ["John"], [(12, 3)], alpha=0.01).to_dict()
    assert build_edit(smollm2, "act", PROMPT, "18.6", 0.4).to_dict() == \
        act_calibration(smollm2, PROMPT, heads=[(18, 6)], beta=0.4).to_dict()
    with pytest.raises(InvalidInput, match="do not exist"):
        build_edit(smollm2, "scale", PROMPT, "30.0", 0.0)
