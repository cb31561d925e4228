"""Run several detectors (and their causal checks) as one stored scan: what the CLI's `interp scan`,
the dashboard and notebooks call.

    result = run_scan(model, ["induction", "sink"], verify_k=5, store=Store())
    result.scores["induction"].top(10); result.run_id; scan_json(model, result.scores)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from interp.heads.base import Progress, params_json, sub_progress
from interp.heads.registry import parse_detectors
from interp.heads.verify import verify
from interp.models import Model
from interp.scores import HeadScores


@dataclass
class ScanResult:
    scores: dict[str, HeadScores]      # detector name -> scores (with .verify when checked)
    run_id: str | None                 # the store run, when a store was given


def run_scan(model: Model, detectors: str | list[str], params: dict[str, dict] | None = None,
             verify_k: int | None = None, ablation: str = "mean", n_random: int = 5,
             verify_prompts: int | None = None, verify_tokens: int | None = None,
             store=None, progress: Progress | None = None, prompts=None) -> ScanResult:
    """Scan `detectors` ("induction,sink" or a list) on `model`.

    params:   {detector name: {param: value}} overrides of each detector's defaults.
    verify_k: also run `verify(model, scores, k=verify_k, ablation=...)` per detector, on
              `verify_prompts` prompts of `verify_tokens` tokens (default: verify's small sets).
    store:    an `interp.store.Store`: the scan becomes one run (kind "scan") holding one
              HeadScores per detector, visible only once every detector finished; its progress
              is recorded there and a cancel request stops the scan (RunCancelled).
    prompts:  the same prompts for every detector (default: each detector's own).
    """
    chosen = parse_detectors(detectors)
    params = params or {}
    unknown = sorted(set(params) - {d.name for d in chosen})
    if unknown:
        from interp.errors import InvalidInput

        raise InvalidInput(f"parameters given for detector(s) {unknown} that are not being run "
                           f"({', '.join(d.name for d in chosen)})")
    resolved = {d.name: d.make_params(params.get(d.name)) for d in chosen}
    run_params = {"detectors": {name: params_json(p) for name, p in resolved.items()},
                  "verify_k": verify_k, "ablation": ablation if verify_k else None,
                  "verify_prompts": verify_prompts, "verify_tokens": verify_tokens}

    def execute(report: Progress) -> dict[str, HeadScores]:
        results = {}
        steps = len(chosen) * (2 if verify_k else 1)
        step = 0
        for detector in chosen:
            scores = detector.scan(model, prompts=prompts, params=resolved[detector.name],
                                   progress=_labelled(sub_progress(report, step / steps, (step + 1) / steps),
                                                      detector.name))
            step += 1
            if verify_k:
                scores.verify = verify(model, scores, k=verify_k, ablation=ablation, n_random=n_random,
                                       n_prompts=verify_prompts, max_tokens=verify_tokens,
                                       progress=_labelled(sub_progress(report, step / steps, (step + 1) / steps),
                                                          f"verify {detector.name}"))
                step += 1
            results[detector.name] = scores
        report(1.0, "done")
        return results

    if store is None:
        return ScanResult(execute(progress or (lambda f, m: None)), None)
    with store.run("scan", model.model_id, run_params, _combined_hash(chosen, resolved)) as run:
        def report(fraction: float, message: str) -> None:
            run.progress(fraction, message)          # raises RunCancelled on a cancel request
            if progress is not None:
                progress(fraction, message)
        results = execute(report)
        for scores in results.values():
            run.add_scores(scores)
        run.set_result({"model": model.model_id, "detectors": list(results),
                        "top": {n: s.top(10) for n, s in results.items()}})
    return ScanResult(results, run.id)


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
