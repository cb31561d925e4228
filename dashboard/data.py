"""Read-only views of the results store, shaped for the pages (no analysis: lookups only).

Scores of a complete run never change, so they are cached by (run id, detector); which run is
the latest is asked of the store on every call, so a scan that just finished shows at once.
"""

from __future__ import annotations

from interp.scores import HeadScores
from interp.store import RunRecord

from dashboard.state import AppState


def model_ids(state: AppState) -> list[str]:
    """Model ids with runs in the store, the loaded model's first."""
    ids = []
    loaded = state.models.status()["model_id"]
    if loaded:
        ids.append(loaded)
    for run in state.store.list_runs(limit=1000):
        if run.model_id not in ids:
            ids.append(run.model_id)
    return ids


def default_model_id(state: AppState) -> str | None:
    """The loaded model's id, else the model with the newest run, else None."""
    ids = model_ids(state)
    return ids[0] if ids else None


def complete_runs(state: AppState, model_id: str, kind: str | None = None) -> list[RunRecord]:
    return state.store.list_runs(model_id=model_id, kind=kind, status="complete")


def latest_run_with(state: AppState, model_id: str, detector: str) -> RunRecord | None:
    """The complete run that `Store.latest_scores` would read (newest finished)."""
    runs = [r for r in complete_runs(state, model_id) if detector in r.detectors]
    return max(runs, key=lambda r: r.finished_at or 0.0, default=None)


def scores_of_run(state: AppState, run_id: str, detector: str) -> HeadScores:
    cache = state.caches["scores"]
    key = (run_id, detector)
    scores = cache.get(key)
    if scores is None:
        scores = state.store.head_scores(run_id, detector)
        cache.put(key, scores)
    return scores


def latest_scores(state: AppState, model_id: str, detector: str) -> tuple[HeadScores, RunRecord] | None:
    run = latest_run_with(state, model_id, detector)
    if run is None:
        return None
    return scores_of_run(state, run.id, detector), run


def all_latest_scores(state: AppState, model_id: str) -> dict[str, tuple[HeadScores, RunRecord]]:
    """{detector: (its newest scores, their run)} for every detector run on this model."""
    newest: dict[str, RunRecord] = {}
    for run in complete_runs(state, model_id):
        for detector in run.detectors:
            if detector not in newest or (run.finished_at or 0) > (newest[detector].finished_at or 0):
                newest[detector] = run
    return {d: (scores_of_run(state, r.id, d), r) for d, r in sorted(newest.items())}


def detectors_for(state: AppState, model_id: str | None) -> list[str]:
    return state.store.detectors_for(model_id) if model_id else []


def runs_with(state: AppState, model_id: str, detector: str) -> list[RunRecord]:
    """Complete runs holding scores of `detector` for this model, newest first."""
    runs = [r for r in complete_runs(state, model_id) if detector in r.detectors]
    return sorted(runs, key=lambda r: r.finished_at or 0.0, reverse=True)


def run_label(run: RunRecord, detector: str) -> str:
    """"2026-12-07 15:04 · n_prompts=8, max_tokens=64 · k=5 · 3f2a…" for a run picker."""
    import datetime

    when = datetime.datetime.fromtimestamp(run.finished_at or run.created_at).strftime("%Y-%m-%d %H:%M")
    named = run.params.get("detectors")
    params = named.get(detector, {}) if isinstance(named, dict) else {}
    shown = ", ".join(f"{k}={v}" for k, v in sorted(params.items())
                      if k in ("n_prompts", "max_tokens", "prompts", "epsilon", "windows",
                               "context_lengths", "threshold", "seed"))
    check = f" · check k={run.params['verify_k']}" if run.params.get("verify_k") else ""
    return f"{when} · {shown or 'defaults'}{check} · {run.id[:8]}"
