"""Heads: a layer x head heatmap per detector, switchable; click a cell to open that head.

Compare view: a second detector side by side, or the two detectors' Spearman rank correlation
over all heads. URL: /heads?model_id=M&detector=D[&compare=E&view=side|rank]
"""

from __future__ import annotations

import math

import numpy as np
from dash import Input, Output, State, ctx, dcc, html, no_update

from interp.plots import empty_figure, head_heatmap, rank_scatter

from dashboard import data, first_run
from dashboard.layout import error_box, notice, query_string, verify_text

PATH = "/heads"
TITLE = "Heads"
HIDDEN = {"display": "none"}
SHOWN = {"display": "block"}


def layout(state, query: dict) -> html.Div:
    model_id = query.get("model_id") or data.default_model_id(state)
    model_ids = data.model_ids(state)
    if model_id and model_id not in model_ids:
        model_ids.append(model_id)
    detectors = data.detectors_for(state, model_id)
    detector = query.get("detector") or (detectors[0] if detectors else None)
    compare = query.get("compare")
    view = query.get("view") if query.get("view") in ("side", "rank") else "side"
    options = [{"label": d, "value": d} for d in detectors]
    run_id = query.get("run")
    runs = data.runs_with(state, model_id, detector) if model_id and detector else []
    run_options = [{"label": data.run_label(r, detector), "value": r.id} for r in runs]
    if run_id not in {r.id for r in runs}:
        run_id = None
    return html.Div([
        html.H2("Heads"),
        *([notice(f"deleted run {query['deleted']} and its files", id="heads-deleted")]
          if query.get("deleted") else []),
        html.Div(first_run_banner(state, model_id), id="heads-first-run"),
        dcc.Interval(id="heads-poll", interval=2000,
                     disabled=first_run.active_job(state, model_id) is None),
        html.Div([
            html.Label(["model", dcc.Dropdown(id="heads-model", options=model_ids, value=model_id,
                                              clearable=False)], className="control wide"),
            html.Label(["detector", dcc.Dropdown(id="heads-detector", options=options,
                                                 value=detector, clearable=False)],
                       className="control"),
            html.Label(["compare with", dcc.Dropdown(id="heads-compare", options=options,
                                                     value=compare, placeholder="(none)")],
                       className="control"),
            html.Label(["view", dcc.RadioItems(id="heads-view", value=view, inline=True, options=[
                {"label": "side by side", "value": "side"},
                {"label": "rank correlation", "value": "rank"}])], className="control"),
        ], className="controls"),
        html.Div([
            html.Label([f"run ({len(runs)} of {detector or '—'}; newest by default)",
                        dcc.Dropdown(id="heads-run", options=run_options, value=run_id,
                                     placeholder="newest", clearable=True)],
                       className="control wide"),
            html.Button("CSV", id="heads-export-csv", title="download the head scores as CSV"),
            html.Button("JSON", id="heads-export-json", title="download scores, parameters and check as JSON"),
            html.Span([html.Span("copy as Python ", className="hint"),
                       dcc.Clipboard(id="heads-copy-python", title="copy the Python that reproduces this view",
                                     className="clipboard")], className="copy"),
            dcc.ConfirmDialogProvider(html.Button("Delete this run", id="heads-delete", className="danger"),
                                      id="heads-delete-confirm",
                                      message="Delete this run and its files from the results store?"),
            dcc.Download(id="heads-download"),
        ], className="controls"),
        dcc.Store(id="heads-query", data={"model_id": model_id, "detector": detector,
                                          "compare": compare, "view": view, "run": run_id}),
        html.Div(id="heads-message"),
        html.P(id="heads-meaning", className="meaning"),
        html.Div([
            dcc.Graph(id="heads-heatmap", className="heatmap", config={"displaylogo": False}),
            dcc.Graph(id="heads-heatmap-b", className="heatmap", style=HIDDEN,
                      config={"displaylogo": False}),
            dcc.Graph(id="heads-rank", className="heatmap", style=HIDDEN,
                      config={"displaylogo": False}),
            html.Div([html.P("Click a cell to open that head.", className="hint"),
                      html.Div(id="heads-details")], className="details"),
        ], className="heatmaps"),
    ])


def render(state, query: dict):
    """-> (figure a, figure b, b style, rank figure, rank style, message, details)."""
    model_id, detector = query.get("model_id"), query.get("detector")
    compare, view = query.get("compare"), query.get("view") or "side"
    if not model_id:
        msg = notice(["The results store has no runs yet. Launch a scan on the ",
                      dcc.Link("Scans page", href="/scans"), " or with `interp scan`."])
        return empty_figure("no scans yet"), no_update, HIDDEN, no_update, HIDDEN, msg, None
    available = data.detectors_for(state, model_id)
    if not available:
        if first_run.active_job(state, model_id) is not None:
            return (empty_figure("the standard scans are running: the first heatmap appears "
                                 "in a few seconds"), no_update, HIDDEN, no_update, HIDDEN, None, None)
        msg = notice(["No complete scans for ", html.Code(model_id), " yet. Launch one on the ",
                      dcc.Link("Scans page", href="/scans"), "."])
        return empty_figure("no scans for this model"), no_update, HIDDEN, no_update, HIDDEN, msg, None
    if detector not in available:
        msg = error_box(f"no scores of detector {detector!r} for {model_id}; this model has: "
                        f"{', '.join(available)}")
        return empty_figure("unknown detector"), no_update, HIDDEN, no_update, HIDDEN, msg, None
    scores_a, run_a = selected_scores(state, query)
    fig_a = head_heatmap(scores_a.scores, detector)
    details = _details(scores_a, run_a, model_id)
    if not compare or compare == detector:
        return fig_a, no_update, HIDDEN, no_update, HIDDEN, None, details
    if compare not in available:
        msg = error_box(f"cannot compare with {compare!r}: no scores of it for {model_id}")
        return fig_a, no_update, HIDDEN, no_update, HIDDEN, msg, details
    scores_b, _ = data.latest_scores(state, model_id, compare)
    if scores_b.scores.shape != scores_a.scores.shape:
        msg = error_box(f"{detector} and {compare} have different shapes "
                        f"({tuple(scores_a.scores.shape)} vs {tuple(scores_b.scores.shape)})")
        return fig_a, no_update, HIDDEN, no_update, HIDDEN, msg, details
    if view == "rank":
        return fig_a, no_update, HIDDEN, _rank_figure(scores_a, scores_b), SHOWN, None, details
    fig_b = head_heatmap(scores_b.scores, compare)
    return fig_a, fig_b, SHOWN, no_update, HIDDEN, None, details


def first_run_banner(state, model_id: str | None):
    """What the first run is doing, while its standard scans run for this model; else None."""
    job = first_run.active_job(state, model_id)
    if job is None:
        return None
    done = set(data.detectors_for(state, model_id))
    steps = [f"{name} ✓" if name in done else name for name in job.parts]
    return html.Div([
        html.B("First run: "),
        f"the store had no scans of {model_id}, so the standard scans are running in the "
        "background (every detector but safety, small sizes, about 3 minutes on 2 CPU cores). "
        "Heatmaps appear here as each detector finishes: ", ", ".join(steps), ". ",
        dcc.Link("Scans page", href="/scans"), " shows the progress and can cancel it.",
    ], className="first-run", id="first-run-notice")


def selected_scores(state, query: dict):
    """(scores, run) the page shows: the run in the URL, else the newest with the detector."""
    model_id, detector, run_id = query.get("model_id"), query.get("detector"), query.get("run")
    if run_id:
        run = next((r for r in data.runs_with(state, model_id, detector) if r.id == run_id), None)
        if run is not None:
            return data.scores_of_run(state, run.id, detector), run
    return data.latest_scores(state, model_id, detector)


def _selected_or_none(state, query: dict):
    if not query.get("model_id") or not query.get("detector"):
        return None
    if query["detector"] not in data.detectors_for(state, query["model_id"]):
        return None
    return selected_scores(state, query)


def meaning(detector: str | None) -> str:
    from interp.heads.base import score_meaning

    return f"What this score means: {score_meaning(detector)}" if detector else ""


def _rank_figure(a, b):
    from scipy.stats import rankdata, spearmanr  # 1-2 s to import: only when a rank view is asked

    x, y = a.scores.flatten().numpy(), b.scores.flatten().numpy()
    keep = np.isfinite(x) & np.isfinite(y)
    n_heads = a.n_heads
    labels = [f"L{i // n_heads}.H{i % n_heads}" for i in np.nonzero(keep)[0]]
    x, y = x[keep], y[keep]
    # Rank 1 = the highest score; ties share their mean rank (scipy's default "average").
    ranks_x, ranks_y = rankdata(-x), rankdata(-y)
    rho = float(spearmanr(x, y).statistic) if len(x) > 1 else math.nan
    return rank_scatter(ranks_x, ranks_y, labels, a.detector, b.detector, rho)


def _details(scores, run, model_id: str) -> html.Div:
    top = scores.top(10)
    rows = [html.Tr([
        html.Td(i + 1),
        html.Td(dcc.Link(f"L{h['layer']}.H{h['head']}", href="/head" + query_string(
            model_id=model_id, layer=h["layer"], head=h["head"], detector=scores.detector))),
        html.Td(f"{h['score']:.4f}"),
    ]) for i, h in enumerate(top)]
    facts = [("run", run.id), ("finished", _time(run.finished_at)),
             ("prompt hash", scores.prompt_hash or "—"),
             ("parameters", ", ".join(f"{k}={v}" for k, v in sorted(scores.params.items())) or "—")]
    if scores.verify:
        facts.append(("causal check", verify_text(scores.verify)))
    return html.Div([
        *([error_box(str(scores.info["warning"]))] if scores.info.get("warning") else []),
        html.Div([html.H4(f"top heads — {scores.detector}"), html.Table(
            [html.Thead(html.Tr([html.Th("#"), html.Th("head"), html.Th("score")]))]
            + [html.Tbody(rows)], className="table")], className="panel", id="heads-top"),
        info_panel(scores.info),
        html.Div([html.H4("run"), html.Table([html.Tr([html.Th(k), html.Td(v)]) for k, v in facts],
                                             className="table facts")], className="panel"),
    ])


def info_panel(info: dict):
    """What the detector reported besides the scores (`HeadScores.info`), shown generically:
    scalars and small dicts as rows, a dict of records (e.g. the sink detector's
    `later_sink_tokens`) as a table of its first 10 records; long lists are only counted."""
    rows, tables = [], []
    for key, value in info.items():
        if key == "warning":
            continue
        if isinstance(value, (int, float, str, bool)) or value is None:
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            rows.append(html.Tr([html.Th(key), html.Td(shown)]))
        elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            columns = list(dict.fromkeys(c for record in value.values() for c in record))
            body = [html.Tr([html.Td(repr(name) if isinstance(name, str) else name, className="mono")]
                            + [html.Td(_cell(record.get(c))) for c in columns])
                    for name, record in list(value.items())[:10]]
            tables.append(html.Div([
                html.H5(f"{key} ({len(value)}{', first 10' if len(value) > 10 else ''})"),
                html.Table([html.Thead(html.Tr([html.Th("")] + [html.Th(c) for c in columns])),
                            html.Tbody(body)], className="table")], id=f"info-{key}"))
        elif isinstance(value, dict):
            rows.append(html.Tr([html.Th(key), html.Td(", ".join(
                f"{k}: {_cell(v)}" for k, v in list(value.items())[:12]))]))
        elif isinstance(value, list):
            simple = all(isinstance(v, (int, float, str)) for v in value)
            rows.append(html.Tr([html.Th(key), html.Td(
                ", ".join(repr(v) if isinstance(v, str) else str(v) for v in value[:12])
                + (" …" if len(value) > 12 else "")
                if simple else f"{len(value)} entries (in the store's run)")]))
    if not rows and not tables:
        return None
    return html.Div([html.H4("detector findings"), html.Table(rows, className="table facts"),
                     *tables], className="panel", id="heads-info")


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(".".join(map(str, v)) if isinstance(v, list) else str(v) for v in value[:6])
    return str(value)


def _time(t: float | None) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "—"


def register(app, state) -> None:
    @app.callback(
        Output("url", "search", allow_duplicate=True),
        Input("heads-model", "value"), Input("heads-detector", "value"),
        Input("heads-compare", "value"), Input("heads-view", "value"), Input("heads-run", "value"),
        State("heads-query", "data"), prevent_initial_call=True,
    )
    def controls_to_url(model_id, detector, compare, view, run, shown):
        # Dash also calls this when the router inserts the controls (prevent_initial_call does
        # not cover inserted inputs); then the controls equal what the page shows: no change.
        shown = shown or {}
        if (model_id, detector, compare, view, run) == (
                shown.get("model_id"), shown.get("detector"), shown.get("compare"),
                shown.get("view"), shown.get("run")):
            return no_update
        if model_id != shown.get("model_id"):  # another model has other detectors
            detector = compare = None
        if detector != shown.get("detector") or model_id != shown.get("model_id"):
            run = None  # runs belong to one detector
        return query_string(model_id=model_id, detector=detector, compare=compare,
                            view=view if compare else None, run=run)

    @app.callback(
        Output("heads-heatmap", "figure"), Output("heads-heatmap-b", "figure"),
        Output("heads-heatmap-b", "style"), Output("heads-rank", "figure"),
        Output("heads-rank", "style"), Output("heads-message", "children"),
        Output("heads-details", "children"),
        Input("heads-query", "data"),
    )
    def heatmaps(query):
        return render(state, query or {})

    @app.callback(Output("heads-first-run", "children"), Output("heads-detector", "options"),
                  Output("heads-poll", "disabled"), Output("url", "search", allow_duplicate=True),
                  Input("heads-poll", "n_intervals"), State("heads-query", "data"),
                  prevent_initial_call=True)
    def poll_first_run(_n, query):
        # While the first run's scans run: list each detector as it lands; open the first.
        query = query or {}
        model_id = query.get("model_id")
        available = data.detectors_for(state, model_id)
        options = [{"label": d, "value": d} for d in available]
        active = first_run.active_job(state, model_id) is not None
        search = no_update
        if available and not query.get("detector"):
            search = query_string(model_id=model_id, detector=available[0])
        return first_run_banner(state, model_id), options, not active, search

    @app.callback(Output("heads-meaning", "children"), Output("heads-copy-python", "content"),
                  Input("heads-query", "data"))
    def meaning_and_snippet(query):
        from interp.exports import heads_snippet

        query = query or {}
        detector = query.get("detector")
        if not detector:
            return "", ""
        found = _selected_or_none(state, query)
        run_id = found[1].id if found else None
        return meaning(detector), heads_snippet(detector, run_id, state.store.path,
                                                state.models.status()["name"])

    @app.callback(Output("heads-download", "data"),
                  Input("heads-export-csv", "n_clicks"), Input("heads-export-json", "n_clicks"),
                  State("heads-query", "data"), prevent_initial_call=True)
    def export(csv_clicks, json_clicks, query):
        import json as json_module

        from interp.exports import head_scores_csv, head_scores_json

        if not ctx.triggered or not ctx.triggered[0]["value"]:
            return no_update
        found = _selected_or_none(state, query or {})
        if found is None:
            return no_update
        scores, run = found
        stem = f"{scores.detector}-{run.id}"
        if ctx.triggered_id == "heads-export-csv":
            return {"content": head_scores_csv(scores), "filename": f"{stem}.csv"}
        return {"content": json_module.dumps(head_scores_json(scores, run), indent=1),
                "filename": f"{stem}.json"}

    @app.callback(Output("heads-message", "children", allow_duplicate=True),
                  Output("url", "search", allow_duplicate=True),
                  Input("heads-delete-confirm", "submit_n_clicks"),
                  State("heads-query", "data"), prevent_initial_call=True)
    def delete(submitted, query):
        from interp.errors import InterpError

        if not submitted:
            return no_update, no_update
        query = query or {}
        found = _selected_or_none(state, query)
        if found is None:
            return error_box("no run to delete"), no_update
        run = found[1]
        try:
            state.store.delete_run(run.id)
        except InterpError as exc:
            return error_box(str(exc)), no_update
        state.caches["scores"].clear()
        # The page re-renders from the URL: it carries the notice (deleted=RUN).
        return (no_update,
                query_string(model_id=query.get("model_id"), detector=query.get("detector")
                             if data.runs_with(state, query.get("model_id"), query.get("detector"))
                             else None, compare=query.get("compare"),
                             view=query.get("view") if query.get("compare") else None,
                             deleted=run.id))

    @app.callback(
        Output("url", "pathname", allow_duplicate=True), Output("url", "search", allow_duplicate=True),
        Input("heads-heatmap", "clickData"), Input("heads-heatmap-b", "clickData"),
        State("heads-query", "data"), prevent_initial_call=True,
    )
    def open_head(click_a, click_b, query):
        click = click_a if ctx.triggered_id == "heads-heatmap" else click_b
        if not click or not click.get("points"):
            return no_update, no_update
        point = click["points"][0]
        layer, head = point.get("customdata") or (point["y"], point["x"])
        detector = query.get("detector") if ctx.triggered_id == "heads-heatmap" else query.get("compare")
        return "/head", query_string(model_id=query.get("model_id"), layer=int(layer),
                                     head=int(head), detector=detector)
