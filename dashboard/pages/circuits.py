"""Patching & circuits: patching heatmaps (IOI) and the discovered circuit as a graph.

Reads "patch" runs (`interp.patching.PatchResult`) and "circuit" runs (`circuits.Circuit`) from
the store, as `interp patch` / `interp circuit` or a notebook saved them.
URL: /circuits?model_id=M[&patch=RUN&circuit=RUN]
"""

from __future__ import annotations

import datetime
import time

from dash import ALL, Input, Output, State, ctx, dcc, html, no_update

from interp.errors import InterpError
from interp.plots import effect_heatmap

from dashboard import data
from dashboard.layout import error_box, notice, query_string
from dashboard.pages.scans import elapsed_text

PATH = "/circuits"
TITLE = "Patching & circuits"
# The patching and circuit libraries are imported where they are used (as `interp patch` does):
# the server answers its first page without waiting for them.


def _label(run) -> str:
    when = datetime.datetime.fromtimestamp(run.finished_at or run.created_at).strftime("%m-%d %H:%M")
    keys = ("method", "component", "metric", "direction", "task")
    return " · ".join(str(run.params[k]) for k in keys if k in run.params) + f" — {when} ({run.id})"


def layout(state, query: dict) -> html.Div:
    model_id = query.get("model_id") or data.default_model_id(state)
    patches = data.complete_runs(state, model_id, kind="patch") if model_id else []
    circuits = data.complete_runs(state, model_id, kind="circuit") if model_id else []
    chosen_patch = query.get("patch") or (patches[0].id if patches else None)
    chosen_circuit = query.get("circuit") or (circuits[0].id if circuits else None)
    return html.Div([
        html.H2("Patching & circuits"),
        *([notice(f"deleted run {query['deleted']} and its files", id="circuits-deleted")]
          if query.get("deleted") else []),
        html.Div([html.Code(model_id or "no runs yet")], className="subtitle"),
        dcc.Store(id="circuits-query", data={"model_id": model_id, "patch": chosen_patch,
                                             "circuit": chosen_circuit}),
        html.H3("Patching"),
        _launch_form(),
        html.Div([
            html.Label(["patching run", dcc.Dropdown(
                id="patch-run", options=[{"label": _label(r), "value": r.id} for r in patches],
                value=chosen_patch, clearable=False,
                placeholder="no patching runs for this model")], className="control wide"),
            *_export_buttons("patch", chosen_patch),
        ], className="controls"),
        html.Div(id="patch-body"),
        html.H3("Circuit"),
        html.Div([
            html.Label(["circuit run", dcc.Dropdown(
                id="circuit-run", options=[{"label": _label(r), "value": r.id} for r in circuits],
                value=chosen_circuit, clearable=False,
                placeholder="no circuit runs for this model")], className="control wide"),
            *_export_buttons("circuit", chosen_circuit),
        ], className="controls"),
        dcc.Download(id="circuits-download"),
        html.Div(id="circuits-export-message"),
        html.Div(id="circuit-body"),
    ])


def _export_buttons(kind: str, run_id: str | None) -> list:
    """CSV (patching only) and JSON downloads and Delete for the chosen run."""
    if not run_id:
        return []
    buttons = [html.Button("JSON", id=f"{kind}-export-json", title=f"download the {kind} run as JSON")]
    if kind == "patch":
        buttons.insert(0, html.Button("CSV", id="patch-export-csv", title="one line per cell"))
    buttons.append(dcc.ConfirmDialogProvider(
        html.Button("Delete this run", className="danger"), id=f"{kind}-delete-confirm",
        message=f"Delete this {kind} run and its files from the results store?"))
    return buttons


def _launch_form() -> html.Details:
    """Run IOI patching here, as `interp patch MODEL --task ioi ...` does, as a background job."""
    def choice(id_, label, options, value):
        return html.Label([label, dcc.Dropdown(id=id_, options=options, value=value,
                                               clearable=False)], className="control")

    from interp.patching.activation import DIRECTIONS
    from interp.patching.components import COMPONENTS, describe
    from interp.patching.task_run import METHODS

    # The options are the library's tables, the choices `interp patch` offers.
    components = [{"label": describe(name), "value": name} for name in COMPONENTS]
    return html.Details([
        html.Summary("run IOI patching on the loaded model"),
        html.Div([
            choice("patch-component", "component", components, "heads"),
            choice("patch-method", "method", list(METHODS), "activation"),
            choice("patch-direction", "direction", list(DIRECTIONS), "noise"),
            html.Label(["prompts", dcc.Input(id="patch-prompts", type="number", value=8, min=1,
                                             max=256, step=1)], className="control small"),
            html.Button("Run patching", id="patch-launch", className="primary"),
        ], className="controls"),
        html.Div(id="patch-message"),
        dcc.Interval(id="patch-poll", interval=1500),
        html.Div(id="patch-jobs"),
    ], className="launch")


def patching_job(component: str, method: str, direction: str, n_prompts: int):
    """A background-job task: IOI patching into the store, as `interp patch` runs it."""
    def task(model, store):
        from interp.patching.task_run import patch_task

        patch_task(model, store, "ioi", component, method, direction, n_prompts=n_prompts)
    return task


def launch_patch(state, component, method, direction, n_prompts):
    from interp.patching.activation import DIRECTIONS
    from interp.patching.components import COMPONENTS
    from interp.patching.task_run import METHODS

    if component not in COMPONENTS or method not in METHODS or direction not in DIRECTIONS:
        return error_box("choose a component, a method and a direction", id="patch-error")
    if n_prompts is None or not 1 <= int(n_prompts) <= 256:
        return error_box("prompts must be a whole number from 1 to 256", id="patch-error")
    label = f"{method} {component} ({direction}, {int(n_prompts)} IOI prompts)"
    job = state.jobs.submit("patch", label, patching_job(component, method, direction, int(n_prompts)))
    return notice(f"queued {label} as job {job.id}", id="patch-queued")


def patch_jobs(state):
    """Queued and running patching, and the last finished one (with a link to it)."""
    rows = [html.Div([html.B(job.label), ": ",
                      error_box(job.error) if job.error else "waiting for the model"])
            for job in state.jobs.without_run("patch")]
    for run in state.store.list_runs(kind="patch", limit=5):
        label = _label(run)
        if run.status == "running":
            percent = max(0.0, min(1.0, run.progress)) * 100
            rows.append(html.Div([
                html.Span(label, className="hint"),
                html.Div([html.Div(className="progress-fill running", style={"width": f"{percent:.1f}%"}),
                          html.Span(f"{percent:.0f}% {run.message}", className="progress-text")],
                         className="progress", role="progressbar", **{"aria-valuenow": f"{percent:.0f}"}),
                html.Span(elapsed_text(run), className="hint elapsed"),
                html.Button("Cancel", id={"type": "patch-cancel", "id": run.id}),
            ], className="patch-job running"))
        elif time.time() - (run.finished_at or 0) < 600:  # finished in the last 10 minutes
            if run.status == "complete":
                rows.append(html.Div(["finished: ", dcc.Link(label, href=PATH + query_string(
                    model_id=run.model_id, patch=run.id), className="button-link")],
                    className="patch-job complete"))
            elif run.status == "failed":
                rows.append(error_box(f"{label}: {run.error}"))
    return rows or None


def patch_view(state, query: dict):
    from interp.patching.results import PatchResult

    run_id = query.get("patch")
    if not run_id:
        return notice("No patching runs for this model yet: `interp patch MODEL --task ioi "
                      "--component heads` (or `PatchResult.save(store)` in a notebook) stores one.")
    try:
        result = PatchResult.load(state.store, run_id)
    except InterpError as exc:
        return error_box(str(exc))
    model_id = query.get("model_id")
    title = (f"{result.method} patching of {result.component}\n({result.direction}, "
             f"{result.metric}; 0 = corrupted, 1 = clean)")
    values = result.values
    if values.ndim == 1:
        values, rows, cols = values[:, None], result.labels[result.axes[0]], [result.metric]
        row_title, col_title = result.axes[0], ""
    elif values.ndim == 2:
        rows, cols = result.labels[result.axes[0]], result.labels[result.axes[1]]
        row_title, col_title = result.axes
    else:  # [layer, head, position]: show the positions summed away would hide sign; pick max
        return error_box(f"a {values.ndim}-axis patching result ({', '.join(result.axes)}) is "
                         "not drawn here yet; open it in a notebook with PatchResult.load")
    # Noising and path patching leave 1 where a cell does not matter; denoising leaves 0.
    center = 1.0 if result.direction == "noise" or result.method == "path" else 0.0
    figure = effect_heatmap(values, title, row_title, col_title, rows, cols, "normalized",
                            center=center)
    clickable = tuple(result.axes) == ("layer", "head")
    top = result.top(8, by_magnitude=True)
    top_rows = []
    for cell in top:
        label = ", ".join(f"{a} {cell[a]}" for a in result.axes)
        if clickable:
            label = dcc.Link(f"L{cell['layer']}.H{cell['head']}", href="/head" + query_string(
                model_id=model_id, layer=cell["layer"], head=cell["head"]))
        top_rows.append(html.Tr([html.Td(label), html.Td(f"{cell['value']:+.3f}")]))
    facts = [("metric", result.metric), ("clean", f"{result.clean:.4g}"),
             ("corrupted", f"{result.corrupted:.4g}"), ("prompt hash", result.prompt_hash or "—"),
             ("seconds", f"{result.seconds:.1f}")]
    return html.Div([
        dcc.Store(id="patch-axes", data=list(result.axes)),
        dcc.Graph(id="patch-heatmap", figure=figure, className="heatmap",
                  config={"displaylogo": False}),
        html.Div([
            html.Div([html.H4("largest effects"), html.Table(top_rows, className="table")],
                     className="panel"),
            html.Div([html.H4("normalization"), html.Table(
                [html.Tr([html.Th(k), html.Td(v)]) for k, v in facts], className="table facts")],
                className="panel"),
        ], className="details"),
    ], className="heatmaps")


def circuit_view(state, query: dict):
    from circuits.circuit import Circuit
    from circuits.plots import circuit_graph

    run_id = query.get("circuit")
    if not run_id:
        return notice("No circuit runs for this model yet: `interp circuit MODEL --task ioi` "
                      "(or `Circuit.save(store)`) stores one.")
    try:
        circuit = Circuit.load(state.store, run_id)
    except InterpError as exc:
        return error_box(str(exc))
    model_id = query.get("model_id")
    loaded = state.models.model
    n_layers = (loaded.n_layers if loaded is not None and loaded.model_id == circuit.model_id
                else max((h.layer for h in circuit.heads), default=0) + 1)
    data_json = circuit.to_json()
    figure = circuit_graph(data_json["heads"], data_json["edges"], n_layers,
                           title=f"{circuit.task} circuit: {len(circuit)} of "
                                 f"{circuit.n_heads_total} heads")
    summary = []
    if circuit.faithfulness is not None:
        text = f"faithfulness {circuit.faithfulness:.1%}"
        baseline = circuit.random_baseline or {}
        if "mean" in baseline:
            text += (f" — random circuits of the same size: {baseline['mean']:.1%} ± "
                     f"{baseline.get('std', 0):.1%} (n = {baseline.get('n', '?')})")
        summary.append(html.P(html.B(text), id="circuit-faithfulness"))
    else:
        summary.append(html.P("faithfulness not evaluated", className="hint"))
    roles = []
    for role, heads in circuit.by_role().items():
        links = [dcc.Link(f"{layer}.{head}", href="/head" + query_string(
            model_id=model_id, layer=layer, head=head), className="button-link")
            for layer, head in heads]
        roles.append(html.Tr([html.Th(role), html.Td(links)]))
    evaluation = {k: v for k, v in circuit.evaluation.items() if isinstance(v, (int, float, str))}
    for name in ("completeness", "minimality"):
        value = circuit.evaluation.get(name)
        if isinstance(value, dict):
            evaluation.update({f"{name} {k}": v for k, v in value.items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return html.Div([
        dcc.Graph(id="circuit-graph", figure=figure, config={"displaylogo": False},
                  style={"flex": "2", "minWidth": "520px"}),
        html.Div([
            html.Div(summary + [html.H4("heads by role"),
                                html.Table(roles, className="table", id="circuit-roles")],
                     className="panel"),
            html.Div([html.H4("evaluation"), html.Table(
                [html.Tr([html.Th(k), html.Td(f"{v:.4g}" if isinstance(v, float) else str(v))])
                 for k, v in evaluation.items()], className="table facts")], className="panel")
            if evaluation else None,
        ], className="details"),
    ], className="heatmaps")


def register(app, state) -> None:
    _register_exports(app, state)
    _register_pages(app, state)


def _register_exports(app, state) -> None:
    """Downloads of the chosen runs (library exports) and their deletion."""
    import json as json_module

    from dash import ctx

    @app.callback(Output("circuits-download", "data"),
                  Input("patch-export-csv", "n_clicks"), Input("patch-export-json", "n_clicks"),
                  State("circuits-query", "data"), prevent_initial_call=True)
    def export_patch(_csv, _json, query):
        from interp.exports import patch_result_csv
        from interp.patching.results import PatchResult

        run_id = (query or {}).get("patch")
        if not run_id or not ctx.triggered or not ctx.triggered[0]["value"]:
            return no_update
        result = PatchResult.load(state.store, run_id)
        if ctx.triggered_id == "patch-export-csv":
            return {"content": patch_result_csv(result), "filename": f"patch-{run_id}.csv"}
        return {"content": json_module.dumps(result.to_json(), indent=1),
                "filename": f"patch-{run_id}.json"}

    @app.callback(Output("circuits-download", "data", allow_duplicate=True),
                  Input("circuit-export-json", "n_clicks"), State("circuits-query", "data"),
                  prevent_initial_call=True)
    def export_circuit(clicks, query):
        from circuits.circuit import Circuit

        run_id = (query or {}).get("circuit")
        if not clicks or not run_id:
            return no_update
        return {"content": json_module.dumps(Circuit.load(state.store, run_id).to_json(), indent=1),
                "filename": f"circuit-{run_id}.json"}

    for kind in ("patch", "circuit"):
        @app.callback(Output("circuits-export-message", "children", allow_duplicate=True),
                      Output("url", "search", allow_duplicate=True),
                      Input(f"{kind}-delete-confirm", "submit_n_clicks"),
                      State("circuits-query", "data"), prevent_initial_call=True)
        def delete(submitted, query, kind=kind):
            run_id = (query or {}).get(kind)
            if not submitted or not run_id:
                return no_update, no_update
            try:
                state.store.delete_run(run_id)
            except InterpError as exc:
                return error_box(str(exc)), no_update
            others = {k: v for k, v in (query or {}).items() if k in ("model_id", "patch", "circuit")
                      and k != kind}
            return no_update, query_string(**others, deleted=run_id)


def _register_pages(app, state) -> None:
    @app.callback(Output("patch-message", "children"), Input("patch-launch", "n_clicks"),
                  State("patch-component", "value"), State("patch-method", "value"),
                  State("patch-direction", "value"), State("patch-prompts", "value"),
                  prevent_initial_call=True)
    def on_launch(clicks, component, method, direction, n_prompts):
        if not clicks:
            return no_update
        return launch_patch(state, component, method, direction, n_prompts)

    @app.callback(Output("patch-jobs", "children"), Input("patch-poll", "n_intervals"),
                  Input("patch-message", "children"))
    def poll(_n, _message):
        return patch_jobs(state)

    @app.callback(Output("patch-message", "children", allow_duplicate=True),
                  Input({"type": "patch-cancel", "id": ALL}, "n_clicks"), prevent_initial_call=True)
    def on_cancel(clicks):
        trigger = ctx.triggered_id
        if not trigger or not ctx.triggered[0]["value"]:  # buttons re-created by the poll
            return no_update
        state.jobs.cancel(trigger["id"])
        return notice(f"cancel requested for {trigger['id']}")

    @app.callback(Output("patch-body", "children"), Input("circuits-query", "data"))
    def patch(query):
        return patch_view(state, query or {})

    @app.callback(Output("circuit-body", "children"), Input("circuits-query", "data"))
    def circuit(query):
        return circuit_view(state, query or {})

    @app.callback(
        Output("url", "search", allow_duplicate=True),
        Input("patch-run", "value"), Input("circuit-run", "value"),
        State("circuits-query", "data"), prevent_initial_call=True,
    )
    def runs_to_url(patch_run, circuit_run, shown):
        shown = shown or {}
        if (patch_run, circuit_run) == (shown.get("patch"), shown.get("circuit")):
            return no_update  # the router inserted the dropdowns; nothing was chosen
        return query_string(model_id=shown.get("model_id"), patch=patch_run, circuit=circuit_run)

    @app.callback(
        Output("url", "pathname", allow_duplicate=True), Output("url", "search", allow_duplicate=True),
        Input("patch-heatmap", "clickData"), State("patch-axes", "data"),
        State("circuits-query", "data"), prevent_initial_call=True,
    )
    def open_head(click, axes, query):
        point = (click or {}).get("points", [{}])[0]
        if axes != ["layer", "head"]:  # only a head sweep's cells are heads
            return no_update, no_update
        try:
            layer, head = int(point["y"]), int(point["x"])
        except (KeyError, TypeError, ValueError):
            return no_update, no_update
        return "/head", query_string(model_id=(query or {}).get("model_id"), layer=layer, head=head)
