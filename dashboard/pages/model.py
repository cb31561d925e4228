"""Model: the loaded model's facts, the runs the store holds for it, and a model picker.

The picker offers the embedded models, models already converted into the cache, models in the
Hugging Face hub cache, and a typed local path. A typed path is checked before anything loads
it (`interp.model_paths.check_model_path`): it must exist and be either a directory with a
config.json or a .gguf file.
URL: /model
"""

from __future__ import annotations

import datetime
from pathlib import Path

from dash import Input, Output, State, dcc, html, no_update

from interp.embedded import EMBEDDED_MODELS, is_cached, is_installed
from interp.errors import InvalidInput
from interp.model_paths import check_model_path
from interp.paths import models_dir

from dashboard.layout import error_box, notice, query_string

PATH = "/model"
TITLE = "Model"


def model_choices() -> list[dict]:
    """Dropdown options: embedded models, converted user models, hub-cache models."""
    options = []
    for entry in EMBEDDED_MODELS.values():
        installed = is_installed(entry)
        flags = "converted" if is_cached(entry) else ("installed" if installed else "not installed")
        options.append({"label": f"{entry.name} (embedded, {flags})", "value": entry.name,
                        "disabled": not installed})
    for directory in sorted(models_dir(create=False).glob("gguf-*")):
        if (directory / "config.json").is_file():
            options.append({"label": f"{directory.name} (converted GGUF)", "value": str(directory)})
    for path in _hub_cached():
        options.append({"label": f"{path.parent.parent.name.removeprefix('models--').replace('--', '/')}"
                                 " (hub cache)", "value": str(path)})
    return options


def _hub_cached() -> list[Path]:
    """Snapshot directories in the Hugging Face hub cache that hold a config.json."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return []
    root = Path(HF_HUB_CACHE)
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob("models--*/snapshots/*/config.json"))


def layout(state, query: dict) -> html.Div:
    status = state.models.status()
    return html.Div([
        html.H2("Model"),
        html.Div([
            html.Div([html.H3("Loaded model"), html.Div(id="model-facts")], className="panel"),
            html.Div([
                html.H3("Choose a model"),
                html.P(["loaded now: ", html.B(status["name"] if status["state"] == "ready"
                                               else "none", id="model-loaded-name")],
                       className="hint"),
                html.Label(["embedded or cached", dcc.Dropdown(id="model-choice", options=model_choices(),
                                                               value=status["name"],
                                                               clearable=False)],
                           className="control wide"),
                html.Label(["or a local path (HF directory or .gguf file)",
                            dcc.Input(id="model-path", type="text", debounce=False,
                                      placeholder="/path/to/model-directory or /path/to/file.gguf")],
                           className="control wide"),
                html.Button("Load", id="model-load", className="primary"),
                html.Div(id="model-message"),
            ], className="panel"),
        ], className="panels"),
        html.H3("Runs in the store for this model"),
        html.Div(id="model-runs"),
        dcc.Interval(id="model-poll", interval=1500),
    ])


def facts_view(state):
    status = state.models.status()
    if status["state"] == "loading":
        return notice(f"loading {status['name']} …", id="model-loading")
    if status["state"] == "failed":
        return error_box(f"{status['name']} failed to load: {status['error']}")
    model = state.models.model
    if model is None:
        return notice("no model loaded")
    facts = model.facts()
    table = html.Table([html.Tr([html.Th(k), html.Td(str(v))]) for k, v in facts.items()],
                       className="table facts", id="model-facts-table")
    failure = status.get("last_failure")
    if failure:
        return html.Div([error_box(f"loading {failure['name']} failed: {failure['error']}. "
                                   f"{model.name} is still loaded and in use.",
                                   id="model-load-failed"), table])
    return table


def runs_view(state):
    model_id = state.models.status()["model_id"]
    if not model_id:
        return notice("the runs appear when the model is loaded")
    runs = state.store.list_runs(model_id=model_id, limit=100)
    if not runs:
        return notice(["No runs for ", html.Code(model_id), " yet: ",
                       dcc.Link("launch a scan", href="/scans"), "."])
    rows = []
    for run in runs:
        links = [dcc.Link(d, href="/heads" + query_string(model_id=model_id, detector=d),
                          className="button-link") for d in run.detectors]
        if run.kind in ("patch", "circuit") and run.status == "complete":
            links.append(dcc.Link("view", href="/circuits" + query_string(
                model_id=model_id, **{run.kind: run.id}), className="button-link"))
        rows.append(html.Tr([
            html.Td(run.kind), html.Td(run.status, className=f"status {run.status}"),
            html.Td(datetime.datetime.fromtimestamp(run.created_at).strftime("%Y-%m-%d %H:%M")),
            html.Td(links), html.Td(run.id, className="mono"),
        ]))
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in ("kind", "status", "created",
                                                                "results", "run")])),
                       html.Tbody(rows)], className="table", id="model-runs-table")


def load(state, choice: str | None, typed: str | None):
    try:
        target = check_model_path(typed) if (typed or "").strip() else choice
    except InvalidInput as exc:
        return error_box(str(exc), id="model-error")
    if not target:
        return error_box("choose a model or type a path", id="model-error")
    if target not in EMBEDDED_MODELS and not Path(target).exists():
        return error_box(f"{target} is not an embedded model name or an existing path",
                         id="model-error")
    if not state.models.load_async(target):
        return error_box("a model is loading already; wait for it to finish", id="model-error")
    return notice(f"loading {target} … (embedded models load in seconds; a first GGUF "
                  "conversion takes a minute)", id="model-loading-message")


def register(app, state) -> None:
    @app.callback(Output("model-facts", "children"), Output("model-runs", "children"),
                  Output("model-poll", "disabled"), Input("model-poll", "n_intervals"))
    def refresh(_n):
        # Polled only while a model loads: then the facts and the runs stop changing.
        return facts_view(state), runs_view(state), state.models.status()["state"] != "loading"

    @app.callback(Output("model-message", "children"), Output("model-poll", "disabled", allow_duplicate=True),
                  Input("model-load", "n_clicks"),
                  State("model-choice", "value"), State("model-path", "value"),
                  prevent_initial_call=True)
    def on_load(clicks, choice, typed):
        if not clicks:
            return no_update, no_update
        message = load(state, choice, typed)
        # Poll until the load has ended (the refresh callback then stops polling): a load that
        # fails at once must still show its failure.
        return message, False
