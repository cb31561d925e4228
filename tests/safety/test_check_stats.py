"""The causal check's statistics and verdicts, against scipy and hand-made conditions (no model):
the 95% intervals, when a top-k set "lowers refusal", and the default head sets of a scan."""

from __future__ import annotations

import pytest
import scipy.stats
import torch

from interp.heads.safety import default_head_sets, mean_interval, top_heads, wilson_interval
from interp.heads.safety.check import _summary_row, _verdict
from interp.scores import HeadScores


@pytest.mark.parametrize("draws", [[0.5, 0.6], [0.55, 0.6, 0.58], [0.1, 0.3, 0.2, 0.25, 0.4]])
def test_mean_interval_is_the_t_interval(draws):
    low, high = mean_interval(draws)
    expected = scipy.stats.t.interval(0.95, len(draws) - 1, loc=sum(draws) / len(draws),
                                      scale=scipy.stats.sem(draws))
    expected = (max(0.0, expected[0]), min(1.0, expected[1]))     # a rate's interval is clipped
    assert (low, high) == pytest.approx(expected, abs=2e-3)
    assert mean_interval([0.5]) is None


def test_wilson_interval_matches_its_formula_from_scipy():
    # scipy's binomtest(...).proportion_ci(method="wilson") is the same score interval
    for successes, n in ((12, 24), (0, 24), (24, 24), (3, 32)):
        expected = scipy.stats.binomtest(successes, n).proportion_ci(0.95, method="wilson")
        assert wilson_interval(successes / n, n) == pytest.approx(
            (expected.low, expected.high), abs=2e-3)


def _condition(heads, generation, logodds, same=1.0):
    return {"heads": heads, "harmful": {"refusal_rate_generation": generation,
                                        "refusal_rate_logodds": logodds},
            "harmless_same_as_baseline": same}


BASE = {"refusal_rate_generation": 0.625, "refusal_rate_logodds": 0.5}


def test_a_top_set_that_refuses_more_is_called_not_lowering():
    """The issue's case: top-3 ablated 0.708 vs baseline 0.625, random 3-head sets ~0.60."""
    randoms = [_condition([[1, 1]], g, 0.5) for g in (0.58, 0.62, 0.60)]
    row = _summary_row(_condition([[22, 2], [11, 3], [11, 7]], 0.708, 0.55), randoms, BASE, 24)
    assert not row["lowers_refusal_generation"] and not row["lowers_refusal_logodds"]
    assert row["refusal_rate_generation_random_draws"] == [0.58, 0.62, 0.60]
    assert row["refusal_rate_generation_random_max_change"] == pytest.approx(0.045)
    verdict = _verdict("ships", 3, row, "query_scale")
    assert "top-3 ships (L22H2 L11H3 L11H7)" in verdict
    assert verdict.count("does NOT lower refusal") == 2


def test_a_top_set_below_baseline_and_random_lowers_and_halves():
    randoms = [_condition([[1, 1]], g, l) for g, l in ((0.60, 0.5), (0.62, 0.45), (0.58, 0.5))]
    row = _summary_row(_condition([[8, 3]], 0.25, 0.47), randoms, BASE, 24)
    assert row["lowers_refusal_generation"] and row["halves_refusal_generation"]
    # log-odds: 0.47 is below the baseline but inside the random draws' interval
    assert not row["lowers_refusal_logodds"]
    assert row["refusal_rate_generation_top_interval"][0] < 0.25 < row["refusal_rate_generation_top_interval"][1]
    assert "generation refusal 0.25 vs baseline 0.62" in _verdict("refusal_logodds", 1, row, "zero")
    # one random draw: no interval, the top set must beat the draw itself
    one = _summary_row(_condition([[8, 3]], 0.55, 0.5), randoms[2:], BASE, 24)
    assert one["refusal_rate_generation_random_interval"] is None
    assert one["lowers_refusal_generation"]         # 0.55 < 0.58 and < 0.625


def test_default_head_sets_take_every_stored_ranking_and_sahara():
    ships = torch.zeros(4, 3)
    ships[2, 1], ships[0, 0], ships[3, 2] = 3.0, 2.0, 1.0
    drop = torch.zeros(4, 3)
    drop[1, 1], drop[3, 2] = 0.5, 0.4
    scores = HeadScores("safety", ships, "m", {"rank_by": "ships"},
                        details={"ships": ships, "refusal_logodds": drop},
                        info={"sahara": {"heads": [[0, 2], [1, 0]], "angles": [1.0, 2.0]}})
    sets = default_head_sets(scores, 2)
    assert sets == {"ships": [(2, 1), (0, 0)], "refusal_logodds": [(1, 1), (3, 2)],
                    "sahara": [(0, 2), (1, 0)]}
    assert top_heads(ships, 3) == [(2, 1), (0, 0), (3, 2)]
    # a scan stored before both rankings were kept: its own scores under its name
    old = HeadScores("safety", ships, "m", {})
    assert default_head_sets(old, 1) == {"ships": [(2, 1)]}
