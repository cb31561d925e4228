"""interp.plots: the head-level figures the dashboard and the notebooks draw."""

from __future__ import annotations

import pytest
import torch

from interp import plots


def test_heatmap_cells_carry_their_head_and_blank_nans():
    scores = torch.tensor([[0.1, float("nan")], [0.3, 0.4], [0.5, 0.6]])
    fig = plots.head_heatmap(scores, "x", highlight=(2, 1))
    trace = fig.data[0]
    assert trace.z[0][1] is None and trace.z[2][1] == pytest.approx(0.6)
    assert list(trace.customdata[2][1]) == [2, 1]
    assert fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.shapes[0].x0 == 0.5 and fig.layout.shapes[0].y0 == 1.5


def test_pattern_figure_marks_sinks_and_hides_the_future():
    tokens = ["<s>", " a", " b", "\n"]
    pattern = torch.tril(torch.ones(4, 4)) / torch.arange(1, 5).unsqueeze(1)
    fig = plots.attention_pattern_figure(tokens, pattern, sinks=[0], title="t")
    z = fig.data[0].z
    assert z[0][1] is None and z[3][3] == pytest.approx(0.25)
    assert list(fig.data[0].x) == ["0 <s>", "1 ␣a", "2 ␣b", "3 \\n"]
    ticks = list(fig.layout.xaxis.ticktext)
    assert "▼" in ticks[0] and "&lt;s&gt;" in ticks[0] and "▼" not in ticks[1]


def test_patching_colours_are_white_where_a_cell_does_nothing():
    noised = plots.effect_heatmap(torch.tensor([[1.0, 0.25], [1.5, 1.0]]), "t", "layer", "head",
                                  center=1.0).data[0]
    assert (noised.zmid, noised.zmin, noised.zmax) == (1.0, 0.25, 1.75)
    denoised = plots.effect_heatmap(torch.tensor([[0.0, 0.5]]), "t", "layer", "head").data[0]
    assert (denoised.zmid, denoised.zmin, denoised.zmax) == (0.0, -0.5, 0.5)
