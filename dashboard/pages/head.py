"""Head: one head's attention pattern on a prompt the user types, its score on every detector,
the keys it attends to most, and the causal checks stored with the scans.

URL: /head?model_id=M&layer=L&head=H[&prompt=TEXT&prompt2=TEXT&detector=D]
The pattern is computed with the loaded model (`interp.patterns.attention_patterns`, with the
next tokens at every position from the same forward, for the hover); the scores come from the
store. With `prompt2` the head's pattern on a second prompt is drawn beside the first, on the same
colour scale. The column "next ▸" right of each pattern carries, per query row, its top keys and
the model's next-token probabilities (hover over it).
"""

from __future__ import annotations

from dash import Input, Output, State, dcc, html, no_update

from interp.errors import InterpError
from interp.patterns import (MAX_PATTERN_TOKENS, SINK_THRESHOLD, attention_patterns,
                             query_summaries, sink_positions, top_attended)
from interp.plots import (MAX_PATTERN_CELLS, attention_pattern_figure, empty_figure,
                          pattern_pair_figures)

from dashboard import data
from dashboard.layout import error_box, int_param, notice, query_string, verify_text
from dashboard.state import ModelBusy, ModelNotReady

PATH = "/head"
TITLE = "Head"
DEFAULT_PROMPT = ("When Mary and John went to the store, John gave a drink to Mary. "
                  "When Mary and John went to the store, John gave a drink to")
HIDDEN = {"display": "none"}
# Patterns up to the library's limit; past interp.plots.MAX_PATTERN_CELLS tokens the figure is
# pooled on the server (block maxima), so a 2,000-token pattern ships and draws in seconds.
MAX_SHOWN_TOKENS = MAX_PATTERN_TOKENS
# Next tokens kept per position for the hover (one forward per prompt gives them all).
HOVER_NEXT_TOKENS = 5
HOVER_TOP_KEYS = 4


def layout(state, query: dict) -> html.Div:
    model_id = query.get("model_id") or data.default_model_id(state)
    # Absent: head 0.0; present but not a number: None, which the callbacks report as an error.
    layer = int_param(query, "layer") if "layer" in query else 0
    head = int_param(query, "head") if "head" in query else 0
    prompt = query["prompt"] if "prompt" in query else DEFAULT_PROMPT
    prompt2 = query.get("prompt2") or None
    detector = query.get("detector")
    here = dict(model_id=model_id, detector=detector, prompt=query.get("prompt"), prompt2=prompt2)
    nav = []
    shape = _shape(state, model_id)
    if layer is not None and head is not None and shape is not None:
        n_layers, n_heads = shape
        index = layer * n_heads + head  # heads in reading order: L0.H0, L0.H1, ...
        for step, label in ((-1, "← previous head"), (1, "next head →")):
            if 0 <= index + step < n_layers * n_heads:
                other = divmod(index + step, n_heads)
                nav.append(dcc.Link(label, href=PATH + query_string(
                    layer=other[0], head=other[1], **here), className="button-link"))
    nav.append(dcc.Link("back to the heatmap", href="/heads" + query_string(
        model_id=model_id, detector=detector), className="button-link"))
    return html.Div([
        html.H2(f"Head L{layer}.H{head}" if layer is not None and head is not None else "Head",
                id="head-title"),
        html.Div([html.Code(model_id or "no model"), *nav], className="subtitle"),
        html.Div([
            html.Label(["layer", dcc.Input(id="head-layer", type="number", min=0, step=1,
                                           value=layer, debounce=False)], className="control small"),
            html.Label(["head", dcc.Input(id="head-head", type="number", min=0, step=1,
                                          value=head, debounce=False)], className="control small"),
            html.Label(["prompt", dcc.Textarea(id="head-prompt", value=prompt, rows=3)],
                       className="control prompt"),
            html.Label(["compare with a second prompt (optional)",
                        dcc.Textarea(id="head-prompt-b", value=prompt2 or "", rows=3,
                                     placeholder="the same head on another prompt, side by side")],
                       className="control prompt"),
            html.Button("Show pattern", id="head-show", className="primary"),
        ], className="controls"),
        html.Div([
            html.Button("Pattern as .npy", id="head-export-npy",
                        title="download this head's [N, N] pattern (numpy.load reads it)"),
            html.Span([html.Span("copy as Python ", className="hint"),
                       dcc.Clipboard(id="head-copy-python", className="clipboard",
                                     title="copy the Python that computes and draws this pattern")],
                      className="copy"),
            dcc.Link("every head of this layer", id="head-grid-link", className="button-link",
                     href=PATH + query_string(**{k: v for k, v in query.items() if k != "view"},
                                              view="grid")),
            dcc.Link("logit lens and DLA of this prompt", id="head-lens-link",
                     className="button-link",
                     href="/lens" + query_string(model_id=model_id, prompt=query.get("prompt"),
                                                 layer=layer, head=head)),
            dcc.Download(id="head-download"),
        ], className="controls"),
        html.Div(dcc.Graph(id="head-grid", config={"displaylogo": False}), id="head-grid-box",
                 style={} if query.get("view") == "grid" else HIDDEN),
        dcc.Store(id="head-query", data={"model_id": model_id, "layer": layer, "head": head,
                                         "prompt": prompt, "prompt2": prompt2,
                                         "detector": detector,
                                         "view": query.get("view"),
                                         "layer_raw": query.get("layer"),
                                         "head_raw": query.get("head")}),
        dcc.Interval(id="head-retry", interval=3000, disabled=True),
        dcc.Interval(id="head-retry-b", interval=3000, disabled=True),
        *_pattern_area(prompt2 is not None),
    ])


def _pattern_area(compare: bool) -> list:
    """The pattern(s) and the side panels. Comparing two prompts, the two patterns share the full
    width side by side and the panels go below; otherwise the panels sit right of the pattern."""
    pattern_a = html.Div([
        html.H3("Attention pattern" + (" — prompt 1" if compare else "")),
        html.Div(id="head-pattern-message"),
        dcc.Loading(html.Div(dcc.Graph(id="head-pattern", style=HIDDEN,
                                       config={"displaylogo": False}),
                             className="pattern-scroll"), type="circle", delay_show=300),
    ], className="pattern-column", style={"flex": 1} if compare else None)
    pattern_b = html.Div([
        html.H3("Attention pattern — prompt 2"),
        html.Div(id="head-pattern-b-message"),
        dcc.Loading(html.Div(dcc.Graph(id="head-pattern-b", style=HIDDEN,
                                       config={"displaylogo": False}),
                             className="pattern-scroll"), type="circle", delay_show=300),
    ], className="pattern-column", id="head-pattern-b-box",
        style={"flex": 1} if compare else HIDDEN)
    side = html.Div([
        html.Div([html.H3("Scores on every detector"), html.Div(id="head-scores")],
                 className="panel"),
        html.Div([html.H3("Most attended tokens"), html.Div(id="head-top")],
                 className="panel"),
    ], className="side-column")
    if compare:
        return [html.Div([pattern_a, pattern_b], className="head-columns", id="head-pair"),
                html.Div(side, style={"marginTop": "16px"})]
    return [html.Div([pattern_a, pattern_b, side], className="head-columns")]


def _shape(state, model_id: str | None) -> tuple[int, int] | None:
    """(n_layers, n_heads) of the model the page is about: the loaded model's, else a scan's."""
    model = state.models.model
    if model is not None and model.model_id == model_id:
        return model.n_layers, model.n_heads
    for scores, _ in data.all_latest_scores(state, model_id).values() if model_id else ():
        return scores.n_layers, scores.n_heads
    return None


def _checked(query: dict):
    """(layer, head) as ints, or an error message naming the bad value."""
    layer, head = query.get("layer"), query.get("head")
    if layer is None:
        return None, f"layer {query.get('layer_raw')!r} is not a layer number: use 0, 1, 2, ..."
    if head is None:
        return None, f"head {query.get('head_raw')!r} is not a head number: use 0, 1, 2, ..."
    if layer < 0 or head < 0:
        return None, "layer and head are counted from 0; negative numbers do not exist"
    return (layer, head), None


def scores_panel(state, query: dict):
    """The head's score, rank and causal checks on every detector stored for its model."""
    checked, problem = _checked(query)
    if problem:
        return error_box(problem)
    layer, head = checked
    model_id = query.get("model_id")
    if not model_id:
        return notice("no scans in the store yet")
    latest = data.all_latest_scores(state, model_id)
    if not latest:
        return notice(["No scans for this model yet: ", dcc.Link("launch one", href="/scans"), "."])
    rows, checks = [], []
    for detector, (scores, run) in latest.items():
        if layer >= scores.n_layers or head >= scores.n_heads:
            return error_box(f"head L{layer}.H{head} does not exist: {model_id} has layers "
                             f"0..{scores.n_layers - 1} and heads 0..{scores.n_heads - 1}")
        value = float(scores.scores[layer, head])
        finite = scores.scores[scores.scores.isfinite()]
        rank = int((finite > value).sum()) + 1
        rows.append(html.Tr([
            html.Td(dcc.Link(detector, href="/heads" + query_string(model_id=model_id,
                                                                   detector=detector))),
            html.Td(f"{value:.4f}"), html.Td(f"{rank} / {finite.numel()}"),
            html.Td(run.id, className="mono"),
        ], className="highlight" if detector == query.get("detector") else None))
        if scores.verify:
            checks.append(html.Li([html.B(detector), ": ",
                                   _verify_summary(scores.verify, (layer, head))]))
        checks += _info_entries(detector, scores.info, layer, head)
    table = html.Table([html.Thead(html.Tr([html.Th("detector"), html.Th("score"),
                                            html.Th("rank"), html.Th("run")])),
                        html.Tbody(rows)], className="table", id="head-scores-table")
    checks += _circuit_facts(state, model_id, layer, head)
    causal = (html.Ul(checks) if checks else
              html.P("No causal check stored for these scans (`interp scan --verify K`), and no "
                     "patching or circuit run names this head.", className="hint"))
    return html.Div([table, html.H4("Causal checks"), causal])


def _info_entries(detector: str, info: dict, layer: int, head: int, limit: int = 6) -> list:
    """Records a scan listed for this head in its info (e.g. the sink detector's later sinks:
    [{"prompt", "position", "token", "layer", "head", "alpha"}, ...])."""
    items = []
    for key, value in info.items():
        if not isinstance(value, list):
            continue
        mine = [e for e in value if isinstance(e, dict) and e.get("layer") == layer
                and e.get("head") == head]
        if not mine:
            continue
        shown = "; ".join(", ".join(f"{k} {v!r}" if isinstance(v, str) else f"{k} {v:.4g}"
                                    if isinstance(v, float) else f"{k} {v}"
                                    for k, v in e.items() if k not in ("layer", "head"))
                          for e in mine[:limit])
        more = f" (+{len(mine) - limit} more)" if len(mine) > limit else ""
        items.append(html.Li([html.B(f"{detector} {key}"), f": {shown}{more}"]))
    return items


def _circuit_facts(state, model_id: str, layer: int, head: int) -> list:
    """The head's effect in the newest head-patching run and its role in the newest circuit."""
    facts = []
    for run in data.complete_runs(state, model_id, kind="patch"):
        result = run.result or {}
        if result.get("axes") == ["layer", "head"] and result.get("values"):
            try:
                value = result["values"][layer][head]
            except (IndexError, TypeError):
                break
            if value is not None:
                facts.append(html.Li([html.B(f"{result.get('method', '')} patching"),
                                      f" ({result.get('metric', '')}, {result.get('direction', '')}): "
                                      f"{value:+.3f} (0 = corrupted, 1 = clean; run {run.id})"]))
            break
    for run in data.complete_runs(state, model_id, kind="circuit"):
        result = run.result or {}
        role = next((h.get("role") for h in result.get("heads", [])
                     if (h.get("layer"), h.get("head")) == (layer, head)), None)
        task = result.get("task", "")
        facts.append(html.Li([html.B(f"{task} circuit"), ": " + (
            f"role {role}" if role else "this head is not in it")
            + (f" (faithfulness {result['faithfulness']:.1%})" if result.get("faithfulness") is not None else "")
            + f"; run {run.id}"], id="head-circuit-role"))
        break
    return facts


def _verify_summary(verify: dict, head: tuple[int, int]) -> html.Span:
    """A causal check in one line, and whether this head was among the ablated."""
    inside = [head[0], head[1]] in [list(h) for h in verify.get("heads") or []]
    return html.Span(verify_text(verify) + (" — this head was among those ablated" if inside else ""))


def head_figures(state, query: dict, layer: int, head: int):
    """-> (pattern of prompt 1, the model id, its figure, figure of prompt 2 or None).

    The figures carry the per-query hover column (`interp.patterns.query_summaries`). Two prompts
    are drawn as a pair (`interp.plots.pattern_pair_figures`: one colour scale, one height).
    Raises ModelBusy / ModelNotReady / InterpError from the pattern computation.
    """
    text = query.get("prompt", DEFAULT_PROMPT)
    pattern, model_id = compute_pattern(state, text, layer)
    head_pattern = pattern.head(head)
    sinks = sink_positions(head_pattern)
    title = f"L{layer}.H{head}, {pattern.n_tokens} tokens"
    queries = _queries(pattern, head)
    text_b = query.get("prompt2")
    if not text_b:
        return pattern, model_id, attention_pattern_figure(pattern.tokens, head_pattern, sinks,
                                                           title, queries=queries), None
    pattern_b, _ = compute_pattern(state, text_b, layer)
    head_b = pattern_b.head(head)
    figure_a, figure_b = pattern_pair_figures(
        pattern.tokens, head_pattern, pattern_b.tokens, head_b, title + " (prompt 1)",
        f"L{layer}.H{head}, {pattern_b.n_tokens} tokens (prompt 2)", queries_a=queries,
        queries_b=_queries(pattern_b, head), sinks_a=sinks, sinks_b=sink_positions(head_b))
    return pattern, model_id, figure_a, figure_b


def _queries(pattern, head: int):
    """Hover data per query row, or None past the unpooled size (a pooled cell is a block)."""
    if pattern.n_tokens > MAX_PATTERN_CELLS:
        return None
    return query_summaries(pattern, head, k_keys=HOVER_TOP_KEYS)


def pattern_view(state, query: dict):
    """-> (figure, figure style, message, top table, retry disabled)."""
    checked, problem = _checked(query)
    if problem:
        return empty_figure(""), HIDDEN, error_box(problem, id="head-error"), None, True
    layer, head = checked
    try:
        pattern, model_id, figure, _ = head_figures(state, query, layer, head)
        head_pattern = pattern.head(head)
    except (ModelBusy, ModelNotReady) as exc:
        return no_update, HIDDEN, notice(f"{exc} (retrying)", id="head-wait"), None, False
    except InterpError as exc:
        return empty_figure(""), HIDDEN, error_box(str(exc), id="head-error"), None, True
    sinks = sink_positions(head_pattern)
    message = []
    if query.get("model_id") and query["model_id"] != model_id:
        message.append(notice(f"Scores are for {query['model_id']}; the pattern is computed "
                              f"with the loaded model {model_id}."))
    sink_text = ", ".join(f"{p} {pattern.tokens[p]!r}" for p in sinks) or "none"
    message.append(html.P([html.Span("▼ sink keys", className="sink"),
                           f" (mean attention received α > {SINK_THRESHOLD}): {sink_text}"],
                          id="head-sinks"))
    top = top_attended(pattern, head, k=8)
    table = html.Table([html.Thead(html.Tr([html.Th("pos"), html.Th("token"),
                                            html.Th("α (mean received)"),
                                            html.Th("from last token")]))]
                       + [html.Tbody([html.Tr([html.Td(t["position"]),
                                               html.Td(repr(t["token"]), className="mono"),
                                               html.Td(f"{t['received']:.3f}"),
                                               html.Td(f"{t['from_last']:.3f}")]) for t in top])],
                       className="table", id="head-top-table")
    return figure, {"display": "block"}, message, table, True


def pattern_b_view(state, query: dict):
    """-> (figure of prompt 2, its style, message, retry disabled); hidden without prompt2."""
    checked, problem = _checked(query)
    if not query.get("prompt2"):
        return empty_figure(""), HIDDEN, None, True
    if problem:
        return empty_figure(""), HIDDEN, error_box(problem), True
    try:
        _, _, _, figure = head_figures(state, query, *checked)
    except (ModelBusy, ModelNotReady) as exc:
        return no_update, HIDDEN, notice(f"{exc} (retrying)"), False
    except InterpError as exc:
        return empty_figure(""), HIDDEN, error_box(str(exc), id="head-error-b"), True
    return figure, {"display": "block"}, None, True


def compute_pattern(state, text: str, layer: int):
    """The layer's pattern for `text` with the loaded model, cached per (model, text, layer).

    Requests arriving while the model is busy are pooled: whoever gets the model next computes
    every layer asked for on its text in one forward (`interp.patterns.attention_patterns`).
    """
    cache, pending = state.caches["patterns"], state.caches["pending_patterns"]
    loaded = state.models.status()["model_id"]
    if loaded is not None:
        cached = cache.get((loaded, text, layer))
        if cached is not None:
            return cached, loaded
    pending.add((text, layer))
    # Shorter than the retry interval: a waiting page has at most one request in flight.
    with state.models.use(timeout=2.5, purpose="attention patterns") as model:
        key = (model.model_id, text, layer)
        pattern = cache.get(key)  # computed by a request that held the model before us?
        if pattern is None:
            layers = {other for other in pending.take(text) if 0 <= other < model.n_layers}
            layers.add(layer)  # an impossible layer of this request gets its own clear error
            # The hover's next tokens need the whole forward and an unembedding per position:
            # only where the hover is drawn (unpooled patterns); longer texts stop early.
            hover = len(model.encode(text)) <= MAX_PATTERN_CELLS
            for other, computed in attention_patterns(
                    model, text, layers, max_tokens=MAX_SHOWN_TOKENS,
                    next_tokens=HOVER_NEXT_TOKENS if hover else 0).items():
                cache.put((model.model_id, text, other), computed)
            pattern = cache.get(key)
        return pattern, model.model_id


def register(app, state) -> None:
    @app.callback(
        Output("url", "search", allow_duplicate=True),
        Input("head-show", "n_clicks"), Input("head-layer", "n_submit"),
        Input("head-head", "n_submit"),
        State("head-layer", "value"), State("head-head", "value"), State("head-prompt", "value"),
        State("head-prompt-b", "value"),
        State("head-query", "data"), State("url", "search"), prevent_initial_call=True,
    )
    def controls_to_url(clicks, submit_layer, submit_head, layer, head, prompt, prompt2, query,
                        search):
        if not (clicks or submit_layer or submit_head):  # inserted by the router, not used yet
            return no_update
        if not (prompt or "").strip():
            prompt = " "  # kept in the URL, so the page says the prompt is empty
        new = query_string(model_id=query.get("model_id"), layer=layer, head=head,
                           detector=query.get("detector"),
                           prompt=prompt if prompt != DEFAULT_PROMPT else None,
                           prompt2=prompt2 if (prompt2 or "").strip() else None,
                           view=query.get("view"))
        return no_update if new == (search or "") else new

    @app.callback(Output("head-grid", "figure"), Input("head-query", "data"),
                  Input("head-retry", "n_intervals"))
    def grid(query, _retry):
        from interp.plots import layer_pattern_grid

        query = query or {}
        checked, problem = _checked(query)
        if query.get("view") != "grid" or problem:
            return no_update
        try:
            pattern, _ = compute_pattern(state, query.get("prompt", DEFAULT_PROMPT), checked[0])
        except (ModelBusy, ModelNotReady, InterpError) as exc:
            return empty_figure(str(exc))
        return layer_pattern_grid(pattern.pattern, pattern.layer, pattern.n_tokens)

    @app.callback(Output("head-copy-python", "content"), Input("head-query", "data"))
    def snippet(query):
        from interp.exports import pattern_snippet

        query = query or {}
        checked, problem = _checked(query)
        if problem:
            return ""
        name = state.models.status()["name"] or "smollm2-135m"
        return pattern_snippet(name, query.get("prompt", DEFAULT_PROMPT), *checked)

    @app.callback(Output("head-download", "data"), Input("head-export-npy", "n_clicks"),
                  State("head-query", "data"), prevent_initial_call=True)
    def export_npy(clicks, query):
        from interp.exports import array_npy

        query = query or {}
        checked, problem = _checked(query)
        if not clicks or problem:
            return no_update
        try:
            pattern, model_id = compute_pattern(state, query.get("prompt", DEFAULT_PROMPT), checked[0])
            head_pattern = pattern.head(checked[1])
        except (ModelBusy, ModelNotReady, InterpError):
            return no_update
        filename = f"pattern-{model_id.replace('@', '-')}-L{checked[0]}H{checked[1]}.npy"
        return dcc.send_bytes(array_npy(head_pattern), filename)

    @app.callback(Output("head-scores", "children"), Input("head-query", "data"))
    def scores(query):
        return scores_panel(state, query or {})

    @app.callback(
        Output("head-pattern", "figure"), Output("head-pattern", "style"),
        Output("head-pattern-message", "children"), Output("head-top", "children"),
        Output("head-retry", "disabled"),
        Input("head-query", "data"), Input("head-retry", "n_intervals"),
    )
    def pattern(query, _retry):
        return pattern_view(state, query or {})

    @app.callback(
        Output("head-pattern-b", "figure"), Output("head-pattern-b", "style"),
        Output("head-pattern-b-message", "children"), Output("head-retry-b", "disabled"),
        Input("head-query", "data"), Input("head-retry-b", "n_intervals"),
    )
    def pattern_b(query, _retry):
        return pattern_b_view(state, query or {})
