"""Metrics a patching experiment measures on the next-token logits, one value per row.

A metric is any callable `fn(logits, targets) -> [rows]`:
    logits:  [rows, vocab] float, the next-token logits at each row's last real token;
    targets: `MetricTargets` for the same rows (answer ids, wrong-answer ids, the clean run's
             logits for KL).
The three built in (by name): "logit_diff" (answer minus wrong answer, Wang et al.'s IOI metric),
"prob" (probability of the answer) and "kl" (KL(clean || patched) of the next-token
distributions; 0 on the clean run). All are differentiable, so attribution patching uses them
too. Patchers average a metric over prompts and normalize it so 0 = corrupted run, 1 = clean
run (`normalize`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from interp.errors import InvalidInput


@dataclass
class MetricTargets:
    """What a metric compares logits with, for a set of rows (indexed like the logits)."""

    answers: torch.Tensor | None = None  # [rows] long
    wrong_answers: torch.Tensor | None = None  # [rows] long
    clean_logits: torch.Tensor | None = None  # [rows, vocab], for KL

    def rows(self, index: torch.Tensor) -> "MetricTargets":
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return MetricTargets(pick(self.answers), pick(self.wrong_answers), pick(self.clean_logits))


MetricFn = Callable[[torch.Tensor, MetricTargets], torch.Tensor]


def logit_diff(logits: torch.Tensor, targets: MetricTargets) -> torch.Tensor:
    """[rows]: logit of the answer minus logit of the wrong answer (IO minus S for IOI)."""
    _need(targets.answers, "answers", "logit_diff")
    _need(targets.wrong_answers, "wrong_answers", "logit_diff")
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, targets.answers.to(logits.device)] - logits[rows, targets.wrong_answers.to(logits.device)]


def answer_prob(logits: torch.Tensor, targets: MetricTargets) -> torch.Tensor:
    """[rows]: softmax probability of the answer token."""
    _need(targets.answers, "answers", "prob")
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits.float().softmax(-1)[rows, targets.answers.to(logits.device)]


def kl_from_clean(logits: torch.Tensor, targets: MetricTargets) -> torch.Tensor:
    """[rows]: KL(clean || patched) of the next-token distributions, in nats (0 = clean)."""
    _need(targets.clean_logits, "clean_logits", "kl")
    clean = targets.clean_logits.to(logits.device).float().log_softmax(-1)
    patched = logits.float().log_softmax(-1)
    return (clean.exp() * (clean - patched)).sum(-1)


METRICS: dict[str, MetricFn] = {"logit_diff": logit_diff, "prob": answer_prob, "kl": kl_from_clean}


def _need(value, field: str, metric: str) -> None:
    if value is None:
        raise InvalidInput(f"metric {metric!r} needs {field}; use a prompt set that has them "
                           "(e.g. interp.tasks.ioi.ioi_prompts) or another metric")


def resolve_metric(metric: str | MetricFn) -> tuple[str, MetricFn]:
    """(name, fn) of a metric given by name or as a callable."""
    if callable(metric):
        return getattr(metric, "__name__", "custom"), metric
    if metric not in METRICS:
        raise InvalidInput(f"unknown metric {metric!r}; use one of {sorted(METRICS)} or pass a "
                           "callable fn(logits [rows, vocab], targets) -> [rows]")
    return metric, METRICS[metric]


def normalize(value, clean: float, corrupted: float):
    """(value - corrupted) / (clean - corrupted): 0 = the corrupted run, 1 = the clean run."""
    gap = clean - corrupted
    if abs(gap) < 1e-9:
        raise InvalidInput(
            f"the metric is the same on clean and corrupted prompts ({clean:.4g}); nothing to "
            "patch. Check the corruption changes the answer, or pick another metric"
        )
    return (value - corrupted) / gap
