"""Circuit figures. Plain data in, a plotly `go.Figure` out (no Dash, no store), so the
dashboard and the notebooks draw the same pictures:

    from circuits.plots import edge_graph, faithfulness_figure, circuit_edge_graph
    edge_graph(result["edges"], n_layers=30, mode="top", value=200)     # any method's edges
    circuit_edge_graph(Circuit.load(store, run_id), mode="score", value=0.01)
    faithfulness_figure(result["faithfulness_curve"], result["random_curve"], cpr=..., cmd=...)
    circuit_graph(data["heads"], data["edges"], model.n_layers)   # IOI heads in rows by role

The edge graph places every node by layer (x: the embeddings left, the logits right; within a
layer the heads stacked by index with the MLP on top; SAE feature and error nodes in a column
per SAE point) and draws the edges above a threshold (the top k by |score|, or |score| >= t),
width by |score| and colour by sign. Edges are drawn as a few traces (one per width level and
sign), so thousands stay fast; at most `MAX_DRAWN_EDGES` are drawn and the title says so.
"""

from __future__ import annotations

import html
import math
import re
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


# ---- edge graphs of any method ------------------------------------------------------------------

MAX_DRAWN_EDGES = 2000  # more lines than this make the browser slow, and no one can read them
WIDTH_LEVELS = 6  # edges are drawn in this many widths (one trace per width and sign)
POSITIVE, NEGATIVE = "rgba(31,119,180,{a})", "rgba(214,39,40,{a})"  # helps / hurts the metric
# Where an SAE point sits inside its layer (resid_pre before the attention, mlp_out after it).
_POINT_OFFSET = {"hook_resid_pre": -0.4, "attn.hook_z": -0.1, "attn.hook_result": 0.0,
                 "hook_attn_out": 0.1, "hook_resid_mid": 0.25, "hook_mlp_out": 0.45,
                 "hook_resid_post": 0.7}
_HEAD = re.compile(r"^(?:a(\d+)\.h(\d+)|(\d+)\.(\d+))$")
_KV = re.compile(r"^a(\d+)\.kv(\d+)$")
_MLP = re.compile(r"^m(\d+)$")
_SAE = re.compile(r"^blocks\.(\d+)\.(\S+?)(?:\[(\d+)\])?/(f(\d+)|error)$")


def owner(name: str) -> str:
    """The node an edge end belongs to: "a3.h2<q>" -> "a3.h2", "a3.kv1<k>" -> "a3.kv1"."""
    return name.split("<", 1)[0]


def parse_node(name: str) -> dict:
    """What a node name says: {"kind", "layer", ...}. Kinds: input, logits, head (layer, head;
    `circuits.graph` "a3.h2" or "3.2"), kv (layer, group: a grouped-query K/V input), mlp
    (layer), sae_feature / sae_error (layer, point, head, feature; `circuits.sae` ids such as
    "blocks.3.hook_resid_pre/f12"), other (anything else: drawn beside the logits)."""
    base = owner(name)
    if base in ("input", "embed", "hook_embed"):
        return {"kind": "input"}
    if base == "logits":
        return {"kind": "logits"}
    if m := _HEAD.match(base):
        layer, head = (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), m.group(4))
        return {"kind": "head", "layer": int(layer), "head": int(head)}
    if m := _KV.match(base):
        return {"kind": "kv", "layer": int(m.group(1)), "group": int(m.group(2))}
    if m := _MLP.match(base):
        return {"kind": "mlp", "layer": int(m.group(1))}
    if m := _SAE.match(base):
        return {"kind": "sae_error" if m.group(4) == "error" else "sae_feature",
                "layer": int(m.group(1)), "point": m.group(2),
                "head": None if m.group(3) is None else int(m.group(3)),
                "feature": None if m.group(5) is None else int(m.group(5))}
    return {"kind": "other"}


def node_positions(names: Sequence[str], n_layers: int | None = None, n_heads: int | None = None,
                   scores: dict[str, float] | None = None) -> dict[str, tuple[float, float]]:
    """{node: (x, y)} for the nodes `names` (edge ends are reduced with `owner`).

    x: the layer; the embeddings at -1, the logits (and unknown names) at n_layers; a K/V input
    0.25 before its layer, an MLP 0.45 after it, an SAE point by where it reads (_POINT_OFFSET).
    y: a head its index, its K/V group between the group's heads, the MLP the row above the
    heads (n_heads), input and logits in the middle; SAE nodes stacked per point (per-head
    points: head by head), the error node first, then the strongest |score| at the bottom. n_layers / n_heads default to what the names
    show."""
    names = list(dict.fromkeys(owner(n) for n in names))
    parsed = {n: parse_node(n) for n in names}
    layers = [p["layer"] for p in parsed.values() if "layer" in p]
    heads = [p["head"] for p in parsed.values() if p["kind"] == "head"]
    n_layers = n_layers if n_layers is not None else (max(layers) + 1 if layers else 1)
    n_heads = n_heads if n_heads is not None else (max(heads) + 1 if heads else 1)
    groups = [p["group"] for p in parsed.values() if p["kind"] == "kv"]
    group_size = n_heads / (max(groups) + 1) if groups else n_heads
    middle = (n_heads - 1) / 2
    scores = scores or {}
    out: dict[str, tuple[float, float]] = {}
    columns: dict[tuple, list[str]] = {}
    others = []
    for name, p in parsed.items():
        kind = p["kind"]
        if kind == "input":
            out[name] = (-1.0, middle)
        elif kind == "logits":
            out[name] = (float(n_layers), middle)
        elif kind == "head":
            out[name] = (float(p["layer"]), float(p["head"]))
        elif kind == "kv":
            out[name] = (p["layer"] - 0.25, (p["group"] + 0.5) * group_size - 0.5)
        elif kind == "mlp":
            out[name] = (p["layer"] + 0.45, float(n_heads))
        elif kind in ("sae_feature", "sae_error"):
            columns.setdefault((p["layer"], p["point"]), []).append(name)
        else:
            others.append(name)
    for (layer, point), members in columns.items():  # per-head SAEs: one block per head
        x = layer + _POINT_OFFSET.get(point, 0.0)
        members.sort(key=lambda n: (parsed[n]["head"] or 0, parsed[n]["kind"] != "sae_error",
                                    -abs(scores.get(n, 0.0)), n))
        for i, name in enumerate(members):
            out[name] = (x, float(i))
    if columns and not heads:  # a feature circuit: input and logits beside the middle of the stacks
        middle = (max(len(m) for m in columns.values()) - 1) / 2
        out.update({n: (x, middle) for n, (x, _) in out.items() if parsed[n]["kind"] in ("input", "logits")})
    for i, name in enumerate(sorted(others)):
        out[name] = (n_layers + 0.6, middle + 1 + i)
    return out


def select_edges(edges: Sequence[dict], mode: str = "top", value: float | None = None,
                 cap: int = MAX_DRAWN_EDGES) -> tuple[list[dict], int]:
    """(the edges to draw, strongest |score| first, at most `cap`; how many pass the threshold).
    mode "top": the `value` strongest edges (None: all); mode "score": |score| >= value."""
    if mode not in ("top", "score"):
        raise ValueError(f"mode must be 'top' or 'score', got {mode!r}")
    ranked = sorted(edges, key=lambda e: -abs(float(e["score"])))
    if value is None:
        passing = len(ranked)
    elif mode == "top":
        passing = max(0, min(len(ranked), int(value)))
    else:
        passing = sum(1 for e in ranked if abs(float(e["score"])) >= value)
    return ranked[:min(passing, cap)], passing


def top_k_steps(n_edges: int) -> list[int]:
    """The edge counts a top-k slider offers: 1, 2, 5, 10, 20, 50, ... below n_edges, then n_edges."""
    steps, base = [], 1
    while base < n_edges:
        steps += [s for s in (base, 2 * base, 5 * base) if s < n_edges]
        base *= 10
    return steps + [n_edges] if n_edges else [0]


def threshold_slider(edges: Sequence[dict], mode: str = "top", default_edges: int = 200) -> dict:
    """A slider over the threshold: {"min", "max", "step", "marks", "value"} (dcc.Slider's
    props; `threshold_value` turns a position into the threshold). top: positions index
    `top_k_steps`; score: positions are log10 |score|. The value starts near `default_edges`."""
    magnitudes = sorted((abs(float(e["score"])) for e in edges), reverse=True)
    if mode == "top":
        steps = top_k_steps(len(magnitudes))
        value = max((i for i, s in enumerate(steps) if s <= default_edges), default=0)
        marks = {i: str(s) for i, s in enumerate(steps)}
        return {"min": 0, "max": len(steps) - 1, "step": 1, "marks": marks, "value": value}
    positive = [m for m in magnitudes if m > 0] or [1.0]
    low, high = math.log10(positive[-1]), math.log10(positive[0])
    if high - low < 1e-9:
        low -= 1.0
    step = (high - low) / 100
    chosen = positive[min(len(positive), default_edges) - 1]
    marks = {round(low + i * (high - low) / 4, 6): f"{10 ** (low + i * (high - low) / 4):.2g}"
             for i in range(5)}
    return {"min": low, "max": high, "step": step, "marks": marks,
            "value": max(low, min(high, math.log10(chosen)))}


def threshold_value(edges: Sequence[dict], mode: str, position: float | None) -> float | None:
    """The threshold at a `threshold_slider` position: an edge count (top) or a |score| (score)."""
    if position is None:
        return None
    if mode == "top":
        steps = top_k_steps(len(edges))
        return steps[max(0, min(len(steps) - 1, int(round(position))))]
    return 10 ** float(position) * (1 - 1e-9)  # the edge at the mark itself passes


def threshold_text(mode: str, value: float | None, n_drawn: int, n_passing: int, n_total: int) -> str:
    """"200 of 3,000 edges (the 200 strongest)", plus the cap when it cut the drawing."""
    which = (f"the {n_passing:,} strongest" if mode == "top" else f"|score| >= {value:.3g}") \
        if value is not None else "all"
    text = f"{n_passing:,} of {n_total:,} edges ({which})"
    if n_drawn < n_passing:
        text += f"; drawing the strongest {n_drawn:,} (raise the threshold to see fewer, clearer)"
    return text


def edge_graph(edges: Sequence[dict], nodes: Sequence[str] = (), n_layers: int | None = None,
               n_heads: int | None = None, mode: str = "top", value: float | None = 200,
               cap: int = MAX_DRAWN_EDGES, roles: dict[str, str] | None = None,
               node_info: dict[str, dict] | None = None, title: str = "circuit",
               helps: str = "positive") -> go.Figure:
    """A circuit's edges ([{"src", "dst", "score"}], any method's node names, see `parse_node`)
    above a threshold (`select_edges`) on nodes placed by layer (`node_positions`).

    Line width by |score| (WIDTH_LEVELS widths, relative to the strongest drawn edge), blue
    where the edge helps the metric, red where it hurts; helps="positive" when a positive score
    means it helps (EAP, EAP-IG, feature circuits), "negative" for path-patching effects (the
    metric drops when the path is corrupted). Nodes: heads coloured by
    role when `roles` ({node: role}) names one; SAE features and SAE error nodes apart; each
    node's customdata is its name (for click callbacks) and its hover shows `node_info`'s score
    and first top-activating context where stored. Only the nodes the drawn edges touch (and
    `nodes`, when no edge is drawn) appear."""
    node_info = node_info or {}
    drawn, n_passing = select_edges(edges, mode, value, cap)
    touched = [owner(e["src"]) for e in drawn] + [owner(e["dst"]) for e in drawn]
    names = list(dict.fromkeys(touched or [owner(n) for n in nodes]))
    scores = {n: float(i["score"]) for n, i in node_info.items() if isinstance(i.get("score"), (int, float))}
    # positions over every node the circuit has, so that the layout does not jump as k moves
    every = list(dict.fromkeys([owner(n) for n in nodes] + names
                               + [owner(e[k]) for e in edges for k in ("src", "dst")]))
    where = node_positions(every, n_layers, n_heads, scores)
    parsed = {n: parse_node(n) for n in names}
    n_layers = n_layers if n_layers is not None else int(max((x for x, _ in where.values()), default=0))
    fig = go.Figure()
    scale = max((abs(float(e["score"])) for e in drawn), default=1.0) or 1.0
    buckets: dict[tuple[int, bool], list[dict]] = {}
    for edge in drawn:
        level = min(WIDTH_LEVELS, max(1, math.ceil(WIDTH_LEVELS * abs(float(edge["score"])) / scale)))
        buckets.setdefault((level, float(edge["score"]) >= 0), []).append(edge)
    for (level, positive), members in sorted(buckets.items()):  # strong edges drawn last, on top
        xs, ys = [], []
        for edge in members:
            (x0, y0), (x1, y1) = where[owner(edge["src"])], where[owner(edge["dst"])]
            xs += [x0, x1, None]
            ys += [y0, y1, None]
        good = positive == (helps == "positive")
        colour = (POSITIVE if good else NEGATIVE).format(a=round(0.25 + 0.1 * level, 2))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                                 line={"width": 0.4 + 1.1 * level, "color": colour},
                                 name=f"{'+' if positive else '-'} edges, width {level}"))
    for colour, meaning in ((POSITIVE, "helps"), (NEGATIVE, "hurts")):  # legend of the colours
        sign = ">" if (meaning == "helps") == (helps == "positive") else "<"
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"edge {meaning} (score {sign} 0)",
                                 line={"width": 4, "color": colour.format(a=0.8)}, hoverinfo="skip"))
    if drawn:  # hover on the middle of each edge: what it is and its score
        mid = [((where[owner(e["src"])][0] + where[owner(e["dst"])][0]) / 2,
                (where[owner(e["src"])][1] + where[owner(e["dst"])][1]) / 2) for e in drawn]
        fig.add_trace(go.Scatter(
            x=[m[0] for m in mid], y=[m[1] for m in mid], mode="markers", showlegend=False,
            marker={"size": 6, "opacity": 0}, name="edges", hoverinfo="text",
            text=[f"{html.escape(e['src'])} → {html.escape(e['dst'])}: {float(e['score']):+.4g}"
                  for e in drawn]))
    extra: dict[str, str] = {}
    roles = roles or {}
    groups: dict[str, list[str]] = {}
    for name in names:
        kind = parsed[name]["kind"]
        group = {"input": "embeddings / logits", "logits": "embeddings / logits", "kv": "K/V input",
                 "mlp": "MLP", "sae_feature": "SAE feature", "sae_error": "SAE error",
                 "other": "other"}.get(kind, "head")
        if kind == "head" and roles.get(name):
            group = roles[name]
        groups.setdefault(group, []).append(name)
    style = {"embeddings / logits": ("square", "#444", 14), "K/V input": ("diamond", "#aaa", 8),
             "MLP": ("square", "#ff7f0e", 11), "SAE feature": ("circle", "#17becf", 11),
             "SAE error": ("x", "#7f7f7f", 11), "head": ("circle", "#9aa0a6", 11),
             "other": ("triangle-up", "#444", 11)}
    for group, members in groups.items():
        symbol, colour, size = style.get(group, ("circle", None, 13))
        colour = colour or role_colour(group, extra)
        fig.add_trace(go.Scatter(
            x=[where[n][0] for n in members], y=[where[n][1] for n in members],
            mode="markers+text" if len(names) <= 60 else "markers", name=group,
            text=[_short(n) for n in members], textposition="top center", textfont={"size": 9},
            customdata=members, hovertext=[_hover(n, node_info.get(n), roles.get(n)) for n in members],
            hoverinfo="text",
            marker={"size": size, "symbol": symbol, "color": colour, "line": {"width": 1, "color": "#333"}}))
    has_heads = any(parse_node(n)["kind"] in ("head", "kv", "mlp") for n in every)
    fig.update_layout(
        title={"text": html.escape(title) + "<br><sup>" + html.escape(
            threshold_text(mode, value, len(drawn), n_passing, len(edges))) + "</sup>",
            "x": 0.02, "xanchor": "left"},
        height=max(460, 28 * (max((y for _, y in where.values()), default=0) + 2) + 140),
        xaxis={"title": "layer (embeddings left, logits right)", "range": [-1.6, n_layers + 1.2],
               "dtick": 1 if n_layers <= 32 else 2, "zeroline": False},
        yaxis={"title": "head (MLP on top)" if has_heads else
               "SAE nodes per point (error first, then by |score|)", "zeroline": False, "dtick": 1},
        plot_bgcolor="white", hovermode="closest", clickmode="event",
        legend={"orientation": "h", "y": -0.15}, margin={"l": 60, "r": 20, "t": 70, "b": 90},
        uirevision="edge-graph",  # keep the user's zoom while the threshold moves
    )
    return fig


def _short(name: str) -> str:
    p = parse_node(name)
    if p["kind"] == "head":
        return f"{p['layer']}.{p['head']}"
    if p["kind"] == "sae_feature":
        return f"f{p['feature']}"
    if p["kind"] == "sae_error":
        return "err"
    return name


def _hover(name: str, info: dict | None, role: str | None) -> str:
    lines = [html.escape(name)] + ([html.escape(role)] if role else [])
    info = info or {}
    if isinstance(info.get("score"), (int, float)):
        lines.append(f"score {info['score']:+.4g}")
    if isinstance(info.get("density"), (int, float)):
        lines.append(f"fires on {info['density']:.2%} of positions")
    for context in (info.get("contexts") or [])[:2]:
        text = html.escape(str(context.get("text", ""))[-60:]).replace("\n", " ")
        lines.append(f"{float(context.get('activation', 0)):.2f}: …{text}")
    return "<br>".join(lines)


def circuit_edge_graph(circuit, mode: str = "top", value: float | None = 200,
                       n_layers: int | None = None, n_heads: int | None = None,
                       cap: int = MAX_DRAWN_EDGES, title: str | None = None) -> go.Figure:
    """`edge_graph` of a `circuits.circuit.Circuit` (every edge it has: graph edges, path
    edges, feature edges), its heads coloured by role and its nodes' stored information."""
    edges = [e.to_json() for e in circuit.all_edges()]
    roles = {f"a{h.layer}.h{h.head}": h.role for h in circuit.heads if h.role}
    nodes = list(circuit.nodes) + [f"a{h.layer}.h{h.head}" for h in circuit.heads]
    info = {_graph_name(k): v for k, v in circuit.node_info.items()}
    edges = [{**e, "src": _graph_name(e["src"]), "dst": _graph_name(e["dst"])} for e in edges]
    return edge_graph(edges, [_graph_name(n) for n in nodes], n_layers, n_heads, mode, value, cap,
                      roles, info, title or f"{circuit.task} circuit of {circuit.model} ({circuit.method})",
                      helps="negative" if circuit.method == "path" else "positive")


def _graph_name(name: str) -> str:
    """"3.2" (sae-heads) -> "a3.h2", the name roles and the graph use; anything else as is."""
    p = parse_node(name)
    if p["kind"] == "head" and not name.startswith("a"):
        return f"a{p['layer']}.h{p['head']}"
    return name


def edge_circuit_graph(edges: Sequence[dict], n_layers: int, n_heads: int, top: int = 150,
                       title: str = "edge circuit") -> go.Figure:
    """The `top` strongest edges ({"src", "dst", "score"}) as `edge_graph` draws them."""
    return edge_graph(edges, n_layers=n_layers, n_heads=n_heads, mode="top", value=top, title=title)


# Faithfulness curves run over what the method ranks (module doc of `circuits.discover`).
CURVE_UNITS = {"sae-features": "SAE nodes", "sae-heads": "heads"}


def faithfulness_figure(curve: Sequence[dict], random_curve: Sequence[dict] = (),
                        title: str = "faithfulness", cpr: float | None = None,
                        cmd: float | None = None, random_cmd: float | None = None,
                        random_cpr: float | None = None, unit: str = "edges") -> go.Figure:
    """f(k) against k (% of `unit`, log axis) for a circuit and, dashed, random circuits of the
    same sizes (MIB's baseline), with CPR, CMD and the random circuits' CMD written beside."""
    fig = go.Figure()
    for points, name, dash, colour in ((curve, "circuit", "solid", "#1f77b4"),
                                       (random_curve, "random circuits", "dash", "#7f7f7f")):
        if points:
            fig.add_trace(go.Scatter(x=[p["k_percent"] for p in points],
                                     y=[p["faithfulness"] for p in points], mode="lines+markers",
                                     name=name, line={"dash": dash, "color": colour},
                                     hovertemplate="k = %{x}%: f = %{y:.3f}<extra>" + name + "</extra>"))
    fig.add_hline(y=1.0, line={"color": "#999", "width": 1})
    fig.add_hline(y=0.0, line={"color": "#ccc", "width": 1})
    figures = [(label, v) for label, v in (("CPR", cpr), ("CMD", cmd), ("random CPR", random_cpr),
                                          ("random CMD", random_cmd)) if isinstance(v, (int, float))]
    if figures:
        fig.add_annotation(text="<br>".join(f"{label} {v:.3f}" for label, v in figures),
                           xref="paper", yref="paper", x=0.98, y=0.05, xanchor="right",
                           yanchor="bottom", showarrow=False, align="right",
                           bgcolor="rgba(255,255,255,0.85)", bordercolor="#bbb", borderwidth=1)
    ks = sorted({p["k_percent"] for p in list(curve) + list(random_curve)})
    fig.update_layout(title={"text": html.escape(title), "x": 0.02}, height=380,
                      xaxis={"title": f"circuit size (% of {unit}, log scale)", "type": "log",
                             "tickvals": ks, "ticktext": [f"{k:g}" for k in ks]},
                      yaxis={"title": "f(k)"}, plot_bgcolor="white",
                      legend={"orientation": "h", "y": -0.25}, margin={"t": 50, "b": 90})
    return fig


def circuit_faithfulness_figure(circuit, title: str | None = None) -> go.Figure | None:
    """`faithfulness_figure` of the curve stored with a `Circuit` (its evaluation), or None."""
    ev = circuit.evaluation or {}
    if not ev.get("faithfulness_curve"):
        return None
    return faithfulness_figure(ev["faithfulness_curve"], ev.get("random_curve") or (),
                               title or f"faithfulness of the {circuit.method} circuit "
                               f"(n_eval = {ev.get('n_eval', '?')}, disjoint from discovery)",
                               cpr=ev.get("cpr"), cmd=ev.get("cmd"),
                               random_cmd=ev.get("random_cmd"), random_cpr=ev.get("random_cpr"),
                               unit=CURVE_UNITS.get(circuit.method, "edges"))
