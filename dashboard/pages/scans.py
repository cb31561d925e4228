"""Scans: launch any registered detector with its parameters as a background job; watch its
progress, cancel it, see its error if it fails, open its heatmap when it completes.

URL: /scans[?detector=D]. The run list is read from the store every second, so scans started
from the CLI on the same store show up here too.
"""

from __future__ import annotations

import datetime
import time

from dash import ALL, Input, Output, State, ctx, dcc, html, no_update

from interp.errors import InterpError

from dashboard import detectors
from dashboard.layout import error_box, notice, query_string, register_cancel_buttons

PATH = "/scans"
TITLE = "Scans"
SHOWN_RUNS = 25


def chosen_detectors(query: dict, names: list[str]) -> list[str]:
    """?detector=a,b -> the known names among them, in order (default: the first detector)."""
    asked = [n for n in (query.get("detector") or "").split(",") if n in names]
    return list(dict.fromkeys(asked)) or names[:1]


def layout(state, query: dict) -> html.Div:
    names = detectors.names()
    chosen = chosen_detectors(query, names)
    return html.Div([
        html.H2("Scans"),
        html.Div([
            html.Label(["detectors (one job runs them in turn; each is stored as it finishes)",
                        dcc.Dropdown(id="scan-detector", options=names, value=chosen, multi=True,
                                     clearable=False)],
                       className="control wide"),
            html.Button("Launch scan", id="scan-launch", className="primary"),
        ], className="controls"),
        html.Details([
            html.Summary("causal check: ablate the top-k heads vs random k-head sets"),
            html.Div([
                _small_input("scan-verify", "k (0 = none)", "0"),
                _small_input("scan-verify-prompts", "prompts", "default"),
                _small_input("scan-verify-tokens", "tokens / prompt", "default"),
                _small_input("scan-verify-draws", "random draws", "5"),
                html.Label(["ablation", dcc.Dropdown(id="scan-verify-ablation",
                                                     options=["mean", "zero"], value="mean",
                                                     clearable=False)], className="control small"),
            ], className="controls"),
        ], id="scan-verify-box", open=False),
        html.Div(id="scan-params"),
        dcc.Store(id="scans-query", data={"detector": ",".join(chosen)}),
        html.Div(id="scan-message"),
        html.H3("Runs"),
        dcc.Interval(id="scan-poll", interval=1000),
        html.Div(id="scan-runs"),
    ])


def _small_input(id: str, label: str, placeholder: str) -> html.Label:
    return html.Label([label, dcc.Input(id=id, type="text", value="", placeholder=placeholder)],
                      className="control small")


def param_form(names):
    """One field per parameter of each chosen detector: empty = the default shown in grey; the
    library's bounds shown beside it."""
    if isinstance(names, str):
        names = [names]
    if not names:
        return None
    sections = []
    for name in names:
        try:
            described = detectors.describe(name)
        except InterpError as exc:
            sections.append(error_box(str(exc)))
            continue
        fields = []
        for p in described["params"]:
            field_id = {"type": "scan-param", "detector": name, "name": p["name"]}
            default = p["default"]
            shown = ", ".join(map(str, default)) if isinstance(default, list) else str(default)
            if p["choices"] or p["type"] == "bool":
                choices = p["choices"] or [True, False]
                field = dcc.Dropdown(id=field_id, options=[{"label": str(c), "value": str(c)} for c in choices],
                                     value=None, placeholder=shown, clearable=True)
            else:
                field = dcc.Input(id=field_id, type="text", value="", placeholder=shown)
            bounds = p.get("bounds")
            range_text = f"  {p['type']}" + (f" in [{bounds[0]}, {bounds[1]}]" if bounds else "")
            fields.append(html.Label([
                html.Span([p["name"], html.Span(range_text, className="hint")], className="param-name"),
                field, html.Span(p["help"], className="hint"),
            ], className="param"))
        sections.append(html.Div([
            html.P([html.B(described["name"]), ": ", described["description"]]),
            html.Div(fields, className="param-form"),
        ], className="param-section", id=f"scan-params-{name}"))
    return html.Div([html.P("Empty fields keep the default shown in grey.", className="hint"),
                     *sections])


def launch(state, names, ids: list[dict], values: list, verify: str | None,
           verify_prompts=None, verify_tokens=None, verify_draws=None, verify_ablation=None):
    names = [names] if isinstance(names, str) else list(names or [])
    if not names:
        return error_box("choose at least one detector", id="scan-error")
    try:
        raw: dict[str, dict] = {name: {} for name in names}
        for i, v in zip(ids, values):
            if i.get("detector", names[0]) in raw:
                raw[i.get("detector", names[0])][i["name"]] = v
        params = {name: detectors.parse_params(name, raw[name]) for name in names}
        options = detectors.parse_verify_options(verify, verify_prompts, verify_tokens,
                                                 verify_draws, verify_ablation)
    except InterpError as exc:
        return error_box(str(exc), id="scan-error")
    verify_k = options["verify_k"]
    check = f", then the top-{verify_k} causal check" if verify_k else ""
    label = ", ".join(names) + check
    job = state.jobs.submit("scan", label, detectors.scan_task(names, params, **options),
                            parts=names)
    return notice(f"queued scan {label} as job {job.id}", id="scan-queued")


def elapsed_text(run, now: float | None = None) -> str:
    """"12 s elapsed, about 30 s left" for a running run (the estimate: elapsed time scaled by
    the progress still to go; none until there is some progress)."""
    now = time.time() if now is None else now
    elapsed = max(0.0, now - run.created_at)
    text = f"{_duration(elapsed)} elapsed"
    if run.progress and 0.0 < run.progress < 1.0:
        text += f", about {_duration(elapsed * (1 - run.progress) / run.progress)} left"
    return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _progress_bar(fraction: float, message: str, status: str) -> html.Div:
    percent = max(0.0, min(1.0, fraction or 0.0)) * 100
    return html.Div([
        html.Div(className=f"progress-fill {status}", style={"width": f"{percent:.1f}%"}),
        html.Span(f"{percent:.0f}% {message}", className="progress-text"),
    ], className="progress", role="progressbar", **{"aria-valuenow": f"{percent:.0f}"})


def runs_table(state):
    """The scans: queued, running and complete ones in one table; failed, cancelled and
    incomplete ones apart below it (with Delete), so errors never hide among results."""
    rows, failed = [], []
    for job in state.jobs.without_run("scan"):
        row = html.Tr([
            html.Td(html.B(job.label)), html.Td("—"),
            html.Td(job.state, className=f"status {job.state}"),
            html.Td(error_box(job.error) if job.error else _progress_bar(0, "waiting for the model", "queued")),
            html.Td(html.Button("Cancel", id={"type": "scan-cancel", "id": job.id})
                    if job.state == "queued" else None),
        ], className=f"run {job.state}")
        (failed if job.state == "failed" else rows).append(row)
    for run in state.store.list_runs(kind="scan", limit=SHOWN_RUNS):
        if run.status == "running":
            cell = html.Div([_progress_bar(run.progress, run.message, "running"),
                             html.Div(elapsed_text(run), className="hint elapsed")])
            action = html.Button("Cancel", id={"type": "scan-cancel", "id": run.id})
        elif run.status == "complete":
            cell = html.Span([dcc.Link(f"open {d} in Heads", href="/heads" + query_string(
                model_id=run.model_id, detector=d, run=run.id), className="button-link")
                for d in run.detectors])
            action = None
        elif run.status == "failed":
            cell = error_box(run.error or "failed")
            action = html.Button("Delete", id={"type": "scan-delete", "id": run.id})
        else:  # cancelled | incomplete
            cell = html.Span(run.error or ("the process that ran it is gone"
                                           if run.status == "incomplete" else run.status))
            action = html.Button("Delete", id={"type": "scan-delete", "id": run.id})
        row = html.Tr([
            html.Td([html.B(", ".join(_detectors_of(run))), html.Div(_params_text(run), className="hint")]),
            html.Td([html.Div(run.model_id, className="mono"),
                     html.Div(_time(run.created_at), className="hint")]),
            html.Td(run.status, className=f"status {run.status}"),
            html.Td(cell), html.Td(action),
        ], className=f"run {run.status}", id=f"run-{run.id}")
        (rows if run.status in ("running", "complete") else failed).append(row)
    head = html.Thead(html.Tr([html.Th(h) for h in
                               ("detector", "model", "status", "progress / result", "")]))
    parts = [_active_jobs(state)]
    parts.append(html.Table([head, html.Tbody(rows)], className="table runs", id="scan-runs-table")
                 if rows else notice("No scans yet."))
    if failed:
        parts += [html.H4("Failed and cancelled", className="failed-title"),
                  html.Table([head, html.Tbody(failed)], className="table runs failed",
                             id="scan-failed-table")]
    return html.Div(parts)


def _active_jobs(state):
    """One line per running job that scans several detectors: which one it is on."""
    lines = []
    for job in state.jobs.active():
        names = job.parts
        if job.state == "running" and len(names) > 1:
            lines.append(html.Div(f"job {job.id}: detector {len(job.run_ids)} of {len(names)} "
                                  f"({', '.join(names)}); each is stored as it finishes",
                                  className="hint job-line"))
    return html.Div(lines, id="scan-jobs")


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
    def detector_to_url(names, shown):
        joined = ",".join(names) if isinstance(names, list) else names
        if not joined or joined == (shown or {}).get("detector"):
            return no_update  # inserted by the router: the page already shows it
        return query_string(detector=joined)

    @app.callback(Output("scan-params", "children"), Input("scan-detector", "value"))
    def form(name):
        return param_form(name)

    @app.callback(
        Output("scan-message", "children"),
        Input("scan-launch", "n_clicks"),
        State("scan-detector", "value"),
        State({"type": "scan-param", "detector": ALL, "name": ALL}, "id"),
        State({"type": "scan-param", "detector": ALL, "name": ALL}, "value"),
        State("scan-verify", "value"), State("scan-verify-prompts", "value"),
        State("scan-verify-tokens", "value"), State("scan-verify-draws", "value"),
        State("scan-verify-ablation", "value"),
        prevent_initial_call=True,
    )
    def on_launch(clicks, names, ids, values, verify, prompts, tokens, draws, ablation):
        if not clicks:
            return no_update
        return launch(state, names, ids, values, verify, prompts, tokens, draws, ablation)

    @app.callback(Output("scan-runs", "children"),
                  Input("scan-poll", "n_intervals"), Input("scan-message", "children"))
    def poll(_n, _message):
        return runs_table(state)

    @app.callback(
        Output("scan-message", "children", allow_duplicate=True),
        Input({"type": "scan-delete", "id": ALL}, "n_clicks"),
        prevent_initial_call=True,
    )
    def on_delete(clicks):
        trigger = ctx.triggered_id
        if not trigger or not any(c for c in clicks or []) or not ctx.triggered[0]["value"]:
            return no_update
        try:
            state.store.delete_run(trigger["id"])
        except InterpError as exc:
            return error_box(str(exc), id="scan-error")
        return notice(f"deleted run {trigger['id']}", id="scan-deleted")

    register_cancel_buttons(app, state, "scan-cancel", "scan-message",
                            "the job stops within a second or two (its forward checks before "
                            "every layer)", notice_id="scan-cancelled")
