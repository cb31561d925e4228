"""Steering playground: the same prompt generated greedily with and without an attention edit.

Three edits, each built by `interp.steering` and run by `interp.steering.compare` (the same calls
a notebook makes): scale heads (0 ablates them), PASTA highlighting of a phrase, ACT sink
calibration. URL: /steering[?heads=18.6,17.3&edit=scale]
"""

from __future__ import annotations

import importlib
import json

from dash import Input, Output, State, dcc, html, no_update

from interp.errors import InterpError, InvalidInput

from dashboard.layout import error_box, not_available, notice
from dashboard.state import ModelBusy, ModelNotReady

PATH = "/steering"
TITLE = "Steering"
DEFAULT_PROMPT = "When Mary and John went to the store, John gave a drink to"
EDITS = [
    {"label": "scale heads (0 = ablate)", "value": "scale"},
    {"label": "PASTA: highlight a phrase", "value": "pasta"},
    {"label": "ACT: calibrate attention sinks", "value": "act"},
]
# The strength field's meaning and default per edit: the head scale, PASTA's alpha (the papers'
# 0.01), ACT's beta (the paper's 0.4).
STRENGTH_DEFAULT = {"scale": 0.0, "pasta": 0.01, "act": 0.4}
STRENGTH_LABEL = {"scale": "scale", "pasta": "alpha", "act": "beta"}
MAX_NEW_TOKENS = 200


def steering_unavailable() -> str | None:
    """None when edited generation can run, else what is missing."""
    try:
        steering = importlib.import_module("interp.steering")
    except ImportError as exc:
        return f"interp.steering does not import ({exc})"
    missing = [n for n in ("compare", "scale_heads", "pasta_highlight", "act_calibration")
               if not hasattr(steering, n)]
    return f"interp.steering lacks {', '.join(missing)}" if missing else None


def parse_heads(text: str | None) -> list[tuple[int, int]]:
    """'18.6, 17.3' -> [(18, 6), (17, 3)]; anything else is InvalidInput (never evaluated)."""
    heads = []
    for item in (text or "").replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        layer, dot, head = item.partition(".")
        if not dot or not layer.strip().isdigit() or not head.strip().isdigit():
            raise InvalidInput(f"{item!r} is not a head: write heads as LAYER.HEAD, e.g. 18.6, 17.3")
        heads.append((int(layer), int(head)))
    return heads


def layout(state, query: dict) -> html.Div:
    missing = steering_unavailable()
    edit = query.get("edit") if query.get("edit") in {e["value"] for e in EDITS} else "scale"
    children = [html.H2("Steering playground")]
    if missing:
        children += [not_available("Edited generation", "interp.steering"),
                     html.P(missing, className="hint")]
    children += [
        html.Div([
            html.Label(["prompt", dcc.Textarea(id="steer-prompt", value=DEFAULT_PROMPT, rows=3)],
                       className="control prompt"),
        ], className="controls"),
        html.Div([
            html.Label(["edit", dcc.Dropdown(id="steer-edit", options=EDITS, value=edit,
                                             clearable=False)], className="control"),
            html.Label(["heads (LAYER.HEAD, comma-separated)",
                        dcc.Input(id="steer-heads", type="text", value=query.get("heads", ""),
                                  placeholder="e.g. 18.6, 17.3 (ACT: empty = every sink head)")],
                       className="control wide"),
            html.Label([html.Span(STRENGTH_LABEL[edit], id="steer-strength-label"),
                        dcc.Input(id="steer-strength", type="number",
                                  value=STRENGTH_DEFAULT[edit], step=0.01)],
                       className="control small"),
            html.Label(["phrase to highlight (PASTA)", dcc.Input(id="steer-phrase", type="text")],
                       className="control"),
            html.Label(["new tokens", dcc.Input(id="steer-tokens", type="number", value=20, min=1,
                                                max=MAX_NEW_TOKENS, step=1)],
                       className="control small"),
            dcc.Checklist(id="steer-chat", options=[{"label": " chat template", "value": "chat"}],
                          value=[]),
            html.Button("Generate", id="steer-run", className="primary",
                        disabled=missing is not None),
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
    ]
    return html.Div(children)


def generate_pair(state, prompt, kind, heads_text, strength, phrase, tokens, chat):
    """-> (message, plain text, edited text, edit JSON)."""
    import interp.steering as steering

    if not (prompt or "").strip():
        raise InvalidInput("the prompt is empty: type the text to continue")
    if tokens is None or not 1 <= int(tokens) <= MAX_NEW_TOKENS:
        raise InvalidInput(f"new tokens must be between 1 and {MAX_NEW_TOKENS}")
    heads = parse_heads(heads_text)
    if strength is None:
        raise InvalidInput("type a number for the scale / alpha / beta")
    with state.models.use(timeout=5.0, purpose="steering generation") as model:
        text = model.apply_chat_template(prompt) if chat else prompt
        if kind == "scale":
            edit = steering.scale_heads(model, heads, 0.0 if strength is None else float(strength))
        elif kind == "pasta":
            if not (phrase or "").strip():
                raise InvalidInput("PASTA needs a phrase to highlight, copied from the prompt")
            edit = steering.pasta_highlight(model, text, phrase, heads, alpha=float(strength))
        elif kind == "act":
            edit = steering.act_calibration(model, prompt, beta=float(strength), heads=heads or None,
                                            chat=chat)
        else:
            raise InvalidInput(f"unknown edit {kind!r}")
        plain, edited = steering.compare(model, prompt, edit, max_new_tokens=int(tokens), chat=chat)
    edit_json = json.dumps(edit.to_dict(), indent=1, default=str)
    same = " (identical)" if plain.text == edited.text else ""
    return notice(f"greedy continuations of {model.name}{same}"), plain.text, edited.text, edit_json


def register(app, state) -> None:
    @app.callback(Output("steer-strength", "value"), Output("steer-strength-label", "children"),
                  Input("steer-edit", "value"), State("steer-strength-label", "children"),
                  prevent_initial_call=True)
    def strength_default(kind, label):
        if kind not in STRENGTH_DEFAULT or label == STRENGTH_LABEL[kind]:
            return no_update, no_update  # inserted by the router: keep what the page shows
        return STRENGTH_DEFAULT[kind], STRENGTH_LABEL[kind]

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
        missing = steering_unavailable()
        if missing:
            return error_box(f"edited generation is not available yet: {missing}"), "", "", ""
        try:
            return generate_pair(state, prompt, kind, heads, strength, phrase, tokens, bool(chat))
        except (ModelBusy, ModelNotReady) as exc:
            return notice(str(exc)), "", "", ""
        except (InterpError, ValueError) as exc:
            return error_box(str(exc), id="steer-error"), "", "", ""
