"""Steering playground: the same prompt generated greedily with and without an attention edit.

The edits are the library's table (`interp.edit_kinds.EDIT_KINDS`: scale heads, 0 ablates them;
PASTA highlighting of a phrase; ACT sink calibration), built by
`interp.steering.build_edit` and run by `interp.steering.compare`: the calls `interp steer` and
a notebook make. URL: /steering[?heads=18.6,17.3&edit=scale]
"""

from __future__ import annotations

import json

from dash import Input, Output, State, dcc, html, no_update

from interp.edit_kinds import EDIT_KINDS, check_edit
from interp.errors import InterpError, InvalidInput

from dashboard.layout import error_box, notice
from dashboard.state import ModelBusy, ModelNotReady

PATH = "/steering"
TITLE = "Steering"
DEFAULT_PROMPT = "When Mary and John went to the store, John gave a drink to"
EDITS = [{"label": kind.label, "value": kind.name} for kind in EDIT_KINDS.values()]
MAX_NEW_TOKENS = 200


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
                                  placeholder="e.g. 18.6, 17.3 (ACT: empty = every sink head)")],
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
            html.Button("Generate", id="steer-run", className="primary"),
        ], className="controls"),
        dcc.Loading(html.Div([
            html.Div(id="steer-message"),
            html.Div([
                html.Div([html.H4("without the edit"), html.Pre(id="steer-plain", className="generation")],
                         className="panel"),
                html.Div([html.H4("with the edit"), html.Pre(id="steer-edited", className="generation")],
                         className="panel"),
            ], className="panels"),
            html.Details([html.Summary("the edit as saved (JSON)"),
                          html.Pre(id="steer-edit-json", className="generation")]),
        ]), type="circle", delay_show=300),
    ])


def generate_pair(state, prompt, kind, heads_text, strength, phrase, tokens, chat):
    """-> (message, plain text, edited text, edit JSON)."""
    from interp.steering import build_edit, compare

    if tokens is None or not 1 <= int(tokens) <= MAX_NEW_TOKENS:
        raise InvalidInput(f"new tokens must be between 1 and {MAX_NEW_TOKENS}")
    request = dict(kind=kind, prompt=prompt, heads=heads_text, strength=strength, phrases=phrase)
    check_edit(**request)  # before waiting for the model
    with state.models.use(timeout=5.0, purpose="steering generation") as model:
        edit = build_edit(model, **request, chat=chat)
        plain, edited = compare(model, prompt, edit, max_new_tokens=int(tokens), chat=chat)
    edit_json = json.dumps(edit.to_dict(), indent=1, default=str)
    same = " (identical)" if plain.text == edited.text else ""
    return notice(f"greedy continuations of {model.name}{same}"), plain.text, edited.text, edit_json


def register(app, state) -> None:
    @app.callback(Output("steer-strength", "value"), Output("steer-strength-label", "children"),
                  Input("steer-edit", "value"), State("steer-strength-label", "children"),
                  prevent_initial_call=True)
    def strength_default(kind, label):
        if kind not in EDIT_KINDS or label == EDIT_KINDS[kind].strength:
            return no_update, no_update  # inserted by the router: keep what the page shows
        return EDIT_KINDS[kind].default, EDIT_KINDS[kind].strength

    @app.callback(
        Output("steer-message", "children"), Output("steer-plain", "children"),
        Output("steer-edited", "children"), Output("steer-edit-json", "children"),
        Input("steer-run", "n_clicks"),
        State("steer-prompt", "value"), State("steer-edit", "value"), State("steer-heads", "value"),
        State("steer-strength", "value"), State("steer-phrase", "value"),
        State("steer-tokens", "value"), State("steer-chat", "value"),
        prevent_initial_call=True,
    )
    def run(clicks, prompt, kind, heads, strength, phrase, tokens, chat):
        if not clicks:
            return no_update, no_update, no_update, no_update
        try:
            return generate_pair(state, prompt, kind, heads, strength, phrase, tokens, bool(chat))
        except (ModelBusy, ModelNotReady) as exc:
            return notice(str(exc)), "", "", ""
        except (InterpError, ValueError) as exc:
            return error_box(str(exc), id="steer-error"), "", "", ""
