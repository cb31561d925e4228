"""Activation, path and attribution patching (see each module's docstring).

    from interp.patching import activation_patch, attribution_patch, path_patch
    from interp.tasks.ioi import ioi_prompts

    prompts = ioi_prompts(model, n=16)
    heads = activation_patch(model, prompts, "heads")     # PatchResult [layer, head], 0..1
    fast = attribution_patch(model, prompts, "heads")     # same axes, gradient x difference

Every result is a `PatchResult` (0 = corrupted, 1 = clean), saved with `result.save(store)`;
`patch_task(model, store, "ioi", ...)` builds a task's prompts, patches and stores in one call.
"""

from interp.patching.activation import activation_patch
from interp.patching.components import COMPONENTS
from interp.patching.metrics import METRICS, MetricTargets, answer_prob, kl_from_clean, logit_diff
from interp.patching.prompts import patching_prompts
from interp.patching.results import PatchResult
from interp.patching.task_run import patch_task

__all__ = [
    "COMPONENTS",
    "METRICS",
    "MetricTargets",
    "PatchResult",
    "activation_patch",
    "answer_prob",
    "kl_from_clean",
    "logit_diff",
    "patch_task",
    "patching_prompts",
]
