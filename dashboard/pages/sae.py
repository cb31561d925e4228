"""Sparse autoencoders: each trained SAE's quality figures, and its features (how often each
fires on a corpus, and the contexts where it fires hardest).

SAEs come from the store, as `interp sae train` or `circuits.sae.train_sae(..., store=store)`
saved them (`circuits.sae.io.list_stored_saes`); the feature view runs
`circuits.sae.top_contexts` on the loaded model, the call a notebook makes.
URL: /sae[?run=RUN_ID]
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from dash import Input, Output, State, dcc, html, no_update

from interp.errors import InterpError

from dashboard.layout import error_box, notice, query_string
from dashboard.state import ModelBusy, ModelNotReady

PATH = "/sae"
TITLE = "SAEs"
# The quality figures of `circuits.sae.quality.sae_report`, in the order shown.
QUALITY = [("explained_variance", "explained variance", "{:.3f}"), ("l0", "L0", "{:.1f}"),
           ("dead_fraction", "dead features", "{:.1%}"), ("loss_clean", "loss", "{:.3f}"),
           ("loss_spliced", "loss, SAE spliced in", "{:.3f}"),
           ("loss_increase", "loss increase", "{:+.3f}"),
           ("fraction_loss_recovered", "loss recovered", "{:.1%}")]
WINDOWS = 16          # corpus windows read for the feature view (64 tokens each)
SHOWN_FEATURES = 12   # features listed with their contexts


def _figure(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def sae_rows(store) -> list[dict]:
    """One row per stored SAE (newest first), with its quality figures formatted."""
    from circuits.sae.io import list_stored_saes

    rows = []
    for entry in list_stored_saes(store):
        report = entry.get("report", {})
        hook = entry.get("hook", "?") + ("" if entry.get("head") is None else f"[{entry['head']}]")
        rows.append({"run_id": entry["run_id"], "model_id": entry["model_id"], "hook": hook,
                     "features": entry.get("features"), "k": entry.get("k") or "ReLU",
                     **{key: _figure(report.get(key), fmt) for key, _, fmt in QUALITY}})
    return rows


def layout(state, query: dict) -> html.Div:
    rows = sae_rows(state.store)
    if not rows:
        return html.Div([html.H2("Sparse autoencoders"), notice(
            "No SAE in the store yet. Train one with `interp sae train MODEL --hook "
            "blocks.6.hook_resid_pre` (or circuits.sae.train_sae(..., store=store) in a notebook).",
            id="sae-empty")])
    chosen = query.get("run") if query.get("run") in {r["run_id"] for r in rows} else rows[0]["run_id"]
    columns = ["run_id", "model_id", "hook", "features", "k"] + [key for key, _, _ in QUALITY]
    titles = {key: title for key, title, _ in QUALITY}
    header = html.Tr([html.Th(titles.get(c, c)) for c in columns])
    body = [html.Tr([html.Td(dcc.Link(r[c], href=PATH + query_string(run=r[c])) if c == "run_id"
                             else str(r[c])) for c in columns],
                    className="selected" if r["run_id"] == chosen else "")
            for r in rows]
    return html.Div([
        html.H2("Sparse autoencoders"),
        html.P("Quality on held-out text: explained variance of the activations, L0 (features "
               "active per token), features that never fired, and the model's next-token loss "
               "with the SAE's reconstruction spliced in."),
        html.Table([header, *body], id="sae-table", className="table"),
        html.H3(f"Features of {chosen}"),
        html.Div([
            html.Label(["features (comma-separated; empty: the most frequent under 10%)",
                        dcc.Input(id="sae-features", type="text", placeholder="e.g. 12, 40")],
                       className="control wide"),
            html.Button("Read the corpus", id="sae-run", className="primary"),
        ], className="controls"),
        dcc.Store(id="sae-run-id", data=chosen),
        dcc.Loading(html.Div(id="sae-result"), type="circle", delay_show=300),
    ])


def _parse_features(text: str | None, d_sae: int) -> list[int] | None:
    from interp.errors import InvalidInput

    if not text or not text.strip():
        return None
    try:
        features = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise InvalidInput(f"features must be integers separated by commas, got {text!r}") from None
    bad = [f for f in features if not 0 <= f < d_sae]
    if bad:
        raise InvalidInput(f"features {bad} do not exist: this SAE has features 0..{d_sae - 1}")
    return features


def feature_view(state, run_id: str, features_text: str | None) -> html.Div:
    """Activation density of every feature on the corpus, and the top contexts of the chosen
    (or most frequent rarely-firing) features."""
    from circuits.sae.contexts import top_contexts
    from circuits.sae.io import load_stored_sae

    sae, _ = load_stored_sae(state.store, run_id)
    wanted = _parse_features(features_text, sae.d_sae)
    with state.models.use(timeout=5.0, purpose="SAE feature contexts") as model:
        if model.model_id != sae.cfg.model_id:
            raise ModelNotReady(f"this SAE was trained on {sae.cfg.model_id}; load that model on "
                                f"the Model page (loaded: {model.model_id})")
        found = top_contexts(model, sae, list(range(sae.d_sae)), n_windows=WINDOWS)
    density = [found[f]["density"] for f in range(sae.d_sae)]
    if wanted is None:
        rare = [f for f in range(sae.d_sae) if 0 < density[f] < 0.1]
        wanted = sorted(rare, key=lambda f: -density[f])[:SHOWN_FEATURES]
    histogram = go.Figure(go.Histogram(x=[math.log10(d) for d in density if d > 0], nbinsx=40))
    histogram.update_layout(title=f"activation density ({sum(d == 0 for d in density)} of "
                                  f"{sae.d_sae} features never fired)",
                            xaxis_title="log10 share of positions where the feature fires",
                            yaxis_title="features", height=300, margin=dict(t=40, b=40))
    cards = []
    for feature in wanted:
        contexts = found[feature]["contexts"]
        cards.append(html.Div([
            html.H4(f"feature {feature}: fires on {density[feature]:.2%} of positions"),
            html.Ul([html.Li([html.Span(f"{c['activation']:.2f}  ", className="muted"),
                              c["text"][:-len(c["token"])] if c["token"] else c["text"],
                              html.B(c["token"])]) for c in contexts]
                    or [html.Li("never fired on these windows")]),
        ], className="panel feature"))
    return html.Div([dcc.Graph(figure=histogram, id="sae-density"),
                     html.Div(cards, id="sae-contexts")])


def register(app, state) -> None:
    @app.callback(Output("sae-result", "children"), Input("sae-run", "n_clicks"),
                  State("sae-run-id", "data"), State("sae-features", "value"),
                  prevent_initial_call=True)
    def run(clicks, run_id, features):
        if not clicks:
            return no_update
        try:
            return feature_view(state, run_id, features)
        except (ModelBusy, ModelNotReady) as exc:
            return notice(str(exc))
        except InterpError as exc:
            return error_box(str(exc), id="sae-error")
