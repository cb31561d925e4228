"""The app shell (navigation, model badge, page container) and the URL helpers.

Every page is one path; its state lives in the query string (`/heads?detector=induction`), so
any view can be bookmarked or shared, and the browser's back/forward buttons walk through
views. Page controls never change the page directly: they write the URL, and the router
renders the page from it.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode

from dash import dcc, html


def parse_query(search: str | None) -> dict[str, str]:
    """'?a=1&b=x' -> {"a": "1", "b": "x"} (last value wins; values stay strings)."""
    parsed = parse_qs((search or "").lstrip("?"), keep_blank_values=False)
    return {key: values[-1] for key, values in parsed.items()}


def query_string(**params) -> str:
    """{"a": 1, "b": None} -> '?a=1' (None and '' are left out)."""
    kept = {k: v for k, v in params.items() if v is not None and v != ""}
    return "?" + urlencode(kept) if kept else ""


def int_param(query: dict, key: str, default: int | None = None) -> int | None:
    """An integer query parameter, or `default` when absent or not an integer."""
    try:
        return int(query[key])
    except (KeyError, ValueError):
        return default


def nav_id(page) -> str:
    """The navigation link's id of a page module: "nav-heads" for PATH "/heads"."""
    return f"nav-{page.PATH.strip('/')}"


def shell(pages) -> html.Div:
    """The frame around every page: one navigation link per page module (PATH, TITLE), in the
    order of `pages`, the model badge, and the container the router fills."""
    return html.Div([
        dcc.Location(id="url", refresh=False),
        html.Header([
            html.Span("interp", className="brand"),
            html.Nav([dcc.Link(page.TITLE, href=page.PATH, id=nav_id(page), className="nav-link")
                      for page in pages]),
            html.Span(id="model-badge", className="model-badge"),
        ], className="topbar"),
        dcc.Interval(id="badge-poll", interval=2000),
        html.Main(id="page", className="page"),
    ])


def error_box(message: str, id: str | None = None) -> html.Div:
    """A visible error: what went wrong and how to fix it (messages come from InterpError)."""
    kwargs = {"id": id} if id else {}
    return html.Div(message, className="error-box", role="alert", **kwargs)


def notice(message, id: str | None = None) -> html.Div:
    kwargs = {"id": id} if id else {}
    return html.Div(message, className="notice", **kwargs)


def verify_text(verify: dict) -> str:
    """A causal check (`interp.heads.verify`) in one line.

    Reads the keys verify() writes ({"behaviour", "metric", "k", "baseline", "top_k",
    "random_k_mean", "ratio", "claim", ...}); any other dict is shown as its scalars.
    """
    def number(value) -> str:
        return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)

    if {"baseline", "top_k", "random_k_mean"} <= set(verify):
        k = verify.get("k", "k")
        text = (f"{verify.get('behaviour', '')} ({verify.get('metric', '')}): baseline "
                f"{number(verify['baseline'])}, top-{k} {number(verify['top_k'])}, random-{k} "
                f"mean {number(verify['random_k_mean'])}; effect ratio {number(verify.get('ratio'))}")
        if verify.get("claim"):
            verdict = {True: ", holds", False: ", does not hold"}.get(verify.get("claim_holds"), "")
            text += f" (claim: {verify['claim']}{verdict})"
        return text
    return ", ".join(f"{k} = {number(v)}" for k, v in verify.items()
                     if isinstance(v, (int, float, str)) or v is None)


def register_cancel_buttons(app, state, button_type: str, message_id: str, says: str,
                            notice_id: str | None = None) -> None:
    """The callback behind a job table's Cancel buttons ({"type": button_type, "id": job id}):
    cancel that job of `state.jobs` and say so in `message_id` ("...; " + `says`)."""
    from dash import ALL, Input, Output, ctx, no_update

    @app.callback(Output(message_id, "children", allow_duplicate=True),
                  Input({"type": button_type, "id": ALL}, "n_clicks"), prevent_initial_call=True)
    def on_cancel(clicks):
        trigger = ctx.triggered_id
        # The buttons are re-created every poll; only a real click carries n_clicks.
        if not trigger or not any(c for c in clicks or []) or not ctx.triggered[0]["value"]:
            return no_update
        state.jobs.cancel(trigger["id"])
        return notice(f"cancel requested for {trigger['id']}; {says}", id=notice_id)
