"""The first run: when a model is loaded whose scans the store lacks, start the standard scans
(`interp.heads.scan.STANDARD_SCANS`: every detector but safety, sized for ~3 minutes on 2 CPU
cores) as one background job, so the Heads page fills itself instead of showing a blank
heatmap. Each detector is stored as it finishes, and the Heads page polls while the job runs.

Nothing starts when the store already holds a scan run of the model (complete, running or
failed: the user has been here), or when the app was created with first_run=False.
"""

from __future__ import annotations

import logging

from dashboard import detectors
from dashboard.state import AppState

log = logging.getLogger(__name__)

LABEL = "first run: standard scans"


def start_if_needed(state: AppState, model) -> object | None:
    """Submit the standard scans for `model` if the store has no scan of it; the job or None."""
    from interp.heads.scan import standard_scan_params

    if state.store.list_runs(model_id=model.model_id, kind="scan", limit=1):
        return None
    if any(job.label.startswith(LABEL) for job in state.jobs.active()):
        return None
    params = standard_scan_params()
    names = list(params)
    log.info("no scans of %s in the store: starting the standard scans", model.model_id)
    return state.jobs.submit("scan", f"{LABEL} ({', '.join(names)})",
                             detectors.scan_task(names, params), parts=names,
                             model_id=model.model_id)


def active_job(state: AppState, model_id: str | None):
    """The first-run job of `model_id` that is queued or running, or None."""
    for job in state.jobs.active():
        if job.label.startswith(LABEL) and job.model_id == model_id:
            return job
    return None
