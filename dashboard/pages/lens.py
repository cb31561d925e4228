"""Lens: the logit lens and the direct logit attribution of every head, for a prompt's next token.

URL: /lens?prompt=TEXT[&target=TOKEN&wrong=TOKEN&layer=L&head=H]
`interp.lens.logit_lens_and_dla` on the loaded model (one forward). The target defaults to the
model's top prediction; with a wrong token the metric is logit(target) - logit(wrong). Clicking a
head in the DLA heatmap opens it on the Head page with the same prompt; layer/head in the URL
(e.g. coming from a Head page) outline that head.
"""

from __future__ import annotations

from dash import Input, Output, State, dcc, html, no_update

from interp.errors import InterpError
from interp.plots import dla_heatmap, empty_figure, logit_lens_figure

from dashboard.layout import error_box, int_param, notice, query_string
from dashboard.state import LRU, ModelBusy, ModelNotReady

PATH = "/lens"
TITLE = "Lens"
DEFAULT_PROMPT = "When Mary and John went to the store, John gave a drink to"
DEFAULT_TARGET = " Mary"
DEFAULT_WRONG = " John"
HIDDEN = {"display": "none"}


def layout(state, query: dict) -> html.Div:
    prompt = query["prompt"] if "prompt" in query else DEFAULT_PROMPT
    # A prompt from elsewhere (the Head page) has no target: explain the top prediction.
    fresh = "prompt" not in query
    target = query.get("target", DEFAULT_TARGET if fresh else "")
    wrong = query.get("wrong", DEFAULT_WRONG if fresh else "")
    layer = int_param(query, "layer")
    head = int_param(query, "head")
    return html.Div([
        html.H2("Logit lens and direct logit attribution"),
        html.P(["Which layers make the next token appear (logit lens: the residual after each "
                "layer read through the final norm and unembedding), and which heads write it "
                "directly (DLA: each head's output at the last position, through the frozen "
                "final norm, on the target's unembedding direction, minus the wrong token's). ",
                "Click a head to open its pattern on this prompt."], className="hint"),
        html.Div([
            html.Label(["prompt", dcc.Textarea(id="lens-prompt", value=prompt, rows=3)],
                       className="control prompt"),
            html.Label(["target token", dcc.Input(id="lens-target", type="text", value=target,
                                                  placeholder="top prediction")],
                       className="control small"),
            html.Label(["wrong token (optional)", dcc.Input(id="lens-wrong", type="text",
                                                            value=wrong, placeholder="none")],
                       className="control small"),
            html.Button("Explain", id="lens-show", className="primary"),
            html.Span([html.Span("copy as Python ", className="hint"),
                       dcc.Clipboard(id="lens-copy-python", className="clipboard",
                                     title="copy the Python that computes and draws this view")],
                      className="copy"),
        ], className="controls"),
        html.P("A token is one token of the model's vocabulary; most start with a space "
               "(' Mary').", className="hint"),
        dcc.Store(id="lens-query", data={"prompt": prompt, "target": target, "wrong": wrong,
                                         "layer": layer, "head": head}),
        dcc.Interval(id="lens-retry", interval=3000, disabled=True),
        html.Div(id="lens-message"),
        dcc.Loading(html.Div([
            html.Div(id="lens-summary"),
            dcc.Graph(id="lens-dla", style=HIDDEN, config={"displaylogo": False}),
            dcc.Graph(id="lens-line", style=HIDDEN, config={"displaylogo": False}),
        ]), type="circle", delay_show=300),
    ])


def compute_lens(state, text: str, target: str, wrong: str):
    """`LensResult` for the loaded model, cached per (model, text, target, wrong)."""
    from interp.lens import logit_lens_and_dla

    cache = state.caches.setdefault("lens", LRU(16))
    loaded = state.models.status()["model_id"]
    key = (loaded, text, target, wrong)
    if loaded is not None and cache.get(key) is not None:
        return cache.get(key), loaded
    with state.models.use(timeout=2.5, purpose="logit lens") as model:
        result = logit_lens_and_dla(model, text, target or None, wrong or None)
        cache.put((model.model_id, text, target, wrong), result)
        return result, model.model_id


def lens_view(state, query: dict):
    """-> (message, summary, DLA figure, its style, lens figure, its style, retry disabled)."""
    shown = {"display": "block"}
    try:
        result, model_id = compute_lens(state, query.get("prompt", DEFAULT_PROMPT),
                                        query.get("target") or "", query.get("wrong") or "")
    except (ModelBusy, ModelNotReady) as exc:
        return notice(f"{exc} (retrying)", id="lens-wait"), None, no_update, HIDDEN, no_update, HIDDEN, False
    except InterpError as exc:
        return (error_box(str(exc), id="lens-error"), None, empty_figure(""), HIDDEN,
                empty_figure(""), HIDDEN, True)
    layer, head = query.get("layer"), query.get("head")
    highlight = (layer, head) if layer is not None and head is not None else None
    dla = dla_heatmap(result.dla_heads, result.metric_name, highlight)
    lens = logit_lens_figure(result.lens_layers, result.lens_logprob, result.lens_rank,
                             result.target, result.lens_metric if result.wrong is not None else None,
                             result.metric_name)
    return None, summary(result, model_id), dla, shown, lens, shown, True


def summary(result, model_id: str) -> html.Div:
    """The metric, the check that the decomposition adds up, the top heads and the rest."""
    terms = result.components()
    total = sum(terms.values())
    heads_total = float(result.dla_heads.sum())
    mlps_total = float(result.dla_mlps.sum())
    top_next = ", ".join(f"{t['token']!r} {t['prob']:.3f}" for t in result.top_next)
    rows = [html.Tr([html.Td(html.A(f"L{h['layer']}.H{h['head']}", href="/head" + query_string(
                         layer=h["layer"], head=h["head"], prompt=result.text))),
                     html.Td(f"{h['dla']:+.3f}")]) for h in result.top_heads(8)]
    return html.Div([
        html.P([html.Code(model_id), f" — metric {result.metric_name} = ",
                html.B(f"{result.final_metric:+.3f}", id="lens-final"),
                f"; the model's top next tokens: {top_next}"]),
        html.P(f"The decomposition adds up: embeddings {result.dla_embed:+.3f} + heads "
               f"{heads_total:+.3f} + MLPs {mlps_total:+.3f} + attention biases "
               f"{float(result.dla_attn_rest.sum()):+.3f} + unembedding bias "
               f"{result.dla_unembed_bias:+.3f} = {total:+.3f} (the model: "
               f"{result.final_metric:+.3f}).", id="lens-check", className="hint"),
        html.Div([html.H4("Heads with the largest direct effect"),
                  html.Table([html.Thead(html.Tr([html.Th("head"), html.Th("DLA")])),
                              html.Tbody(rows)], className="table", id="lens-top-table")]),
    ])


def register(app, state) -> None:
    @app.callback(
        Output("url", "search", allow_duplicate=True),
        Input("lens-show", "n_clicks"), Input("lens-target", "n_submit"),
        Input("lens-wrong", "n_submit"),
        State("lens-prompt", "value"), State("lens-target", "value"), State("lens-wrong", "value"),
        State("url", "search"), prevent_initial_call=True,
    )
    def controls_to_url(clicks, submit_target, submit_wrong, prompt, target, wrong, search):
        if not (clicks or submit_target or submit_wrong):
            return no_update
        if not (prompt or "").strip():
            prompt = " "  # kept in the URL, so the page says the prompt is empty
        # Empty fields stay in the URL (target= means "the top prediction", not the default).
        new = query_string(prompt=prompt, target=target or "", wrong=wrong or "")
        return no_update if new == (search or "") else new

    @app.callback(
        Output("lens-message", "children"), Output("lens-summary", "children"),
        Output("lens-dla", "figure"), Output("lens-dla", "style"),
        Output("lens-line", "figure"), Output("lens-line", "style"),
        Output("lens-retry", "disabled"),
        Input("lens-query", "data"), Input("lens-retry", "n_intervals"),
    )
    def view(query, _retry):
        return lens_view(state, query or {})

    @app.callback(Output("lens-copy-python", "content"), Input("lens-query", "data"))
    def snippet(query):
        from interp.lens import lens_snippet

        query = query or {}
        name = state.models.status()["name"] or "smollm2-135m"
        return lens_snippet(name, query.get("prompt", DEFAULT_PROMPT), query.get("target"),
                            query.get("wrong"))

    @app.callback(
        Output("url", "pathname", allow_duplicate=True), Output("url", "search", allow_duplicate=True),
        Input("lens-dla", "clickData"), State("lens-query", "data"), prevent_initial_call=True,
    )
    def open_head(click, query):
        if not click or not click.get("points"):
            return no_update, no_update
        point = click["points"][0]
        layer, head = point.get("customdata") or (point["y"], point["x"])
        return "/head", query_string(layer=int(layer), head=int(head),
                                     prompt=(query or {}).get("prompt"))
