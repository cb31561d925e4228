"""Patching on a named task, saved as one store run: what `interp patch` and the dashboard's
"run patching" job both do.

    result, run_id = patch_task(model, store, component="heads", method="attribution")
"""

from __future__ import annotations

from interp.errors import InvalidInput
from interp.models import Model
from interp.patching.results import PatchResult

TASKS = ("ioi",)
METHODS = ("activation", "attribution")


def patch_task(model: Model, store, task: str = "ioi", component: str = "heads",
               method: str = "activation", direction: str = "noise", corruption: str = "abc",
               metric: str = "logit_diff", n_prompts: int = 16, seed: int = 0,
               batch_size: int = 64) -> tuple[PatchResult, str]:
    """Build the task's clean/corrupted prompts, patch `component` with `method`, and write the
    result (a "patch" run, complete or not written at all) to `store`. Returns (result, run id).

    direction: "noise" (corrupted into clean) or "denoise" (clean into corrupted).
    corruption: IOI's "abc" (three fresh names, the paper's) or "s2" (only the repeated name).
    """
    from interp.patching.activation import activation_patch
    from interp.patching.attribution import attribution_patch
    from interp.tasks.ioi import ioi_prompts

    if task not in TASKS:
        raise InvalidInput(f"unknown patching task {task!r}; tasks: {', '.join(TASKS)}")
    if method not in METHODS:
        raise InvalidInput(f"unknown patching method {method!r}; use one of {', '.join(METHODS)}")
    prompts = ioi_prompts(model, n=n_prompts, seed=seed, corruption=corruption)
    patcher = activation_patch if method == "activation" else attribution_patch
    params = {"task": task, "component": component, "method": method, "direction": direction,
              "corruption": corruption, "metric": metric, "n_prompts": n_prompts, "seed": seed}
    with store.run("patch", model.model_id, params, prompts.hash) as run:
        result = patcher(model, prompts, component, metric=metric, direction=direction,
                         batch_size=batch_size, progress=run.progress)
        result.params.update({"task": task, "corruption": corruption, "seed": seed})
        result.write_to(run)
    return result, run.id
