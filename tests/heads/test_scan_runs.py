"""`run_scan` with a store: each detector is stored as it finishes, and a cancel request from
outside (the dashboard, another process) stops the scan inside its forward, keeping what it
finished."""

from __future__ import annotations

import pytest
import torch

from interp.heads.scan import run_scan
from interp.store import RunCancelled

SMALL = {"n_prompts": 2, "max_tokens": 32}


def test_a_cancelled_scan_keeps_the_detectors_it_finished(smollm2, tmp_store):
    torch.set_num_threads(1)
    seen = []

    def progress(fraction, message):
        seen.append(message)
        if message.startswith("duplicate_token") and not tmp_store.list_runs(status="cancelled"):
            running = tmp_store.list_runs(status="running")
            tmp_store.request_cancel(running[0].id)  # as the dashboard's Cancel does

    with pytest.raises(RunCancelled):
        run_scan(smollm2, "previous_token,duplicate_token",
                 params={"previous_token": SMALL, "duplicate_token": SMALL},
                 store=tmp_store, progress=progress)
    runs = {next(iter(r.params["detectors"])): r
            for r in tmp_store.list_runs(kind="scan")}
    assert runs["previous_token"].status == "complete"
    assert runs["duplicate_token"].status == "cancelled"
    assert runs["previous_token"].params["scan"] == runs["duplicate_token"].params["scan"]
    assert tmp_store.latest_scores(smollm2.model_id, "previous_token") is not None
    assert tmp_store.latest_scores(smollm2.model_id, "duplicate_token") is None
