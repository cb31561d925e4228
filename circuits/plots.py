"""Circuit figures: a circuit as a layered graph, coloured by role. Plain data in, a plotly
`go.Figure` out (no Dash, no store), so the dashboard and the notebooks draw the same picture:

    from circuits.plots import circuit_graph
    data = circuit.to_json()
    circuit_graph(data["heads"], data["edges"], model.n_layers, title="IOI circuit")
"""

from __future__ import annotations

import html
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


def _node_xy(name: str, n_layers: int, n_heads: int) -> tuple[float, float]:
    """Where a graph node sits: x = layer (input at -1, logits at n_layers), y = head (MLPs
    one row above the heads)."""
    base = name.split("<")[0]
    if base == "input":
        return -1.0, n_heads / 2
    if base == "logits":
        return float(n_layers), n_heads / 2
    if base.startswith("m"):
        return int(base[1:]) + 0.35, float(n_heads)
    layer, rest = base[1:].split(".", 1)
    if rest.startswith("kv"):  # a K/V input: drawn at its layer, between its query heads
        return float(layer), float(rest[2:]) * n_heads / max(1, n_heads // 3)
    return float(layer), float(rest[1:])


def edge_circuit_graph(edges: Sequence[dict], n_layers: int, n_heads: int, top: int = 150,
                       title: str = "edge circuit") -> go.Figure:
    """An edge circuit ({"src", "dst", "score"}, `circuits.graph` names) as a layered graph:
    x = layer, y = head (MLPs on the top row), line width by |score|, solid when the edge helps
    the metric (score > 0), dashed when it hurts; the `top` strongest edges."""
    chosen = sorted(edges, key=lambda e: -abs(float(e["score"])))[:top]
    scale = max((abs(float(e["score"])) for e in chosen), default=1.0) or 1.0
    fig = go.Figure()
    names = set()
    for edge in chosen:
        (x0, y0), (x1, y1) = _node_xy(edge["src"], n_layers, n_heads), _node_xy(edge["dst"], n_layers, n_heads)
        names |= {edge["src"], edge["dst"].split("<")[0]}
        score = float(edge["score"])
        fig.add_trace(go.Scatter(
            x=[x0, x1], y=[y0, y1], mode="lines", showlegend=False, hoverinfo="text",
            text=f"{html.escape(edge['src'])} → {html.escape(edge['dst'])}: {score:+.4f}",
            line={"width": 0.5 + 6 * abs(score) / scale, "dash": "solid" if score >= 0 else "dash",
                  "color": "rgba(31,119,180,0.55)" if score >= 0 else "rgba(214,39,40,0.55)"}))
    names = sorted(n for n in names if not n.startswith("a") or ".kv" not in n)
    xy = [_node_xy(n, n_layers, n_heads) for n in names]
    fig.add_trace(go.Scatter(x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers+text",
                             text=[html.escape(n) for n in names], textposition="top center",
                             marker={"size": 9, "color": "#444"}, name="nodes", hoverinfo="text"))
    fig.update_layout(title={"text": html.escape(title), "x": 0.02}, height=520,
                      xaxis={"title": "layer", "range": [-1.6, n_layers + 0.8]},
                      yaxis={"title": "head (MLP on top)"}, plot_bgcolor="white", showlegend=False,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig


def faithfulness_figure(curve: Sequence[dict], random_curve: Sequence[dict] = (),
                        title: str = "faithfulness") -> go.Figure:
    """f(k) against k (% of edges, log axis) for a circuit and, dashed, random circuits."""
    fig = go.Figure()
    for points, name, dash in ((curve, "circuit", "solid"), (random_curve, "random", "dash")):
        if points:
            fig.add_trace(go.Scatter(x=[p["k_percent"] for p in points], y=[p["faithfulness"] for p in points],
                                     mode="lines+markers", name=name, line={"dash": dash}))
    fig.add_hline(y=1.0, line={"color": "#999", "width": 1})
    fig.update_layout(title={"text": html.escape(title), "x": 0.02}, height=380,
                      xaxis={"title": "circuit size (% of edges)", "type": "log"},
                      yaxis={"title": "f(k)"}, plot_bgcolor="white")
    return fig
