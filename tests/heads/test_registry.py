"""The detector registry and its parameters: what the CLI and the dashboard's forms rely on."""

import pytest

from interp_cli.commands.scan import parse_params
from interp.errors import InvalidInput
from interp.heads import DETECTORS, get_detector, parse_detectors


def test_registry_lists_every_detector_of_the_issue():
    assert set(DETECTORS) == {"previous_token", "duplicate_token", "induction", "sink", "retrieval", "streaming", "safety"}


def test_unknown_detector_lists_the_valid_ones():
    with pytest.raises(InvalidInput) as error:
        get_detector("inductoin")
    for name in DETECTORS:
        assert name in str(error.value)
    with pytest.raises(InvalidInput):
        parse_detectors(" , ")


def test_parse_detectors_keeps_order_and_drops_repeats():
    assert [d.name for d in parse_detectors("sink, induction,sink")] == ["sink", "induction"]


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_detector_describes_itself_for_a_form(name):
    detector = get_detector(name)
    described = detector.describe()
    assert described["name"] == name and described["description"] and described["behaviour"]
    fields = described["params"]
    assert fields and all({"name", "type", "default", "help"} <= set(f) for f in fields)
    assert all(f["help"] for f in fields)
    # the defaults shown round-trip through make_params (what a form submits back)
    params = detector.make_params({f["name"]: f["default"] for f in fields})
    assert params == detector.default_params()


def test_make_params_converts_form_strings_and_rejects_bad_values():
    sink = get_detector("sink")
    params = sink.make_params({"epsilon": "0.25", "min_queries": "8", "first_token": "bos"})
    assert params.epsilon == 0.25 and params.min_queries == 8 and params.first_token == "bos"
    streaming = get_detector("streaming").make_params({"windows": "32,128"})
    assert streaming.windows == (32, 128)
    induction = get_detector("induction").make_params({"exclude_bos": "true"})
    assert induction.exclude_bos is True
    assert get_detector("retrieval").make_params({"haystack": "none"}).haystack is None
    with pytest.raises(InvalidInput, match="no parameter"):
        sink.make_params({"epsilonn": 0.3})
    with pytest.raises(InvalidInput, match="one of"):
        sink.make_params({"first_token": "eos"})
    with pytest.raises(InvalidInput, match="not a valid"):
        sink.make_params({"min_queries": "many"})


def test_cli_param_syntax():
    assert parse_params(["sink.epsilon=0.2", "sink.min_queries=4", "streaming.windows=8,16"]) == {
        "sink": {"epsilon": "0.2", "min_queries": "4"}, "streaming": {"windows": "8,16"}}
    with pytest.raises(InvalidInput, match="DETECTOR.NAME=VALUE"):
        parse_params(["epsilon=0.2"])


def test_cli_overrides_map_prompts_and_tokens():
    assert get_detector("induction").cli_overrides(4, 128) == {"n_prompts": 4, "max_tokens": 128}
    assert get_detector("retrieval").cli_overrides(2, 2000) == {"n_needles": 2, "context_lengths": (1000, 2000)}
    assert get_detector("sink").cli_overrides(None, None) == {}


def test_every_detector_says_what_its_score_means():
    """The dashboard prints `meaning` under each heatmap; a new detector must say it too."""
    from interp.heads import DETECTORS
    from interp.heads.base import score_meaning

    for name, detector in DETECTORS.items():
        assert detector.meaning and "20" in detector.meaning, name   # a cited paper's year
        assert score_meaning(name) == detector.meaning
