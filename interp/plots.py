"""Head-level figures: plain data in, a plotly `go.Figure` out. No Dash, no store, no model.

The dashboard draws these, and a notebook draws the same pictures without it:

    from interp.plots import head_heatmap, attention_pattern_figure, effect_heatmap
    head_heatmap(scores.scores, "induction")                  # a HeadScores' [n_layers, n_heads]
    effect_heatmap(result.values, "patching", "layer", "head")  # a PatchResult's map

Circuit figures (the circuit graph) are in `circuits.plots`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import plotly.graph_objects as go

SINK_COLOUR = "#d62728"


def _rows(matrix) -> list[list[float | None]]:
    """A [R, C] tensor/array/list as nested lists, NaN/inf -> None (a blank cell)."""
    rows = matrix.tolist() if hasattr(matrix, "tolist") else [list(r) for r in matrix]
    return [[None if v is None or not math.isfinite(v) else float(v) for v in row] for row in rows]


def empty_figure(message: str, height: int = 320) -> go.Figure:
    """A blank figure that says why there is nothing to draw."""
    fig = go.Figure()
    fig.add_annotation(text=html.escape(message), showarrow=False, x=0.5, y=0.5,
                       xref="paper", yref="paper", font={"size": 15, "color": "#555"})
    fig.update_layout(height=height, xaxis={"visible": False}, yaxis={"visible": False},
                      margin={"l": 20, "r": 20, "t": 20, "b": 20}, plot_bgcolor="white")
    return fig


def head_heatmap(scores, title: str, highlight: tuple[int, int] | None = None,
                 colorscale: str = "Viridis", zmid: float | None = None,
                 value_name: str = "score") -> go.Figure:
    """Layer x head heatmap of one detector's [n_layers, n_heads] scores.

    Layer 0 is at the top, as a reader scans a model from input to output. Each cell carries
    (layer, head) in its customdata, which the dashboard reads on click. `highlight` outlines
    one head. `value_name` labels the colour bar and the hover (e.g. "DLA").
    """
    z = _rows(scores)
    n_layers, n_heads = len(z), len(z[0]) if z else 0
    name = html.escape(value_name)
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(n_heads)), y=list(range(n_layers)),
        customdata=[[[layer, head] for head in range(n_heads)] for layer in range(n_layers)],
        colorscale=colorscale, zmid=zmid, colorbar={"title": {"text": name}, "thickness": 14},
        hovertemplate=f"layer %{{y}}, head %{{x}}<br>{name} %{{z:.4f}}<extra></extra>",
        texttemplate="%{z:.2f}" if n_layers * n_heads <= 600 else None,
        textfont={"size": 9}, xgap=1, ygap=1,
    ))
    if highlight is not None:
        layer, head = highlight
        fig.add_shape(type="rect", x0=head - 0.5, x1=head + 0.5, y0=layer - 0.5, y1=layer + 0.5,
                      line={"color": "#ff2d55", "width": 3})
    fig.update_layout(
        title={"text": html.escape(title), "x": 0.02, "xanchor": "left"},
        height=max(360, 22 * n_layers + 120), margin={"l": 60, "r": 20, "t": 50, "b": 50},
        xaxis={"title": "head", "dtick": 1, "side": "bottom"},
        yaxis={"title": "layer", "dtick": 1 if n_layers <= 40 else 4, "autorange": "reversed"},
        plot_bgcolor="white", clickmode="event", modebar={"orientation": "v"},
    )
    return fig


def rank_scatter(ranks_a: Sequence[float], ranks_b: Sequence[float], labels: Sequence[str],
                 name_a: str, name_b: str, rho: float | None) -> go.Figure:
    """Each head as a point at (its rank on detector a, its rank on detector b); 1 = top."""
    fig = go.Figure(go.Scattergl(
        x=list(ranks_a), y=list(ranks_b), mode="markers", text=list(labels),
        marker={"size": 6, "opacity": 0.7, "color": "#1f77b4"},
        hovertemplate="%{text}<br>" + f"{html.escape(name_a)} rank %{{x}}<br>"
                      f"{html.escape(name_b)} rank %{{y}}<extra></extra>",
    ))
    rho_text = "n/a (constant scores)" if rho is None or not math.isfinite(rho) else f"{rho:+.3f}"
    fig.update_layout(
        title={"text": f"Spearman ρ = {rho_text} ({len(labels)} heads)", "x": 0.02,
               "xanchor": "left"},
        xaxis={"title": f"rank on {html.escape(name_a)} (1 = highest)"},
        yaxis={"title": f"rank on {html.escape(name_b)} (1 = highest)", "autorange": "reversed"},
        height=520, margin={"l": 70, "r": 20, "t": 60, "b": 60}, plot_bgcolor="#fafafa",
        modebar={"orientation": "v"},
    )
    return fig


def visible_token(token: str) -> str:
    """A token with its whitespace made visible ('␣Mary')."""
    # Plain escapes for newline and tab: every font has backslashes, not every font has ⏎.
    return token.replace(" ", "␣").replace("\n", "\\n").replace("\t", "\\t") or "∅"


def token_label(position: int, token: str) -> str:
    """'12 ␣Mary': position first (labels must be unique), whitespace made visible."""
    return f"{position} {visible_token(token)}"


# Past this many tokens a pattern is drawn pooled (blocks of positions, their maximum): a
# browser draws 256 x 256 cells in well under a second, 1,000 x 1,000 labelled cells in tens.
MAX_PATTERN_CELLS = 256


def pool_pattern(head_pattern, max_cells: int = MAX_PATTERN_CELLS):
    """[N, N] -> ([M, M] block maxima, block size b) with M = ceil(N / b) <= max_cells.

    Max, not mean: a sink or an induction stripe one position wide stays as bright as it is;
    a mean over a block would fade it by the block size. Cells entirely above the diagonal
    (no query of the block sees any key of it) are NaN.
    """
    import torch

    matrix = torch.as_tensor(head_pattern, dtype=torch.float32)
    n = matrix.shape[-1]
    block = max(1, math.ceil(n / max_cells))
    if block == 1:
        return matrix, 1
    cells = math.ceil(n / block)
    padded = torch.nn.functional.pad(matrix, (0, cells * block - n, 0, cells * block - n))
    pooled = padded.view(cells, block, cells, block).amax(dim=(1, 3))
    above = torch.ones(cells, cells, dtype=torch.bool).triu(1)
    return pooled.masked_fill(above, float("nan")), block


def attention_pattern_figure(tokens: Sequence[str], head_pattern, sinks: Sequence[int],
                             title: str, max_cells: int = MAX_PATTERN_CELLS,
                             queries: Sequence[dict] | None = None) -> go.Figure:
    """One head's [N, N] (query, key) pattern with the tokens on both axes.

    `queries` (`interp.patterns.query_summaries`, one dict per query position) adds a column
    "next ▸" right of the last key: one cell per query row, coloured by the model's top-1
    next-token probability there, whose hover lists the query's top keys (with their attention)
    and the top next tokens (with their probabilities). The texts ride in that trace's `text`,
    one string per row (N strings, not N x N), so the figure stays as small as without them.

    Longer than `max_cells` tokens: drawn pooled (`pool_pattern`), each cell the maximum over a
    block of queries x keys, labelled by the block's first position and token; sink blocks are
    marked on the key axis.

    Sized at 14 px per token up to 400 tokens, so a few hundred tokens stay readable inside a
    scrolling box; beyond that cells shrink and every k-th label is shown. Sink keys (positions
    in `sinks`) get red, marked labels on the key axis. Cells above the diagonal are blank:
    a causal query never sees them.
    """
    n = len(tokens)
    if n > max_cells:
        return _pooled_pattern_figure(tokens, head_pattern, sinks, title, max_cells)
    labels = [token_label(i, t) for i, t in enumerate(tokens)]
    z = _rows(head_pattern)
    for q in range(n):  # causal: keys after the query are not attention, they are absent
        for k in range(q + 1, n):
            z[q][k] = None
    z = [[None if v is None else round(v, 5) for v in row] for row in z]
    cell = 14 if n <= 400 else max(3, 5600 // n)
    every = 1 if n <= 400 else math.ceil(12 / cell)
    sink_set = set(sinks)
    key_ticks = [
        (f"<span style='color:{SINK_COLOUR}'><b>▼ {html.escape(lbl)}</b></span>" if i in sink_set
         else html.escape(lbl))
        for i, lbl in enumerate(labels)
    ]
    shown = [i for i in range(n) if i % every == 0 or i in sink_set]
    fig = go.Figure(go.Heatmap(
        z=z, x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1,
        colorbar={"title": {"text": "attention"}, "thickness": 12, "len": min(1.0, 500 / (n * cell + 1))},
        hovertemplate="query %{y}<br>key %{x}<br>attention %{z:.4f}<extra></extra>",
        hoverongaps=False, name="pattern",
    ))
    tick_vals, tick_text = [labels[i] for i in shown], [key_ticks[i] for i in shown]
    if queries is not None:
        fig.add_trace(query_strip(labels, queries, size=max(4, min(cell, 14) - 2)))
        # Labelled by an annotation, not a tick: the key axis's ticks stay one per token.
        fig.add_annotation(x=NEXT_COLUMN, y=1, yref="paper", yanchor="bottom", showarrow=False,
                           text=f"<b>{NEXT_COLUMN}</b>", textangle=-60, font={"size": 10,
                                                                              "color": "#15803d"})
    side = n * cell
    if queries is not None:
        fig.update_xaxes(range=[-0.5, n + 0.5])  # the keys, then the "next ▸" column
    fig.update_layout(
        title={"text": html.escape(title) + " — rows: queries, columns: keys",
               "x": 0.01, "xanchor": "left", "y": 0.995, "yanchor": "top", "font": {"size": 13}},
        width=max(560, side + 260), height=max(420, side + 230),
        margin={"l": 150, "r": 30, "t": 170, "b": 20},
        xaxis={"side": "top", "tickangle": -60,
               "tickmode": "array", "tickvals": tick_vals,
               "ticktext": tick_text, "tickfont": {"size": 10}},
        yaxis={"title": "query", "autorange": "reversed", "tickmode": "array",
               "tickvals": [labels[i] for i in shown],
               "ticktext": [html.escape(labels[i]) for i in shown], "tickfont": {"size": 10}},
        plot_bgcolor="white", modebar={"orientation": "v"},
    )
    return fig


NEXT_COLUMN = "next ▸"


def query_hover_text(query: dict) -> str:
    """One query row's hover: its top keys with their attention, then the top next tokens."""
    keys = "<br>".join(f"  {html.escape(token_label(k['position'], k['token']))}: {k['weight']:.3f}"
                       for k in query["top_keys"])
    text = (f"query {html.escape(token_label(query['position'], query['token']))}"
            f"<br><b>top keys</b> (attention)<br>{keys}")
    if query.get("next"):
        nxt = "<br>".join(f"  {html.escape(visible_token(t['token']))}: {t['prob']:.3f}"
                          for t in query["next"])
        text += f"<br><b>next token</b> (model's probability)<br>{nxt}"
    return text


def query_strip(labels: Sequence[str], queries: Sequence[dict], size: int = 12) -> go.Scatter:
    """The "next ▸" column of `attention_pattern_figure`: one square marker per query row right of
    the last key, coloured by the top-1 next-token probability (or the top key's weight without
    next tokens), one hover text per query (`text`, N strings)."""
    colour = [q["next"][0]["prob"] if q.get("next") else q["top_keys"][0]["weight"] for q in queries]
    # A Scatter, not a one-column Heatmap: plotly widens a one-column heatmap on a category axis.
    return go.Scatter(
        x=[NEXT_COLUMN] * len(queries), y=list(labels), mode="markers", name="queries",
        marker={"symbol": "square", "size": size, "color": colour, "colorscale": "Greens",
                "cmin": 0, "cmax": 1, "line": {"width": 0}},
        text=[query_hover_text(q) for q in queries], hovertemplate="%{text}<extra></extra>",
        showlegend=False,
    )


def pattern_pair_figures(tokens_a: Sequence[str], pattern_a, tokens_b: Sequence[str], pattern_b,
                         title_a: str, title_b: str, queries_a=None, queries_b=None,
                         sinks_a: Sequence[int] = (), sinks_b: Sequence[int] = ()):
    """One head on two prompts, for side-by-side display: two `attention_pattern_figure`s on the
    same colour scale (attention 0..1 in both, so equal colours are equal weights) and the same
    cell size; the taller one sets both heights so their rows start level."""
    a = attention_pattern_figure(tokens_a, pattern_a, sinks_a, title_a, queries=queries_a)
    b = attention_pattern_figure(tokens_b, pattern_b, sinks_b, title_b, queries=queries_b)
    height = max(a.layout.height, b.layout.height)
    for fig in (a, b):
        fig.update_layout(height=height)
        fig.update_traces(zmin=0, zmax=1, selector={"name": "pattern"})
    return a, b


def logit_lens_figure(layers: Sequence[str], logprob, rank, target: str,
                      metric=None, metric_name: str | None = None) -> go.Figure:
    """The logit lens along the depth: log p(target) after each layer (left axis) and the
    target's rank (right axis, log scale, 1 at the top); with a wrong token, the logit
    difference too."""
    from plotly.subplots import make_subplots

    fig = make_subplots(specs=[[{"secondary_y": True}]])
    x = list(layers)
    fig.add_trace(go.Scatter(x=x, y=[float(v) for v in logprob], mode="lines+markers",
                             name=f"log p({html.escape(repr(target))})",
                             hovertemplate="%{x}<br>log p %{y:.3f}<extra></extra>"), secondary_y=False)
    if metric is not None:
        fig.add_trace(go.Scatter(x=x, y=[float(v) for v in metric], mode="lines+markers",
                                 name=html.escape(metric_name or "metric"), line={"dash": "dot"},
                                 hovertemplate="%{x}<br>%{y:.3f}<extra></extra>"), secondary_y=False)
    fig.add_trace(go.Scatter(x=x, y=[int(v) for v in rank], mode="lines", name="rank (right axis)",
                             line={"color": "#999", "width": 1},
                             hovertemplate="%{x}<br>rank %{y}<extra></extra>"), secondary_y=True)
    fig.update_yaxes(title_text="log p / logit difference", secondary_y=False)
    fig.update_yaxes(title_text="rank of the target (1 = top)", type="log", autorange="reversed",
                     dtick=1, tickformat=",d", secondary_y=True)  # ticks at 1, 10, 100, ...
    fig.update_layout(title={"text": "logit lens: the residual after each layer through the final "
                                     "norm and unembedding", "font": {"size": 13}, "x": 0.02},
                      height=380, margin={"l": 60, "r": 60, "t": 60, "b": 50}, plot_bgcolor="white",
                      legend={"orientation": "h", "y": -0.2}, xaxis={"title": "read after"})
    return fig


def dla_heatmap(dla_heads, metric_name: str, highlight: tuple[int, int] | None = None) -> go.Figure:
    """Layer x head direct logit attribution, diverging around 0 (red: pushes the target up),
    symmetric colour range; click data as `head_heatmap`."""
    values = _rows(dla_heads)
    bound = max((abs(v) for row in values for v in row if v is not None), default=1.0) or 1.0
    fig = head_heatmap(dla_heads, f"direct logit attribution to {metric_name}", highlight,
                       colorscale="RdBu_r", zmid=0.0, value_name="DLA")
    fig.update_traces(zmin=-bound, zmax=bound)
    return fig


def _pooled_pattern_figure(tokens, head_pattern, sinks, title: str, max_cells: int) -> go.Figure:
    pooled, block = pool_pattern(head_pattern, max_cells)
    cells = pooled.shape[0]
    n = len(tokens)
    labels = [f"{i * block}–{min(n, (i + 1) * block) - 1} {token_label(i * block, tokens[i * block]).split(' ', 1)[1]}"
              for i in range(cells)]
    sink_blocks = {p // block for p in sinks}
    key_ticks = [(f"<span style='color:{SINK_COLOUR}'><b>▼ {html.escape(lbl)}</b></span>"
                  if i in sink_blocks else html.escape(lbl)) for i, lbl in enumerate(labels)]
    every = max(1, math.ceil(cells / 40))
    shown = [i for i in range(cells) if i % every == 0 or i in sink_blocks]
    z = [[None if v is None else round(v, 5) for v in row] for row in _rows(pooled)]
    side = 3 * cells + 300
    fig = go.Figure(go.Heatmap(
        z=z, x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1,
        colorbar={"title": {"text": "max attention"}, "thickness": 12},
        hovertemplate="queries %{y}<br>keys %{x}<br>max attention %{z:.4f}<extra></extra>",
        hoverongaps=False,
    ))
    fig.update_layout(
        title={"text": html.escape(title) + f" — pooled: each cell is the maximum over "
                                            f"{block} x {block} positions",
               "x": 0.01, "xanchor": "left", "y": 0.995, "yanchor": "top", "font": {"size": 13}},
        width=side + 260, height=side + 230, margin={"l": 170, "r": 30, "t": 190, "b": 20},
        xaxis={"side": "top", "tickangle": -60, "tickmode": "array",
               "tickvals": [labels[i] for i in shown], "ticktext": [key_ticks[i] for i in shown],
               "tickfont": {"size": 10}},
        yaxis={"title": "query", "autorange": "reversed", "tickmode": "array",
               "tickvals": [labels[i] for i in shown],
               "ticktext": [html.escape(labels[i]) for i in shown], "tickfont": {"size": 10}},
        plot_bgcolor="white", modebar={"orientation": "v"},
    )
    return fig


def layer_pattern_grid(layer_pattern, layer: int, n_tokens: int, max_cells: int = 64,
                       columns: int = 3) -> go.Figure:
    """Every head of one layer at once (CircuitsVis `attention_heads`): [n_heads, N, N] ->
    a grid of small pattern heatmaps, pooled to at most `max_cells` per side (block maxima),
    one shared colour scale 0..1, each titled L{layer}.H{h}."""
    from plotly.subplots import make_subplots

    n_heads = layer_pattern.shape[0]
    rows = math.ceil(n_heads / columns)
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=[f"L{layer}.H{h}" for h in range(n_heads)],
                        horizontal_spacing=0.04, vertical_spacing=0.06)
    block = 1
    for h in range(n_heads):
        pooled, block = pool_pattern(layer_pattern[h], max_cells)
        fig.add_trace(go.Heatmap(
            z=[[None if v is None else round(v, 4) for v in row] for row in _rows(pooled)],
            colorscale="Blues", zmin=0, zmax=1, showscale=h == 0, hoverongaps=False,
            colorbar={"title": {"text": "attention"}, "thickness": 10},
            hovertemplate=(f"L{layer}.H{h}<br>query %{{y}}<br>key %{{x}}<br>attention %{{z:.3f}}"
                           "<extra></extra>") if block == 1 else
                          (f"L{layer}.H{h}<br>query block %{{y}}<br>key block %{{x}} (x{block})"
                           "<br>max attention %{z:.3f}<extra></extra>")),
            row=h // columns + 1, col=h % columns + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    pooled_text = f", pooled {block} x {block}" if block > 1 else ""
    fig.update_layout(title={"text": f"layer {layer}: every head, {n_tokens} tokens{pooled_text} "
                                     "— rows: queries, columns: keys", "font": {"size": 13}},
                      height=260 * rows + 80, width=260 * columns + 120,
                      margin={"l": 20, "r": 20, "t": 80, "b": 20}, plot_bgcolor="white")
    return fig


def effect_heatmap(values, title: str, row_title: str, col_title: str,
                   row_labels: Sequence | None = None, col_labels: Sequence | None = None,
                   value_name: str = "effect", center: float = 0.0) -> go.Figure:
    """A diverging heatmap for patching results, white at `center`: the value of a cell that
    does nothing (0 when denoising: nothing restored; 1 when noising: nothing lost)."""
    z = _rows(values)
    rows = list(row_labels) if row_labels is not None else list(range(len(z)))
    cols = list(col_labels) if col_labels is not None else list(range(len(z[0]) if z else 0))
    finite = [abs(v - center) for row in z for v in row if v is not None]
    bound = max(finite, default=1.0) or 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=[html.escape(str(c)) for c in cols], y=[html.escape(str(r)) for r in rows],
        colorscale="RdBu", zmid=center, zmin=center - bound, zmax=center + bound,
        colorbar={"title": {"text": html.escape(value_name)}, "thickness": 14},
        hovertemplate=f"{html.escape(row_title)} %{{y}}, {html.escape(col_title)} %{{x}}<br>"
                      f"{html.escape(value_name)} %{{z:.4f}}<extra></extra>",
        xgap=1, ygap=1,
    ))
    fig.update_layout(
        title={"text": "<br>".join(html.escape(line) for line in title.split("\n")),
               "x": 0.02, "xanchor": "left", "font": {"size": 13}},
        height=max(360, 20 * len(rows) + 140), margin={"l": 70, "r": 20, "t": 60, "b": 80},
        xaxis={"title": html.escape(col_title), "type": "category"},
        yaxis={"title": html.escape(row_title), "autorange": "reversed", "type": "category"},
        plot_bgcolor="white", modebar={"orientation": "v"},
    )
    return fig
