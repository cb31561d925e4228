"""Plotly figure builders: plain data in, `go.Figure` out. No Dash, no store, no model.

Every builder takes lists/tensors already computed by the library, so a notebook can draw the
same pictures: `head_heatmap(scores.scores, "induction")`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import plotly.graph_objects as go

# Roles of the IOI circuit (Wang et al.) first, in the order information flows; any other role
# a circuit names gets a colour from the tail of the palette.
ROLE_COLOURS = {
    "previous_token": "#8c564b",
    "duplicate_token": "#e377c2",
    "induction": "#9467bd",
    "s_inhibition": "#1f77b4",
    "name_mover": "#2ca02c",
    "backup_name_mover": "#bcbd22",
    "negative_name_mover": "#d62728",
}
_EXTRA_COLOURS = ["#17becf", "#ff7f0e", "#7f7f7f", "#aec7e8", "#98df8a", "#ff9896"]
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
                 colorscale: str = "Viridis", zmid: float | None = None) -> go.Figure:
    """Layer x head heatmap of one detector's [n_layers, n_heads] scores.

    Layer 0 is at the top, as a reader scans a model from input to output. Each cell carries
    (layer, head) in its customdata, which the dashboard reads on click. `highlight` outlines
    one head.
    """
    z = _rows(scores)
    n_layers, n_heads = len(z), len(z[0]) if z else 0
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(n_heads)), y=list(range(n_layers)),
        customdata=[[[layer, head] for head in range(n_heads)] for layer in range(n_layers)],
        colorscale=colorscale, zmid=zmid, colorbar={"title": {"text": "score"}, "thickness": 14},
        hovertemplate="layer %{y}, head %{x}<br>score %{z:.4f}<extra></extra>",
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


def token_label(position: int, token: str) -> str:
    """'12 ␣Mary': position first (labels must be unique), whitespace made visible."""
    # Plain escapes for newline and tab: every font has backslashes, not every font has ⏎.
    shown = token.replace(" ", "␣").replace("\n", "\\n").replace("\t", "\\t") or "∅"
    return f"{position} {shown}"


def attention_pattern_figure(tokens: Sequence[str], head_pattern, sinks: Sequence[int],
                             title: str) -> go.Figure:
    """One head's [N, N] (query, key) pattern with the tokens on both axes.

    Sized at 14 px per token up to 400 tokens, so a few hundred tokens stay readable inside a
    scrolling box; beyond that cells shrink and every k-th label is shown. Sink keys (positions
    in `sinks`) get red, marked labels on the key axis. Cells above the diagonal are blank:
    a causal query never sees them.
    """
    n = len(tokens)
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
        hoverongaps=False,
    ))
    side = n * cell
    fig.update_layout(
        title={"text": html.escape(title) + " — rows: queries, columns: keys",
               "x": 0.01, "xanchor": "left", "y": 0.995, "yanchor": "top", "font": {"size": 13}},
        width=max(560, side + 260), height=max(420, side + 230),
        margin={"l": 150, "r": 30, "t": 170, "b": 20},
        xaxis={"side": "top", "tickangle": -60,
               "tickmode": "array", "tickvals": [labels[i] for i in shown],
               "ticktext": [key_ticks[i] for i in shown], "tickfont": {"size": 10}},
        yaxis={"title": "query", "autorange": "reversed", "tickmode": "array",
               "tickvals": [labels[i] for i in shown],
               "ticktext": [html.escape(labels[i]) for i in shown], "tickfont": {"size": 10}},
        plot_bgcolor="white", modebar={"orientation": "v"},
    )
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


def role_colour(role: str, known: dict[str, str]) -> str:
    if role in ROLE_COLOURS:
        return ROLE_COLOURS[role]
    if role not in known:
        known[role] = _EXTRA_COLOURS[len(known) % len(_EXTRA_COLOURS)]
    return known[role]


def circuit_graph(heads: Sequence[dict], edges: Sequence[dict], n_layers: int,
                  title: str = "circuit") -> go.Figure:
    """A circuit as a layered graph: x = layer, one row and one colour per role, edge width by
    |effect|.

    heads: [{"layer", "head", "role"}]; edges: [{"sender": node, "receiver": node,
    "effect": float, "input": "q"|"k"|"v"|...}], a node being {"layer", "head"}, [layer, head]
    or a name such as "logits" (drawn right of the last layer). Positive effects are drawn
    solid, negative dashed. Roles are rows in the order information flows through IOI.
    """
    extra: dict[str, str] = {}
    known_roles = list(ROLE_COLOURS)
    roles_present = sorted({str(h.get("role", "other")) for h in heads},
                           key=lambda r: (known_roles.index(r) if r in known_roles else len(known_roles), r))
    row = {role: i for i, role in enumerate(roles_present)}
    positions: dict[str, tuple[float, float]] = {}
    groups: dict[tuple[str, int], list[dict]] = {}
    for h in heads:
        groups.setdefault((str(h.get("role", "other")), int(h["layer"])), []).append(h)
    for (role, layer), members in groups.items():
        members.sort(key=lambda h: int(h["head"]))
        for i, h in enumerate(members):  # several heads of one role in one layer: fan out
            offset = (i - (len(members) - 1) / 2) * 0.22
            positions[node_key((h["layer"], h["head"]))] = (layer, row[role] + offset)

    def position(node) -> tuple[float, float]:
        key = node_key(node)
        if key not in positions:  # a named node (logits, ...) right of the model, between two
            named = [k for k in positions if not k[0].isdigit()]  # rows: no edge runs along a row
            middle = (len(roles_present) - 1) / 2
            positions[key] = (n_layers + 0.5, middle + (0.5 if middle.is_integer() else 0) + len(named))
        return positions[key]

    fig = go.Figure()
    effects = [abs(float(e.get("effect", 0.0))) for e in edges]
    scale = max(effects, default=1.0) or 1.0
    for edge in edges:
        (x0, y0), (x1, y1) = position(edge["sender"]), position(edge["receiver"])
        effect = float(edge.get("effect", 0.0))
        fig.add_trace(go.Scatter(
            x=[x0, x1], y=[y0, y1], mode="lines", showlegend=False, hoverinfo="text",
            text=f"{node_key(edge['sender'])} → {node_key(edge['receiver'])}"
                 + (f" ({html.escape(str(edge['input']))})" if edge.get("input") else "")
                 + f": {effect:+.3f}",
            line={"width": 0.5 + 7.5 * abs(effect) / scale, "color": "rgba(90,90,90,0.55)",
                  "dash": "solid" if effect >= 0 else "dash"},
        ))
    for role in roles_present:
        members = [h for h in heads if str(h.get("role", "other")) == role]
        xy = [positions[node_key((h["layer"], h["head"]))] for h in members]
        fig.add_trace(go.Scatter(
            x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers+text", name=role,
            text=[f"{h['layer']}.{h['head']}" for h in members], textposition="top center",
            marker={"size": 18, "color": role_colour(role, extra), "line": {"width": 1, "color": "#333"}},
            hovertemplate="%{text} " + html.escape(role) + "<extra></extra>",
        ))
    named = {k: v for k, v in positions.items() if not k[0].isdigit()}
    if named:
        fig.add_trace(go.Scatter(
            x=[v[0] for v in named.values()], y=[v[1] for v in named.values()], mode="markers+text",
            text=[html.escape(k) for k in named], textposition="middle right", name="output",
            marker={"size": 16, "symbol": "square", "color": "#444"},
        ))
    fig.update_layout(
        title={"text": html.escape(title), "x": 0.02, "xanchor": "left"},
        height=max(360, 70 * len(roles_present) + 160),
        xaxis={"title": "layer", "range": [-0.8, n_layers + 2.5], "dtick": 1 if n_layers <= 32 else 2},
        # Reversed by an explicit [bottom, top] range: the first role in the flow on top.
        yaxis={"tickmode": "array", "tickvals": list(row.values()), "ticktext": list(row),
               "range": [len(roles_present) - 0.4, -0.8]},
        plot_bgcolor="white", showlegend=True, modebar={"orientation": "v"},
        legend={"orientation": "h", "y": -0.18, "title": {"text": "role"}},
        margin={"l": 130, "r": 20, "t": 50, "b": 90},
    )
    return fig


def node_key(node) -> str:
    """'L.H' for a head given as [layer, head] / (layer, head) / {"layer", "head"}, else str."""
    if isinstance(node, dict) and "layer" in node and "head" in node:
        return f"{int(node['layer'])}.{int(node['head'])}"
    if isinstance(node, (list, tuple)) and len(node) == 2:
        return f"{int(node[0])}.{int(node[1])}"
    return str(node)
