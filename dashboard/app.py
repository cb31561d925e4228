"""create_app(model_name, store_path) -> a Dash app; `serve(...)` runs it (what `interp dashboard`
calls).

The server starts answering at once: pages that read the store (heatmaps, runs) work while the
model loads in a background thread, which starts once the first page has been answered (or
after FIRST_PAGE_WAIT_S); pages that need the model say so until it is ready.
"""

from __future__ import annotations

import logging

from dash import Dash, Input, Output, html
from flask import request

from interp.embedded import DEFAULT_MODEL
from interp.store import Store

from dashboard.jobs import JobRunner
from dashboard.layout import error_box, nav_id, parse_query, shell
from dashboard.pages import PAGES
from dashboard.state import AppState, ModelHolder

log = logging.getLogger(__name__)

ROUTES = {page.PATH: page for page in PAGES}
# The start-up model load waits this long at most for the first page to be answered.
FIRST_PAGE_WAIT_S = 5.0
ROUTES["/"] = ROUTES["/heads"]
# Components of the frame around the pages: a callback that fills only these (the router, the
# badge) has not yet shown the page's content.
FRAME_IDS = {"page", "model-badge"} | {nav_id(page) for page in PAGES}


def create_app(model_name: str | None = DEFAULT_MODEL, store_path=None, *, model=None,
               first_run: bool = True) -> Dash:
    """The dashboard app.

    model_name: loaded in the background at start (None: load nothing until the user picks).
    store_path: the results store (default: $INTERP_CACHE/results.sqlite).
    model:      an already loaded `interp.Model` to use instead of loading `model_name`.
    first_run:  start the standard scans of a loaded model the store has no scan of
                (`dashboard.first_run`).
    """
    state = AppState(store=Store(store_path), models=ModelHolder())
    state.jobs = JobRunner(state)
    if first_run:
        from dashboard import first_run as first

        state.models.on_ready(lambda loaded: first.start_if_needed(state, loaded))
    if model is not None:
        state.models.set_model(model)
    elif model_name:
        state.models.load_async(model_name, after=state.page_served, max_wait=FIRST_PAGE_WAIT_S)

    app = Dash(__name__, title="interp dashboard", suppress_callback_exceptions=True,
               update_title=None)
    app.layout = shell(PAGES)
    _register_router(app, state)
    _mark_page_served(app, state)
    for page in PAGES:
        page.register(app, state)
    app.interp_state = state  # for tests and the benchmark; never read by callbacks
    return app


def _register_router(app: Dash, state: AppState) -> None:
    @app.callback(
        Output("page", "children"),
        *[Output(nav_id(page), "className") for page in PAGES],
        Input("url", "pathname"), Input("url", "search"),
    )
    def route(pathname, search):
        page = ROUTES.get(pathname or "/")
        active = [("nav-link active" if link is page else "nav-link") for link in PAGES]
        if page is None:
            known = ", ".join(p for p in ROUTES if p != "/")
            return error_box(f"no page at {pathname!r}; the pages are {known}"), *active
        try:
            return page.layout(state, parse_query(search)), *active
        except Exception as exc:  # a broken page must not take the navigation down with it
            log.exception("rendering %s failed", pathname)
            return error_box(f"this page failed to render: {type(exc).__name__}: {exc}"), *active

    @app.callback(Output("model-badge", "children"), Output("model-badge", "title"),
                  Input("badge-poll", "n_intervals"))
    def badge(_n):
        status = state.models.status()
        if status["state"] == "ready":
            busy = f" · busy: {status['busy']}" if status["busy"] else ""
            failure = status.get("last_failure")
            if failure:
                return ([html.Span("●", className="dot ready"), f" {status['name']}{busy}",
                         html.Span(f" · loading {failure['name']} failed", className="badge-failed")],
                        f"{status['model_id']}; loading {failure['name']} failed: {failure['error']}")
            return [html.Span("●", className="dot ready"), f" {status['name']}{busy}"], status["model_id"]
        if status["state"] == "loading":
            return [html.Span("●", className="dot loading"), f" loading {status['name']} …"], ""
        if status["state"] == "failed":
            return [html.Span("●", className="dot failed"), f" {status['name']} failed"], status["error"]
        return "no model loaded", ""


def _mark_page_served(app: Dash, state: AppState) -> None:
    """Set `state.page_served` (which the start-up model load waits for) once the server has
    answered the first callback that put page content in the browser: any callback but the
    router's and the badge's (FRAME_IDS) that answered with content (200; Dash answers 204 when
    a callback changed nothing)."""
    @app.server.after_request
    def after(response):
        if state.page_served.is_set() or response.status_code != 200 \
                or not request.path.endswith("_dash-update-component"):
            return response
        outputs = (request.get_json(silent=True) or {}).get("outputs")
        outputs = outputs if isinstance(outputs, list) else [outputs]
        ids = {str(output.get("id")) for output in outputs if isinstance(output, dict)}
        if ids and not ids & FRAME_IDS:
            state.page_served.set()
        return response


def serve(model_name: str | None = DEFAULT_MODEL, store_path=None, host: str = "127.0.0.1",
          port: int = 8050, debug: bool = False) -> None:
    """Run the dashboard until interrupted (threaded server: one thread per request)."""
    if logging.getLogger().getEffectiveLevel() > logging.INFO:  # no line per request unless -v
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        logging.getLogger("dash.dash").setLevel(logging.WARNING)
    app = create_app(model_name, store_path)
    log.info("dashboard on http://%s:%d", host, port)
    app.run(host=host, port=port, debug=debug, use_reloader=False, threaded=True)
