"""Patching & circuits: patching heatmaps (IOI); circuits discovered here or by `interp circuit`.

Reads "patch" runs (`interp.patching.PatchResult`) and "circuit" runs (`circuits.Circuit`) from
the store, as `interp patch` / `interp circuit` or a notebook saved them. A circuit is drawn as
its edge graph (`circuits.plots.circuit_edge_graph`: nodes by layer, a threshold slider by top-k
edges or by |score|; a feature circuit's nodes show their top-activating contexts on click) and
its faithfulness curve with the random baseline (`circuits.plots.circuit_faithfulness_figure`).
Discovery runs here as a background job (`circuits.discover.discover_to_store`, the call
`interp circuit` makes) on IOI, greater-than or an uploaded JSONL task file.
URL: /circuits?model_id=M[&patch=RUN&circuit=RUN]
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
import time
from pathlib import Path

from dash import ALL, Input, Output, State, ctx, dcc, html, no_update

from interp.errors import InterpError
from interp.plots import effect_heatmap

from dashboard import data
from dashboard.layout import error_box, notice, query_string, register_cancel_buttons
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
        _discover_form(),
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
    return job_rows(state, "patch")


def job_rows(state, kind: str):
    """Queued and running jobs of `kind` ("patch" or "circuit") with progress and Cancel, and
    the ones finished in the last 10 minutes (a link to the result, or the error)."""
    rows = [html.Div([html.B(job.label), ": ",
                      error_box(job.error) if job.error else "waiting for the model"],
                     className=f"patch-job {job.state}")
            for job in state.jobs.without_run(kind)]
    for run in state.store.list_runs(kind=kind, limit=5):
        label = _label(run)
        if run.status == "running":
            percent = max(0.0, min(1.0, run.progress)) * 100
            rows.append(html.Div([
                html.Span(label, className="hint"),
                html.Div([html.Div(className="progress-fill running", style={"width": f"{percent:.1f}%"}),
                          html.Span(f"{percent:.0f}% {run.message}", className="progress-text")],
                         className="progress", role="progressbar", **{"aria-valuenow": f"{percent:.0f}"}),
                html.Span(elapsed_text(run), className="hint elapsed"),
                html.Button("Cancel", id={"type": f"{kind}-cancel", "id": run.id}),
            ], className="patch-job running"))
        elif time.time() - (run.finished_at or 0) < 600:  # finished in the last 10 minutes
            if run.status == "complete":
                rows.append(html.Div(["finished: ", dcc.Link(label, href=PATH + query_string(
                    model_id=run.model_id, **{kind: run.id}), className="button-link")],
                    className="patch-job complete"))
            elif run.status == "failed":
                rows.append(error_box(f"{label}: {run.error}"))
            elif run.status == "cancelled":
                rows.append(html.Div(f"cancelled: {label}", className="patch-job cancelled hint"))
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


# ---- circuits: discovery from the page ---------------------------------------------------------

TASK_FILE = "file"  # the task dropdown's value for the uploaded JSONL file
SHOWN_HEADS = 16  # heads listed per role (a 1% EAP circuit sends along edges of ~70 heads)
_CIRCUITS: dict[str, object] = {}  # run id -> Circuit (complete runs never change); a few kept


def _discover_form() -> html.Details:
    """Discover a circuit here, as `interp circuit MODEL --task T --method M` does, as a job."""
    from circuits.discover import LIMITS, METHODS

    def number(id_, label, value, key, step=1):
        low, high = LIMITS[key]
        return html.Label([label, dcc.Input(id=id_, type="number", value=value, min=low, max=high,
                                            step=step)], className="control small")

    return html.Details([
        html.Summary("discover a circuit on the loaded model"),
        html.Div([
            html.Label(["task", dcc.Dropdown(id="circuit-task", clearable=False, value="ioi", options=[
                {"label": "IOI", "value": "ioi"}, {"label": "greater-than", "value": "greater-than"},
                {"label": "uploaded JSONL file", "value": TASK_FILE}])], className="control"),
            html.Label(["method", dcc.Dropdown(
                id="circuit-method", clearable=False, value="eap-ig",
                options=[{"label": f"{m.name}: {m.help}", "value": m.name} for m in METHODS.values()])],
                className="control wide"),
            number("circuit-n-discover", "discovery prompts", 16, "n_discover"),
            number("circuit-n-eval", "evaluation prompts", 16, "n_eval"),
            number("circuit-steps", "EAP-IG steps", 5, "steps"),
            number("circuit-percent", "edges kept (%)", 1, "circuit_percent", step=0.1),
            html.Button("Discover", id="circuit-launch", className="primary"),
        ], className="controls"),
        dcc.Upload(id="circuit-upload", multiple=False, className="upload", style={
            "border": "1px dashed #9ca3af", "borderRadius": "6px", "padding": "8px 12px",
            "margin": "6px 0", "cursor": "pointer"}, children=html.Div([
            "task file: drop or ", html.A("choose"), " a .jsonl file, one ",
            html.Code('{"clean", "corrupted", "answer", "wrong"}'), " per line"])),
        dcc.Store(id="circuit-upload-path"),
        html.Div(id="circuit-upload-message"),
        html.P("Faithfulness is measured on the evaluation prompts, disjoint from the discovery "
               "prompts (a task file: its first half discovers, the rest evaluates).", className="hint"),
        html.Div(id="circuit-message"),
        dcc.Interval(id="circuit-poll", interval=1500),
        html.Div(id="circuit-jobs"),
    ], className="launch", id="circuit-launch-box")


def _upload_dir(state) -> Path:
    return Path(state.store.path).parent / "uploads"


def receive_task_file(state, contents: str | None, filename: str | None) -> tuple[str, str]:
    """Save an uploaded task file next to the store and check it with the library's loader
    (`circuits.tasks.check_task`: every line's shape; with a loaded model also the token
    lengths and single-token answers). Returns (its path, a summary); InvalidInput otherwise."""
    from circuits.tasks import check_task
    from interp.errors import InvalidInput

    if not contents or not filename:
        raise InvalidInput("no file received; choose a .jsonl task file")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename).name)
    if not name.endswith(".jsonl"):
        raise InvalidInput(f"{filename!r} is not a .jsonl file; give one JSON object per line "
                           'with "clean", "corrupted", "answer", "wrong"')
    try:
        raw = base64.b64decode(contents.split(",", 1)[1])
    except (IndexError, ValueError):
        raise InvalidInput(f"could not read {filename!r} as an uploaded file; choose it again") from None
    folder = _upload_dir(state) / hashlib.sha256(raw).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(raw)
    spec = check_task(str(path))  # the lines' shape, each error naming its line
    summary = f"{name}: {len(spec.pairs)} prompt pairs, every line well formed"
    model = state.models.model
    if model is not None:  # the tokenizer's checks (no forward pass)
        from interp.tasks.pairs import pairs_prompts

        pairs_prompts(model, spec.pairs, name=spec.name)
        summary += f"; same token lengths and single-token answers for {model.name}"
    return str(path), summary


def launch_discovery(state, task: str, upload_path: str | None, method: str, n_discover,
                     n_eval, steps, circuit_percent=None):
    """Check everything the library can check without the model, then queue the job.
    circuit_percent (edge methods): the share of edges stored as the circuit; the page's
    threshold slider then explores within them."""
    from circuits.discover import check_method, check_options

    try:
        if task == TASK_FILE:
            if not upload_path:
                return error_box("upload a .jsonl task file first (or choose IOI or greater-than)",
                                 id="circuit-error")
            task = upload_path
        spec = check_method(method, task)
        options = check_options(n_discover=n_discover, n_eval=n_eval,
                                steps=steps if method == "eap-ig" else None,
                                circuit_percent=circuit_percent if method in ("eap", "eap-ig") else None)
    except InterpError as exc:
        return error_box(str(exc), id="circuit-error")
    sizes = f"{options.get('n_discover', 'default')} + {options.get('n_eval', 'default')} prompts"
    label = f"{method} circuit of {spec.name} ({sizes})"

    def job(model, store):
        from circuits.discover import discover_to_store

        discover_to_store(model, store, spec, method, **options)

    loaded = state.models.model
    submitted = state.jobs.submit("circuit", label, job,
                                  model_id=loaded.model_id if loaded is not None else None)
    return notice(f"queued {label} as job {submitted.id}", id="circuit-queued")


# ---- circuits: the view ------------------------------------------------------------------------

def _circuit(state, run_id: str):
    from circuits.circuit import Circuit

    if run_id not in _CIRCUITS:
        if len(_CIRCUITS) >= 8:
            _CIRCUITS.pop(next(iter(_CIRCUITS)))
        _CIRCUITS[run_id] = Circuit.load(state.store, run_id)
    return _CIRCUITS[run_id]


def _model_shape(state, circuit) -> tuple[int | None, int | None]:
    """(n_layers, n_heads) of the loaded model when it is the circuit's; else (None, None):
    the graph takes them from the circuit's nodes."""
    loaded = state.models.model
    if loaded is not None and loaded.model_id == circuit.model_id:
        return loaded.n_layers, loaded.n_heads
    return None, None


def circuit_figure(state, run_id: str, mode: str, position):
    """The edge graph of a stored circuit at a threshold slider position."""
    from circuits.plots import circuit_edge_graph, threshold_value

    circuit = _circuit(state, run_id)
    edges = [e.to_json() for e in circuit.all_edges()]
    n_layers, n_heads = _model_shape(state, circuit)
    return circuit_edge_graph(circuit, mode, threshold_value(edges, mode, position), n_layers, n_heads)


def _summary(circuit) -> html.P:
    ev = circuit.evaluation or {}
    parts = [f"{circuit.method} on {circuit.task}", f"{len(circuit.all_edges()):,} edges stored"]
    if circuit.heads:
        parts.append(f"{len(circuit)} of {circuit.n_heads_total} heads")
    if isinstance(ev.get("cmd"), (int, float)):
        parts.append(f"CPR {ev['cpr']:.3f}, CMD {ev['cmd']:.3f}"
                     + (f" (random circuits: CMD {ev['random_cmd']:.3f})"
                        if isinstance(ev.get("random_cmd"), (int, float)) else ""))
    if "n_discover" in ev:
        parts.append(f"{ev['n_discover']} discovery / {ev.get('n_eval', '?')} evaluation prompts")
    if isinstance(ev.get("seconds"), (int, float)):
        parts.append(f"{ev['seconds']:.0f} s")
    return html.P(" · ".join(parts), id="circuit-summary")


def circuit_view(state, query: dict):
    from circuits.plots import circuit_faithfulness_figure, threshold_slider

    run_id = query.get("circuit")
    if not run_id:
        return notice("No circuit runs for this model yet: discover one above, or run `interp "
                      "circuit MODEL --task ioi --method eap-ig` (or `Circuit.save(store)`).")
    try:
        _CIRCUITS.pop(run_id, None)  # the view reads the store afresh
        circuit = _circuit(state, run_id)
    except InterpError as exc:
        return error_box(str(exc))
    model_id = query.get("model_id")
    edges = [e.to_json() for e in circuit.all_edges()]
    slider = threshold_slider(edges, "top")
    figure = circuit_figure(state, run_id, "top", slider["value"])
    summary = [_summary(circuit)]
    if circuit.faithfulness is not None:
        text = f"faithfulness {circuit.faithfulness:.1%}"
        baseline = circuit.random_baseline or {}
        if "mean" in baseline:
            text += (f" — random circuits of the same size: {baseline['mean']:.1%} ± "
                     f"{baseline.get('std', 0):.1%} (n = {baseline.get('n', '?')})")
        summary.append(html.P(html.B(text), id="circuit-faithfulness"))
    roles = []
    for role, heads in circuit.by_role().items():
        if role is None:  # a method that names no roles: the strongest heads, a few
            heads = [(h.layer, h.head) for h in sorted(
                (h for h in circuit.heads if h.role is None), key=lambda h: -abs(h.score or 0.0))]
        links = [dcc.Link(f"{layer}.{head}", href="/head" + query_string(
            model_id=model_id, layer=layer, head=head), className="button-link")
            for layer, head in heads[:SHOWN_HEADS]]
        if len(heads) > SHOWN_HEADS:
            links.append(html.Span(f" and {len(heads) - SHOWN_HEADS} more", className="hint"))
        roles.append(html.Tr([html.Th(role or f"{len(heads)} heads, strongest first"),
                              html.Td(links)]))
    evaluation = {k: v for k, v in circuit.evaluation.items()
                  if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    for name in ("completeness", "minimality"):
        value = circuit.evaluation.get(name)
        if isinstance(value, dict):
            evaluation.update({f"{name} {k}": v for k, v in value.items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool)})
    curve = circuit_faithfulness_figure(circuit)
    return html.Div([
        *summary,
        html.Div([
            dcc.RadioItems(id="circuit-threshold-mode", value="top", inline=True, options=[
                {"label": " top-k edges ", "value": "top"},
                {"label": " |score| at least ", "value": "score"}]),
            html.Div(dcc.Slider(id="circuit-threshold", min=slider["min"], max=slider["max"],
                                step=slider["step"], marks=slider["marks"], value=slider["value"],
                                included=False, updatemode="mouseup", allow_direct_input=False),
                     className="control wide", style={"minWidth": "520px"}),
        ], className="controls", id="circuit-threshold-box"),
        html.Div([
            dcc.Graph(id="circuit-graph", figure=figure, config={"displaylogo": False},
                      style={"flex": "2", "minWidth": "520px"}),
            html.Div([
                html.Div(id="circuit-node", className="panel",
                         children=html.P("Click a node for its score (and a feature's top "
                                         "contexts); hover an edge's middle for its score.",
                                         className="hint")),
                html.Div([html.H4("heads by role" if circuit.by_role().keys() - {None} else "heads"),
                          html.Table(roles, className="table", id="circuit-roles")],
                         className="panel") if roles else None,
                html.Div([html.H4("evaluation"), html.Table(
                    [html.Tr([html.Th(k), html.Td(f"{v:.4g}" if isinstance(v, float) else str(v))])
                     for k, v in evaluation.items()], className="table facts")], className="panel")
                if evaluation else None,
            ], className="details"),
        ], className="heatmaps"),
        dcc.Graph(id="circuit-curve", figure=curve, config={"displaylogo": False})
        if curve is not None else html.P("no faithfulness curve stored with this circuit",
                                         className="hint", id="circuit-no-curve"),
    ])


def node_panel(state, run_id: str | None, click: dict | None):
    """What the store says about the clicked node: its score, a feature's density and top
    contexts, a head's link to the Head page."""
    from circuits.plots import parse_node

    point = ((click or {}).get("points") or [{}])[0]
    name = point.get("customdata")
    if not run_id or not isinstance(name, str):
        return no_update
    circuit = _circuit(state, run_id)
    info = circuit.node_info.get(name)
    if info is None:  # sae-heads names heads "L.H"; the graph calls them "aL.hH"
        parsed = parse_node(name)
        if parsed["kind"] == "head":
            info = circuit.node_info.get(f"{parsed['layer']}.{parsed['head']}")
    info = info or {}
    parsed = parse_node(name)
    rows = [html.H4(name, id="circuit-node-name")]
    if parsed["kind"] == "head":
        rows.append(dcc.Link(f"open head {parsed['layer']}.{parsed['head']}", href="/head" + query_string(
            model_id=circuit.model_id, layer=parsed["layer"], head=parsed["head"]), className="button-link"))
    if isinstance(info.get("score"), (int, float)):
        rows.append(html.P(f"score {info['score']:+.4g}"))
    if isinstance(info.get("density"), (int, float)):
        rows.append(html.P(f"fires on {info['density']:.2%} of the corpus positions"))
    contexts = info.get("contexts")
    if contexts:
        rows.append(html.Ul([html.Li([html.Span(f"{c['activation']:.2f}  ", className="muted"),
                                      c["text"][:-len(c["token"])] if c.get("token") else c["text"],
                                      html.B(c.get("token", ""))]) for c in contexts],
                            id="circuit-node-contexts"))
    elif parsed["kind"] == "sae_feature":
        rows.append(html.P("no top-activating contexts stored with this circuit", className="hint"))
    return rows


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

    register_cancel_buttons(app, state, "patch-cancel", "patch-message",
                            "the job stops within a layer")

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

    _register_circuits(app, state)


def _register_circuits(app, state) -> None:
    """Discovery jobs, the threshold slider, node clicks, task file uploads."""
    @app.callback(Output("circuit-upload-path", "data"), Output("circuit-upload-message", "children"),
                  Output("circuit-task", "value"),
                  Input("circuit-upload", "contents"), State("circuit-upload", "filename"),
                  prevent_initial_call=True)
    def on_upload(contents, filename):
        try:
            path, summary = receive_task_file(state, contents, filename)
        except InterpError as exc:
            return None, error_box(str(exc), id="circuit-upload-error"), no_update
        return path, notice(summary, id="circuit-upload-ok"), TASK_FILE

    @app.callback(Output("circuit-message", "children"), Input("circuit-launch", "n_clicks"),
                  State("circuit-task", "value"), State("circuit-upload-path", "data"),
                  State("circuit-method", "value"), State("circuit-n-discover", "value"),
                  State("circuit-n-eval", "value"), State("circuit-steps", "value"),
                  State("circuit-percent", "value"), prevent_initial_call=True)
    def on_discover(clicks, task, upload_path, method, n_discover, n_eval, steps, percent):
        if not clicks:
            return no_update
        return launch_discovery(state, task, upload_path, method, n_discover, n_eval, steps, percent)

    @app.callback(Output("circuit-jobs", "children"), Input("circuit-poll", "n_intervals"),
                  Input("circuit-message", "children"))
    def poll(_n, _message):
        return job_rows(state, "circuit")

    register_cancel_buttons(app, state, "circuit-cancel", "circuit-message",
                            "the job stops within a layer", notice_id="circuit-cancelled")

    @app.callback(Output("circuit-threshold", "min"), Output("circuit-threshold", "max"),
                  Output("circuit-threshold", "step"), Output("circuit-threshold", "marks"),
                  Output("circuit-threshold", "value"),
                  Input("circuit-threshold-mode", "value"), State("circuits-query", "data"),
                  prevent_initial_call=True)
    def slider_for_mode(mode, query):
        from circuits.plots import threshold_slider

        run_id = (query or {}).get("circuit")
        if not run_id:
            return (no_update,) * 5
        edges = [e.to_json() for e in _circuit(state, run_id).all_edges()]
        spec = threshold_slider(edges, mode)
        return spec["min"], spec["max"], spec["step"], spec["marks"], spec["value"]

    @app.callback(Output("circuit-graph", "figure"), Input("circuit-threshold", "value"),
                  State("circuit-threshold-mode", "value"), State("circuits-query", "data"),
                  prevent_initial_call=True)
    def redraw(position, mode, query):
        run_id = (query or {}).get("circuit")
        if not run_id or position is None:
            return no_update
        return circuit_figure(state, run_id, mode or "top", position)

    @app.callback(Output("circuit-node", "children"), Input("circuit-graph", "clickData"),
                  State("circuits-query", "data"), prevent_initial_call=True)
    def on_node(click, query):
        return node_panel(state, (query or {}).get("circuit"), click)
