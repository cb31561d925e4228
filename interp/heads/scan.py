"""Run several detectors (and their causal checks), each stored as its run as soon as it finishes:
what the CLI's `interp scan`, the dashboard and notebooks call.

    result = run_scan(model, ["induction", "sink"], verify_k=5, store=Store())
    result.scores["induction"].top(10); result.run_id; scan_json(model, result.scores)
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field

from interp.errors import InvalidInput
from interp.forward import stop_when
from interp.heads.base import Progress, no_progress, params_json, sub_progress
from interp.heads.registry import parse_detectors
from interp.heads.verify import check_verify_options, verify
from interp.models import Model
from interp.scores import HeadScores


# The standard scans a first dashboard run starts on a model the store has no scan of: every
# detector but safety (which needs a model that refuses, and minutes per layer), sized to
# finish in about 3 minutes on 2 CPU cores for a 135M model, cheapest first so the first
# heatmaps appear within seconds. Scores at these sizes rank heads as the full scans do for the
# clear-cut heads; run larger scans for numbers to quote.
STANDARD_SCANS: dict[str, dict] = {
    "previous_token": {"n_prompts": 4, "max_tokens": 128},
    "duplicate_token": {"n_prompts": 4, "max_tokens": 128},
    "induction": {"n_prompts": 4, "max_tokens": 128},
    "sink": {"n_prompts": 4, "max_tokens": 256, "min_queries": 16},
    "streaming": {"n_prompts": 2, "max_tokens": 384, "windows": (64,)},
    "retrieval": {"context_lengths": (512,), "depths": (0.0, 50.0, 100.0), "n_needles": 2,
                  "max_new_tokens": 24},
}


def standard_scan_params() -> dict[str, dict]:
    """{detector: params} of the standard scans (STANDARD_SCANS, checked by each detector),
    in the order they run."""
    from interp.heads.registry import get_detector

    return {name: params_json(get_detector(name).make_params(dict(values)))
            for name, values in STANDARD_SCANS.items()}


@dataclass
class ScanResult:
    scores: dict[str, HeadScores]      # detector name -> scores (with .verify when checked)
    run_id: str | None                 # the last detector's store run, when a store was given
    run_ids: dict[str, str] = field(default_factory=dict)  # detector name -> its store run


# How often a stored scan asks the store whether Cancel was pressed (from the dashboard or
# another process), between the checks at every transformer block (`interp.forward.stop_when`).
CANCEL_POLL_S = 0.5


def run_scan(model: Model, detectors: str | list[str], params: dict[str, dict] | None = None,
             verify_k: int | None = None, ablation: str = "mean", n_random: int = 5,
             verify_prompts: int | None = None, verify_tokens: int | None = None,
             store=None, progress: Progress | None = None, prompts=None) -> ScanResult:
    """Scan `detectors` ("induction,sink" or a list) on `model`.

    params:   {detector name: {param: value}} overrides of each detector's defaults (checked,
              bounds included, before anything runs).
    verify_k: also run `verify(model, scores, k=verify_k, ablation=...)` per detector, on
              `verify_prompts` prompts of `verify_tokens` tokens (default: verify's small sets).
    store:    an `interp.store.Store`: each detector becomes one run (kind "scan", its scores and
              causal check), complete as soon as that detector finishes, so an interrupted scan
              keeps the detectors it finished. The runs of one call share params["scan"]. Progress
              is recorded there, and a cancel request (`store.request_cancel`) stops the scan
              within one transformer block (RunCancelled; the detector running is recorded as
              cancelled).
    prompts:  the same prompts for every detector (default: each detector's own).
    """
    chosen = parse_detectors(detectors)
    params = params or {}
    unknown = sorted(set(params) - {d.name for d in chosen})
    if unknown:
        raise InvalidInput(f"parameters given for detector(s) {unknown} that are not being run "
                           f"({', '.join(d.name for d in chosen)})")
    if verify_k:
        check_verify_options(verify_k, ablation, n_random, verify_prompts, verify_tokens)
    resolved = {d.name: d.make_params(params.get(d.name)) for d in chosen}
    group = uuid.uuid4().hex[:12]
    common = {"verify_k": verify_k, "ablation": ablation if verify_k else None,
              "verify_prompts": verify_prompts, "verify_tokens": verify_tokens,
              "scan": group, "scan_detectors": [d.name for d in chosen]}
    results: dict[str, HeadScores] = {}
    run_ids: dict[str, str] = {}
    steps = len(chosen)
    for index, detector in enumerate(chosen):
        outer = sub_progress(progress, index / steps, (index + 1) / steps) if progress else None
        if store is None:
            results[detector.name] = _scan_one(model, detector, resolved[detector.name], prompts,
                                               verify_k, ablation, n_random, verify_prompts,
                                               verify_tokens, outer or no_progress)
            continue
        run_params = {"detectors": {detector.name: params_json(resolved[detector.name])}, **common}
        with store.run("scan", model.model_id, run_params,
                       _combined_hash([detector], resolved)) as run, \
                stop_when(_cancel_requested(store, run.id)):
            def report(fraction: float, message: str, run=run, outer=outer) -> None:
                run.progress(fraction, message)      # raises RunCancelled on a cancel request
                if outer is not None:
                    outer(fraction, message)
            scores = _scan_one(model, detector, resolved[detector.name], prompts, verify_k,
                               ablation, n_random, verify_prompts, verify_tokens, report)
            run.add_scores(scores)
            run.set_result({"model": model.model_id, "detectors": [detector.name],
                            "top": {detector.name: scores.top(10)}})
        results[detector.name], run_ids[detector.name] = scores, run.id
    if progress is not None:
        progress(1.0, "done")
    last = run_ids[chosen[-1].name] if run_ids else None
    return ScanResult(results, last, run_ids)


def _scan_one(model, detector, params, prompts, verify_k, ablation, n_random, verify_prompts,
              verify_tokens, report: Progress) -> HeadScores:
    """One detector's scan, then its causal check when verify_k (progress: half each)."""
    split = 0.5 if verify_k else 1.0
    scores = detector.scan(model, prompts=prompts, params=params,
                           progress=_labelled(sub_progress(report, 0.0, split), detector.name))
    if verify_k:
        scores.verify = verify(model, scores, k=verify_k, ablation=ablation, n_random=n_random,
                               n_prompts=verify_prompts, max_tokens=verify_tokens,
                               progress=_labelled(sub_progress(report, split, 1.0),
                                                  f"verify {detector.name}"))
    report(1.0, f"{detector.name}: done")
    return scores


def _cancel_requested(store, run_id: str):
    """A `stop_when` callable: has a cancel been requested for the run? (asks the store at
    most every CANCEL_POLL_S seconds; the forward calls it before every block)."""
    last = [0.0, False]

    def should_stop() -> bool:
        now = time.monotonic()
        if not last[1] and now - last[0] >= CANCEL_POLL_S:
            last[0], last[1] = now, store.cancel_requested(run_id)
        return last[1]
    return should_stop


def _labelled(progress: Progress, label: str) -> Progress:
    return lambda fraction, message: progress(fraction, f"{label}: {message}")


def _combined_hash(detectors, resolved) -> str:
    digest = hashlib.sha256()
    for d in detectors:
        digest.update(repr((d.name, params_json(resolved[d.name]))).encode())
    return digest.hexdigest()[:16]


def scan_json(model: Model, scores: dict[str, HeadScores], top: int = 10) -> dict:
    """The scan JSON other tools read:
    {"model", "model_id", "n_layers", "n_heads", "detectors": {name: {"scores": [[...] * H] * L,
    "params", "top": [{"layer", "head", "score"}], "verify": {...} or null, "info"}}}."""
    return {
        "model": model.name, "model_id": model.model_id,
        "n_layers": model.n_layers, "n_heads": model.n_heads,
        "detectors": {name: {"scores": s.scores.tolist(), "params": s.params, "top": s.top(top),
                             "verify": s.verify, "prompt_hash": s.prompt_hash, "info": s.info}
                      for name, s in scores.items()},
    }
