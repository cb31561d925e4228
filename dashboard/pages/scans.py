"""Scans: launch any registered detector with its parameters as a background job; watch its
progress, cancel it, see its error if it fails, open its heatmap when it completes.

URL: /scans[?detector=D]. The run list is read from the store every second, so scans started
from the CLI on the same store show up here too.
"""

from __future__ import annotations

import datetime

from dash import ALL, Input, Output, State, ctx, dcc, html, no_update

from interp.errors import InterpError

from dashboard import detectors
from dashboard.layout import error_box, notice, query_string

PATH = "/scans"
TITLE = "Scans"
SHOWN_RUNS = 25


def layout(state, query: dict) -> html.Div:
    names = detectors.names()
    chosen = query.get("detector") if query.get("detector") in names else names[0]
    return html.Div([
        html.H2("Scans"),
        html.Div([
            html.Label(["detector", dcc.Dropdown(id="scan-detector", options=names,
                                                 value=chosen, clearable=False)],
                       className="control"),
            html.Label(["causal check: ablate top-k vs random-k (0 = none)",
                        dcc.Input(id="scan-verify", type="text", value="", placeholder="0")],
                       className="control"),
            html.Button("Launch scan", id="scan-launch", className="primary"),
        ], className="controls"),
        html.Div(id="scan-params"),
        dcc.Store(id="scans-query", data={"detector": chosen}),
        html.Div(id="scan-message"),
        html.H3("Runs"),
        dcc.Interval(id="scan-poll", interval=1000),
        html.Div(id="scan-runs"),
    ])


def param_form(name: str | None):
    """One field per detector parameter: empty = the default shown in grey."""
    if not name:
        return None
    try:
        described = detectors.describe(name)
    except InterpError as exc:
        return error_box(str(exc))
    fields = []
    for p in described["params"]:
        field_id = {"type": "scan-param", "name": p["name"]}
        default = p["default"]
        shown = ", ".join(map(str, default)) if isinstance(default, list) else str(default)
        if p["choices"] or p["type"] == "bool":
            choices = p["choices"] or [True, False]
            field = dcc.Dropdown(id=field_id, options=[{"label": str(c), "value": str(c)} for c in choices],
                                 value=None, placeholder=shown, clearable=True)
        else:
            field = dcc.Input(id=field_id, type="text", value="", placeholder=shown)
        fields.append(html.Label([
            html.Span([p["name"], html.Span(f"  {p['type']}", className="hint")], className="param-name"),
            field, html.Span(p["help"], className="hint"),
        ], className="param"))
    return html.Div([
        html.P([html.B(described["name"]), ": ", described["description"]]),
        html.P("Empty fields keep the default shown in grey.", className="hint"),
        html.Div(fields, className="param-form"),
    ])


def launch(state, name: str | None, ids: list[dict], values: list, verify: str | None):
    if not name:
        return error_box("choose a detector first", id="scan-error")
    try:
        params = detectors.parse_params(name, {i["name"]: v for i, v in zip(ids, values)})
        verify_k = detectors.parse_verify_k(verify)
    except InterpError as exc:
        return error_box(str(exc), id="scan-error")
    check = f", then the top-{verify_k} causal check" if verify_k else ""
    job = state.jobs.submit("scan", name + check, detectors.scan_task(name, params, verify_k))
    return notice(f"queued scan {name}{check} as job {job.id}", id="scan-queued")


def _progress_bar(fraction: float, message: str, status: str) -> html.Div:
    percent = max(0.0, min(1.0, fraction or 0.0)) * 100
    return html.Div([
        html.Div(className=f"progress-fill {status}", style={"width": f"{percent:.1f}%"}),
        html.Span(f"{percent:.0f}% {message}", className="progress-text"),
    ], className="progress", role="progressbar", **{"aria-valuenow": f"{percent:.0f}"})


def runs_table(state):
    rows = []
    for job in state.jobs.without_run("scan"):
        rows.append(html.Tr([
            html.Td(html.B(job.label)), html.Td("—"),
            html.Td(job.state, className=f"status {job.state}"),
            html.Td(error_box(job.error) if job.error else _progress_bar(0, "waiting for the model", "queued")),
            html.Td(html.Button("Cancel", id={"type": "scan-cancel", "id": job.id})
                    if job.state == "queued" else None),
        ], className=f"run {job.state}"))
    for run in state.store.list_runs(kind="scan", limit=SHOWN_RUNS):
        if run.status == "running":
            cell = _progress_bar(run.progress, run.message, "running")
            action = html.Button("Cancel", id={"type": "scan-cancel", "id": run.id})
        elif run.status == "complete":
            cell = html.Span([dcc.Link(f"open {d} in Heads", href="/heads" + query_string(
                model_id=run.model_id, detector=d), className="button-link") for d in run.detectors])
            action = None
        elif run.status == "failed":
            cell, action = error_box(run.error or "failed"), None
        else:  # cancelled | incomplete
            cell = html.Span(run.error or ("the process that ran it is gone"
                                           if run.status == "incomplete" else run.status))
            action = None
        rows.append(html.Tr([
            html.Td([html.B(", ".join(_detectors_of(run))), html.Div(_params_text(run), className="hint")]),
            html.Td([html.Div(run.model_id, className="mono"),
                     html.Div(_time(run.created_at), className="hint")]),
            html.Td(run.status, className=f"status {run.status}"),
            html.Td(cell), html.Td(action),
        ], className=f"run {run.status}", id=f"run-{run.id}"))
    if not rows:
        return notice("No scans yet.")
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in
                                           ("detector", "model", "status", "progress / result", "")])),
                       html.Tbody(rows)], className="table runs", id="scan-runs-table")


def _detectors_of(run) -> list[str]:
    """A scan run's detectors: stored scores once complete, else what its parameters name
    (`run_scan` records {"detectors": {name: params}}; older runs {"detector": name})."""
    if run.detectors:
        return list(run.detectors)
    named = run.params.get("detectors")
    if isinstance(named, dict):
        return list(named)
    return [str(run.params.get("detector", "?"))]


def _params_text(run) -> str:
    named = run.params.get("detectors")
    parts = []
    if isinstance(named, dict):
        for values in named.values():
            parts.append(", ".join(f"{k}={v}" for k, v in sorted(values.items())))
    else:
        parts.append(", ".join(f"{k}={v}" for k, v in sorted(run.params.items()) if k != "detector"))
    if run.params.get("verify_k"):
        parts.append(f"causal check k={run.params['verify_k']}")
    return "; ".join(p for p in parts if p)


def _time(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%H:%M:%S")


def register(app, state) -> None:
    @app.callback(Output("url", "search", allow_duplicate=True), Input("scan-detector", "value"),
                  State("scans-query", "data"), prevent_initial_call=True)
    def detector_to_url(name, shown):
        if not name or name == (shown or {}).get("detector"):
            return no_update  # inserted by the router: the page already shows it
        return query_string(detector=name)

    @app.callback(Output("scan-params", "children"), Input("scan-detector", "value"))
    def form(name):
        return param_form(name)

    @app.callback(
        Output("scan-message", "children"),
        Input("scan-launch", "n_clicks"),
        State("scan-detector", "value"),
        State({"type": "scan-param", "name": ALL}, "id"),
        State({"type": "scan-param", "name": ALL}, "value"),
        State("scan-verify", "value"),
        prevent_initial_call=True,
    )
    def on_launch(clicks, name, ids, values, verify):
        if not clicks:
            return no_update
        return launch(state, name, ids, values, verify)

    @app.callback(Output("scan-runs", "children"),
                  Input("scan-poll", "n_intervals"), Input("scan-message", "children"))
    def poll(_n, _message):
        return runs_table(state)

    @app.callback(
        Output("scan-message", "children", allow_duplicate=True),
        Input({"type": "scan-cancel", "id": ALL}, "n_clicks"),
        prevent_initial_call=True,
    )
    def on_cancel(clicks):
        trigger = ctx.triggered_id
        # The buttons are re-created every poll; only a real click carries n_clicks.
        if not trigger or not any(c for c in clicks or []) or not ctx.triggered[0]["value"]:
            return no_update
        state.jobs.cancel(trigger["id"])
        return notice(f"cancel requested for {trigger['id']}; the scan stops at its next "
                      "progress step", id="scan-cancelled")
