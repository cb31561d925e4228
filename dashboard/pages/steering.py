"""Steering playground: one prompt with and without an attention edit, readable at a glance.

The edits are the library's table (`interp.edit_kinds.EDIT_KINDS`: scale heads, 0 ablates them;
PASTA highlighting of a phrase; ACT sink calibration), built by `interp.steering.build_edit`.
For one Generate the page shows, all computed by library calls:

- the greedy continuations without and with the edit (`interp.steering.compare`), downloadable
  as JSON or CSV with the edit's JSON (`interp.exports.generations_json` / `generations_csv`);
- the next-token distribution: the top 10 tokens, their probability with and without the edit
  and the change, and the logit difference of a target pair when one is typed
  (`interp.steering.playground.inspect_edit`);
- one edited head's attention pattern before and after the edit (a dropdown picks the head);
- the strength (scale, alpha or beta) against the metric, one batched forward (`sweep_strength`);
- for ACT, the sink tokens each calibrated head calibrated on this prompt (`sink_rows`).

Below: ACT calibration searches launched from the page as background jobs (progress, Cancel),
the same `act_eval.calibrate_task` that `interp calibrate` runs, stored as `calibration` runs;
Apply puts a stored calibration's heads and beta into the form.

URL: /steering[?heads=18.6,17.3&edit=scale]
"""

from __future__ import annotations

import html as html_text
import json

import plotly.graph_objects as go
from dash import ALL, Input, Output, State, ctx, dcc, html, no_update

from interp.edit_kinds import EDIT_KINDS, check_edit
from interp.errors import InterpError, InvalidInput

from dashboard.layout import error_box, notice, register_cancel_buttons
from dashboard.pages.scans import _progress_bar, _time, elapsed_text
from dashboard.state import ModelBusy, ModelNotReady

PATH = "/steering"
TITLE = "Steering"
DEFAULT_PROMPT = "When Mary and John went to the store, John gave a drink to"
EDITS = [{"label": kind.label, "value": kind.name} for kind in EDIT_KINDS.values()]
MAX_NEW_TOKENS = 200
FORMATS = [{"label": "from the file name", "value": ""}] + [
    {"label": f, "value": f} for f in ("jsonl", "csv", "tsv", "sst2")]
SHOWN_CALIBRATIONS = 10
PLAIN_COLOUR, EDITED_COLOUR = "#9ca3af", "#2563eb"


def layout(state, query: dict) -> html.Div:
    edit = EDIT_KINDS.get(query.get("edit"), EDIT_KINDS["scale"])
    return html.Div([
        html.H2("Steering playground"),
        html.Div([
            html.Label(["prompt", dcc.Textarea(id="steer-prompt", value=DEFAULT_PROMPT, rows=3)],
                       className="control prompt"),
        ], className="controls"),
        html.Div([
            html.Label(["edit", dcc.Dropdown(id="steer-edit", options=EDITS, value=edit.name,
                                             clearable=False)], className="control"),
            html.Label(["heads (LAYER.HEAD, comma-separated)",
                        dcc.Input(id="steer-heads", type="text", value=query.get("heads", ""),
                                  placeholder="e.g. 18.6, 17.3 (PASTA: auto = the profiled heads)")],
                       className="control wide"),
            html.Label([html.Span(edit.strength, id="steer-strength-label"),
                        dcc.Input(id="steer-strength", type="number", value=edit.default,
                                  step=0.01)],
                       className="control small"),
            html.Label(["phrase to highlight (PASTA)", dcc.Input(id="steer-phrase", type="text")],
                       className="control"),
            html.Label(["new tokens", dcc.Input(id="steer-tokens", type="number", value=20, min=1,
                                                max=MAX_NEW_TOKENS, step=1)],
                       className="control small"),
            dcc.Checklist(id="steer-chat", options=[{"label": " chat template", "value": "chat"}],
                          value=[]),
        ], className="controls"),
        html.Div([
            html.Label(["target token a (optional)",
                        dcc.Input(id="steer-target-a", type="text", value="",
                                  placeholder="e.g. ' Mary' (leading space)")],
                       className="control"),
            html.Label(["target token b", dcc.Input(id="steer-target-b", type="text", value="",
                                                    placeholder="e.g. ' John'")],
                       className="control"),
            html.Span("with both: the metric is logit(a) - logit(b); without: the probability "
                      "of the unedited top token", className="hint"),
            html.Button("Generate", id="steer-run", className="primary"),
        ], className="controls"),
        html.Div(id="steer-message"),
        dcc.Loading(html.Div([
            html.Div([
                html.Div([html.H4("without the edit"), html.Pre(id="steer-plain", className="generation")],
                         className="panel"),
                html.Div([html.H4("with the edit"), html.Pre(id="steer-edited", className="generation")],
                         className="panel"),
            ], className="panels"),
            html.Div([html.Button("Download generations (JSON)", id="steer-download-json"),
                      html.Button("Download generations (CSV)", id="steer-download-csv"),
                      dcc.Download(id="steer-download")], className="controls launch"),
            html.Details([html.Summary("the edit as saved (JSON)"),
                          html.Pre(id="steer-edit-json", className="generation")]),
            html.Div([
                html.Div([html.H4("next token: top 10 with and without the edit"),
                          html.Div(id="steer-logit-diff"),
                          html.Div(id="steer-distribution")], className="panel"),
                html.Div([html.H4("strength sweep"), html.Div(id="steer-sweep")],
                         className="panel"),
            ], className="panels"),
            html.Div([
                html.H4("the edited head's attention, before and after"),
                html.Label(["head", dcc.Dropdown(id="steer-head", options=[], value=None,
                                                 clearable=False)], className="control small"),
                html.Div(id="steer-patterns", className="panels"),
            ], className="panel"),
            html.Div(id="steer-sinks"),
        ], id="steer-results", style={"display": "none"}), type="circle", delay_show=300),
        dcc.Store(id="steer-result"),
        calibration_section(),
    ])


def calibration_section() -> html.Div:
    def file_row(split: str, hint: str):
        return html.Div([
            html.Label([f"{split} file ({hint})",
                        dcc.Input(id=f"cal-{split}", type="text", value="",
                                  placeholder="path on the server, e.g. data/stsa.binary." + {"eval": "test"}.get(split, split))],
                       className="control wide"),
            dcc.Upload(html.Button(f"Upload {split}"), id=f"cal-upload-{split}"),
        ], className="controls")

    def size(name: str, label: str):
        from interp.steering.act_eval import SEARCH_BOUNDS, SEARCH_DEFAULTS

        lo, hi = SEARCH_BOUNDS[name]
        return html.Label([f"{label} [{lo}, {hi}]",
                           dcc.Input(id=f"cal-{name}", type="text", value="",
                                     placeholder=str(SEARCH_DEFAULTS[name]))],
                          className="control small")

    return html.Div([
        html.H3("ACT calibration search"),
        html.P("Searches the heads whose sink calibration helps a classification task (Yu et al., "
               "ICML 2024): calibration prompts from train, the greedy stop on dev, the score on "
               "eval (disjoint). Files: JSONL {\"text\", \"label\"}, CSV/TSV (columns text, label) "
               "or SST-2's stsa.binary.* lines. The same search as `interp calibrate`; the result "
               "lands in the store.", className="hint"),
        file_row("train", "prompts and demonstrations"),
        file_row("dev", "the search's stop"),
        file_row("eval", "scored; never searched on"),
        html.Div([
            html.Label(["format", dcc.Dropdown(id="cal-format", options=FORMATS, value="",
                                               clearable=False)], className="control"),
            size("shots", "shots"), size("n_calibration", "calibration prompts"),
            size("n_dev", "dev prompts"), size("n_eval", "eval examples"),
            size("screen", "screened heads"),
            html.Button("Launch search", id="cal-launch", className="primary"),
        ], className="controls"),
        html.Div(id="cal-message"),
        dcc.Interval(id="cal-poll", interval=1000),
        html.Div(id="cal-runs"),
    ])


# ---- the analysis of one edit -------------------------------------------------------------------
def _request(prompt, kind, heads_text, strength, phrase, tokens, chat, target_a, target_b) -> dict:
    if tokens is None or not 1 <= int(tokens) <= MAX_NEW_TOKENS:
        raise InvalidInput(f"new tokens must be between 1 and {MAX_NEW_TOKENS}")
    return dict(kind=kind, prompt=prompt, heads=heads_text, strength=strength, phrases=phrase,
                tokens=int(tokens), chat=bool(chat), targets=[target_a or "", target_b or ""])


def _edit_args(request: dict) -> dict:
    return {k: request[k] for k in ("kind", "prompt", "heads", "strength", "phrases")}


def resolve_auto_heads(state, request: dict) -> dict:
    """heads "auto" with PASTA -> the newest stored PASTA profile's heads for the loaded
    weights (`interp pasta MODEL` makes one), as `interp steer --heads auto` does."""
    from interp.edit_kinds import is_auto_heads

    if not is_auto_heads(request["heads"]):
        return request
    if request["kind"] != "pasta":
        raise InvalidInput("heads 'auto' are the profiled PASTA heads: choose the PASTA edit, "
                           "or name the heads as LAYER.HEAD")
    loaded = state.models.model
    if loaded is None:
        raise ModelNotReady("no model is loaded yet: load one on the Model page")
    from interp.steering.pasta_profile import PastaProfile

    profile = PastaProfile.from_store(state.store, loaded.model_id)
    return {**request, "heads": ", ".join(f"{layer}.{head}" for layer, head in profile.heads)}


def generate_pair(state, request: dict) -> dict:
    """Everything one Generate shows, computed under the model lock: {"message", "plain",
    "edited", "edit_json", "view", "sweep", "generations", "heads"}."""
    from interp.exports import generations_json
    from interp.steering import build_edit, compare
    from interp.steering.playground import edited_heads, inspect_edit, sweep_strength, target_ids

    request = resolve_auto_heads(state, request)
    check_edit(**_edit_args(request))  # before waiting for the model
    with state.models.use(timeout=5.0, purpose="steering generation") as model:
        edit = build_edit(model, **_edit_args(request), chat=request["chat"])
        target_ids(model, request["targets"])  # a bad target is refused before generating
        view = inspect_edit(model, request["prompt"], edit, targets=request["targets"],
                            chat=request["chat"])
        sweep = sweep_strength(model, request["prompt"], edit, targets=request["targets"],
                               chat=request["chat"])
        plain, edited = compare(model, request["prompt"], edit, max_new_tokens=request["tokens"],
                                chat=request["chat"])
        name = model.name
    same = " (identical)" if plain.text == edited.text else ""
    generations = generations_json(name, request["prompt"], plain, edited, edit,
                                   chat=request["chat"], max_new_tokens=request["tokens"])
    return {"message": notice(f"greedy continuations of {name}{same}"), "plain": plain.text,
            "edited": edited.text, "edit_json": json.dumps(edit.to_dict(), indent=1, default=str),
            "view": view, "sweep": sweep, "generations": generations,
            "heads": [f"{layer}.{h}" for layer, h in edited_heads(edit)]}


def head_view(state, request: dict, head: str):
    """The `EditView` of another head of the same edit (the head dropdown)."""
    from interp.names import parse_heads
    from interp.steering import build_edit
    from interp.steering.playground import inspect_edit

    request = resolve_auto_heads(state, request)
    with state.models.use(timeout=5.0, purpose="steering pattern") as model:
        edit = build_edit(model, **_edit_args(request), chat=request["chat"])
        return inspect_edit(model, request["prompt"], edit, head=parse_heads(head)[0],
                            targets=request["targets"], chat=request["chat"])


def _shown(token: str) -> str:
    return repr(token)[1:-1] if token.strip() else repr(token)


def distribution_view(view) -> html.Div:
    """The top 10: probabilities side by side (grey: without, blue: with the edit) and the
    change beside them (green: up, red: down, on its own scale so small changes show), then
    the numbers as a table."""
    from plotly.subplots import make_subplots

    rows = view.top_tokens(10)[::-1]                      # plotly draws the first bar lowest
    labels = [f"{_shown(r['token'])} ({r['token_id']})" for r in rows]
    changes = [r["change"] for r in rows]
    figure = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.62, 0.38],
                           horizontal_spacing=0.03,
                           subplot_titles=("probability", "change (with - without)"))
    figure.add_trace(go.Bar(y=labels, x=[r["p_plain"] for r in rows], orientation="h",
                            name="without the edit", marker_color=PLAIN_COLOUR), 1, 1)
    figure.add_trace(go.Bar(y=labels, x=[r["p_edited"] for r in rows], orientation="h",
                            name="with the edit", marker_color=EDITED_COLOUR), 1, 1)
    figure.add_trace(go.Bar(y=labels, x=changes, orientation="h", showlegend=False,
                            marker_color=["#15803d" if c > 0 else "#b91c1c" for c in changes],
                            hovertemplate="%{y}: %{x:+.5f}<extra></extra>"), 1, 2)
    figure.update_layout(barmode="group", height=440, margin={"l": 10, "r": 20, "t": 30, "b": 40},
                         legend={"orientation": "h", "y": -0.08}, plot_bgcolor="white")
    figure.update_xaxes(range=[0, 1], row=1, col=1)
    figure.update_xaxes(zeroline=True, zerolinecolor="#555", tickformat=".1e", nticks=4,
                        row=1, col=2)
    table = html.Table([
        html.Thead(html.Tr([html.Th(h) for h in ("token", "p without", "p with", "change")])),
        html.Tbody([html.Tr([html.Td(_shown(r["token"]), className="mono"),
                             html.Td(f"{r['p_plain']:.4f}"), html.Td(f"{r['p_edited']:.4f}"),
                             html.Td(f"{r['change']:+.2e}",
                                     style={"color": "#15803d" if r["change"] > 0 else "#b91c1c"})])
                    for r in rows[::-1]]),
    ], className="table", id="steer-top-table")
    return html.Div([dcc.Graph(figure=figure, id="steer-distribution-graph",
                               config={"displayModeBar": False}), table])


def logit_diff_view(view, targets) -> html.Div:
    pair = view.logit_diff()
    if pair is None:
        return html.Div("no target pair: type two target tokens for a logit difference",
                        className="hint")
    plain, edited = pair
    a, b = (repr(t) for t in targets)
    return html.Div([html.B(f"logit({a}) - logit({b}): "),
                     f"{plain:.3f} without, {edited:.3f} with the edit ({edited - plain:+.3f})"],
                    className="notice", id="steer-logit-diff-value")


def sweep_view(sweep) -> dcc.Graph:
    figure = go.Figure(go.Scatter(x=sweep.values, y=sweep.metric, mode="lines+markers",
                                  name="with the edit", line={"color": EDITED_COLOUR}))
    figure.add_hline(y=sweep.plain, line_dash="dot", line_color=PLAIN_COLOUR,
                     annotation_text="without the edit", annotation_position="bottom right")
    figure.add_vline(x=sweep.current, line_dash="dash", line_color="#f59e0b",
                     annotation_text=f"{sweep.strength} = {sweep.current:g}")
    figure.update_layout(height=440, margin={"l": 60, "r": 20, "t": 20, "b": 50},
                         xaxis={"title": sweep.strength,
                                "type": "log" if sweep.strength == "alpha" else "linear"},
                         yaxis={"title": html_text.escape(sweep.metric_name)},
                         showlegend=False, plot_bgcolor="white")
    return dcc.Graph(figure=figure, id="steer-sweep-graph", config={"displaylogo": False})


def pattern_views(view) -> list:
    from interp.plots import attention_pattern_figure, empty_figure

    if view.head is None or view.pattern_plain is None:
        return [dcc.Graph(figure=empty_figure("this edit names no head"))]
    layer, head = view.head
    sinks = view.sinks.get(view.head, [])
    figures = [attention_pattern_figure(view.tokens, view.pattern_plain, [],
                                        f"L{layer}.H{head} without the edit"),
               attention_pattern_figure(view.tokens, view.pattern_edited, sinks,
                                        f"L{layer}.H{head} with the edit")]
    return [html.Div(dcc.Graph(figure=f, id=f"steer-pattern-{side}", config={"displaylogo": False}),
                     className="pattern-scroll") for f, side in zip(figures, ("plain", "edited"))]


def sinks_view(view, kind: str):
    from interp.steering.playground import sink_rows

    if kind != "act":
        return None
    rows = sink_rows(view)
    body = [html.Tr([html.Td(r["head"], className="mono"),
                     html.Td(", ".join(f"{p} {_shown(t)}" for p, t in zip(r["positions"], r["tokens"]))
                             or "no hidden sink on this prompt (the calibration changes nothing here)",
                             className="mono")]) for r in rows]
    return html.Div([
        html.H4("ACT: the sinks each calibrated head calibrated on this prompt"),
        html.P("position and token of every key whose mean attention over the queries that see "
               "it exceeds tau = 0.1, found in the calibrated forward; the first sink is left "
               "alone (the paper's rule), so it is not listed.", className="hint"),
        html.Table([html.Thead(html.Tr([html.Th("head"), html.Th("sinks (position token)")])),
                    html.Tbody(body)], className="table", id="steer-sinks-table"),
    ], className="panel")


# ---- calibration searches -----------------------------------------------------------------------
def launch_search(state, train, dev, eval, fmt, sizes: dict):
    """Check the files and sizes (library checks, no model), then queue the search as a job."""
    from interp.steering.act_eval import check_search_sizes
    from interp.steering.playground import calibration_search, load_search_files

    try:
        checked = check_search_sizes(**sizes)
        files = load_search_files(train, dev, eval, fmt=fmt, shots=checked["shots"],
                                  n_eval=checked["n_eval"])
    except InterpError as exc:
        return error_box(str(exc), id="cal-error")

    def task(model, store):
        calibration_search(model, files, store, n_calibration=checked["n_calibration"],
                           n_dev=checked["n_dev"], screen=checked["screen"])

    label = (f"{files.task.name}: {checked['shots']}-shot, {checked['n_calibration']} calibration"
             f" / {checked['n_dev']} dev / {len(files.eval)} eval")
    job = state.jobs.submit("calibration", label, task)
    return notice(f"queued the calibration search {label} as job {job.id}", id="cal-queued")


def calibration_runs(state):
    """Searches queued, running, done (with Apply) and failed, newest first."""
    from interp.steering.playground import stored_calibrations

    rows = []
    for job in state.jobs.without_run("calibration"):
        cell = error_box(job.error) if job.error else _progress_bar(0, "waiting for the model", "queued")
        rows.append(html.Tr([html.Td(job.label), html.Td("—"),
                             html.Td(job.state, className=f"status {job.state}"), html.Td(cell),
                             html.Td(html.Button("Cancel", id={"type": "cal-cancel", "id": job.id})
                                     if job.state == "queued" else None)]))
    done = {c["run_id"]: c for c in stored_calibrations(state.store, limit=SHOWN_CALIBRATIONS)}
    for run in state.store.list_runs(kind="calibration", limit=SHOWN_CALIBRATIONS):
        action = None
        if run.status == "running":
            cell = html.Div([_progress_bar(run.progress, run.message, "running"),
                             html.Div(elapsed_text(run), className="hint elapsed")])
            action = html.Button("Cancel", id={"type": "cal-cancel", "id": run.id})
        elif run.id in done:
            c = done[run.id]
            heads = ", ".join(f"{layer}.{h}" for layer, h in c["heads"]) or "none helped"
            accuracy = ""
            if c["dev_accuracy"] is not None and c["baseline_dev_accuracy"] is not None:
                accuracy = f"; dev {c['baseline_dev_accuracy']:.3f} -> {c['dev_accuracy']:.3f}"
            if c["eval"] and c["eval"].get("baseline") is not None:
                accuracy += (f"; eval {c['eval']['baseline']:.3f} -> "
                             f"{c['eval']['calibrated']:.3f}")
            cell = html.Span([html.Span(f"heads {heads}", className="mono"),
                              f" (beta {c['beta']}, tau {c['tau']}{accuracy})"])
            if c["heads"]:
                action = html.Button("Apply", id={"type": "cal-apply", "id": run.id})
        elif run.status == "complete":
            cell = html.Span("not a calibration result", className="hint")
        else:
            cell = error_box(run.error or run.status) if run.status == "failed" else \
                html.Span(run.error or run.status)
        rows.append(html.Tr([
            html.Td([html.B(_params_text(run.params)), html.Div(_time(run.created_at), className="hint")]),
            html.Td(run.model_id, className="mono"),
            html.Td(run.status, className=f"status {run.status}"), html.Td(cell), html.Td(action),
        ], id=f"cal-run-{run.id}"))
    if not rows:
        return notice("No calibration yet: launch a search above, or run `interp calibrate`.")
    head = html.Thead(html.Tr([html.Th(h) for h in ("search", "model", "status", "result", "")]))
    return html.Table([head, html.Tbody(rows)], className="table runs", id="cal-runs-table")


def _params_text(params: dict) -> str:
    from pathlib import Path

    train = Path(params["train"]).name if params.get("train") else "calibration"
    return f"{train}, {params.get('shots', '?')}-shot"


def apply_calibration(state, run_id: str) -> tuple[str, str, float]:
    """(edit kind, heads text, beta) of a stored calibration, for the form."""
    from interp.steering import Calibration

    calibration = Calibration.from_store(state.store, run_id)
    heads = ", ".join(f"{layer}.{h}" for layer, h in calibration.heads)
    return "act", heads, calibration.beta


def register(app, state) -> None:
    @app.callback(Output("steer-strength", "value"), Output("steer-strength-label", "children"),
                  Input("steer-edit", "value"), State("steer-strength-label", "children"),
                  prevent_initial_call=True)
    def strength_default(kind, label):
        if kind not in EDIT_KINDS or label == EDIT_KINDS[kind].strength:
            return no_update, no_update  # inserted by the router, or set by Apply: keep it
        return EDIT_KINDS[kind].default, EDIT_KINDS[kind].strength

    outputs = [Output("steer-message", "children"), Output("steer-plain", "children"),
               Output("steer-edited", "children"), Output("steer-edit-json", "children"),
               Output("steer-distribution", "children"), Output("steer-logit-diff", "children"),
               Output("steer-sweep", "children"), Output("steer-patterns", "children"),
               Output("steer-sinks", "children"), Output("steer-head", "options"),
               Output("steer-head", "value"), Output("steer-result", "data"),
               Output("steer-results", "style")]

    @app.callback(
        *outputs,
        Input("steer-run", "n_clicks"),
        State("steer-prompt", "value"), State("steer-edit", "value"), State("steer-heads", "value"),
        State("steer-strength", "value"), State("steer-phrase", "value"),
        State("steer-tokens", "value"), State("steer-chat", "value"),
        State("steer-target-a", "value"), State("steer-target-b", "value"),
        prevent_initial_call=True,
    )
    def run(clicks, prompt, kind, heads, strength, phrase, tokens, chat, target_a, target_b):
        if not clicks:
            return (no_update,) * len(outputs)
        # an error hides the result panels (they would show the previous request's figures)
        empty = ("", "", "", None, None, None, None, None, [], None, None, {"display": "none"})
        try:
            request = _request(prompt, kind, heads, strength, phrase, tokens, chat, target_a,
                               target_b)
            shown = generate_pair(state, request)
        except (ModelBusy, ModelNotReady) as exc:
            return (notice(str(exc)), *empty)
        except (InterpError, ValueError) as exc:
            return (error_box(str(exc), id="steer-error"), *empty)
        view = shown["view"]
        head = f"{view.head[0]}.{view.head[1]}" if view.head else None
        return (shown["message"], shown["plain"], shown["edited"], shown["edit_json"],
                distribution_view(view), logit_diff_view(view, request["targets"]),
                sweep_view(shown["sweep"]), pattern_views(view), sinks_view(view, kind),
                shown["heads"], head,
                {"request": request, "head": head, "generations": shown["generations"]}, {})

    @app.callback(Output("steer-patterns", "children", allow_duplicate=True),
                  Input("steer-head", "value"), State("steer-result", "data"),
                  prevent_initial_call=True)
    def other_head(head, result):
        if not head or not result or head == result.get("head"):
            return no_update  # set by Generate, which drew it already
        try:
            return pattern_views(head_view(state, result["request"], head))
        except (ModelBusy, ModelNotReady) as exc:
            return [notice(str(exc))]
        except (InterpError, ValueError) as exc:
            return [error_box(str(exc), id="steer-error")]

    @app.callback(Output("steer-download", "data"),
                  Input("steer-download-json", "n_clicks"), Input("steer-download-csv", "n_clicks"),
                  State("steer-result", "data"), prevent_initial_call=True)
    def download(_json, _csv, result):
        from interp.exports import generations_csv

        if not result or not ctx.triggered_id:
            return no_update
        data = result["generations"]
        if ctx.triggered_id == "steer-download-csv":
            return dict(content=generations_csv(data), filename="generations.csv",
                        type="text/csv")
        return dict(content=json.dumps(data, indent=1), filename="generations.json",
                    type="application/json")

    for split in ("train", "dev", "eval"):
        @app.callback(Output(f"cal-{split}", "value"),
                      Output("cal-message", "children", allow_duplicate=True),
                      Input(f"cal-upload-{split}", "contents"),
                      State(f"cal-upload-{split}", "filename"), prevent_initial_call=True)
        def uploaded(contents, filename):
            from interp.steering.playground import save_upload

            if not contents:
                return no_update, no_update
            try:
                path = save_upload(state.store.path.parent / "uploads", filename, contents)
            except InterpError as exc:
                return no_update, error_box(str(exc), id="cal-error")
            return str(path), notice(f"uploaded {filename} to {path}")

    @app.callback(
        Output("cal-message", "children"), Input("cal-launch", "n_clicks"),
        State("cal-train", "value"), State("cal-dev", "value"), State("cal-eval", "value"),
        State("cal-format", "value"), State("cal-shots", "value"),
        State("cal-n_calibration", "value"), State("cal-n_dev", "value"),
        State("cal-n_eval", "value"), State("cal-screen", "value"), prevent_initial_call=True)
    def on_launch(clicks, train, dev, eval, fmt, shots, n_calibration, n_dev, n_eval, screen):
        if not clicks:
            return no_update
        return launch_search(state, train, dev, eval, fmt,
                             dict(shots=shots, n_calibration=n_calibration, n_dev=n_dev,
                                  n_eval=n_eval, screen=screen))

    @app.callback(Output("cal-runs", "children"),
                  Input("cal-poll", "n_intervals"), Input("cal-message", "children"))
    def poll(_n, _message):
        return calibration_runs(state)

    register_cancel_buttons(app, state, "cal-cancel", "cal-message",
                            "the search stops within a second or two", notice_id="cal-cancelled")

    @app.callback(Output("steer-edit", "value", allow_duplicate=True),
                  Output("steer-heads", "value", allow_duplicate=True),
                  Output("steer-strength", "value", allow_duplicate=True),
                  Output("steer-strength-label", "children", allow_duplicate=True),
                  Output("cal-message", "children", allow_duplicate=True),
                  Input({"type": "cal-apply", "id": ALL}, "n_clicks"), prevent_initial_call=True)
    def on_apply(clicks):
        trigger = ctx.triggered_id
        if not trigger or not any(c for c in clicks or []) or not ctx.triggered[0]["value"]:
            return (no_update,) * 5
        try:
            kind, heads, beta = apply_calibration(state, trigger["id"])
        except InterpError as exc:
            return (no_update,) * 4 + (error_box(str(exc), id="cal-error"),)
        return (kind, heads, beta, EDIT_KINDS[kind].strength,
                notice(f"applied calibration {trigger['id']}: ACT on {heads}, beta {beta}; "
                       "press Generate", id="cal-applied"))
