"""Tasks for circuit discovery: prompts with their corruption and the metric, split into
discovery and evaluation prompts that share no prompt.

    task = check_task("greater-than")               # before the model loads: name or a JSONL file
    discover, evaluate = task_split(model, task, n_discover=32, n_eval=32)
    discover.metric(final_logits, rows)             # [rows] metric per prompt

Tasks:
- "ioi": `interp.tasks.ioi.ioi_prompts` (ABC corruption); metric logit(IO) - logit(S).
- "greater-than": `interp.tasks.greater_than` (the tens digit; see its docstring for why);
  metric p(after) - p(not after).
- a .jsonl file of {"clean", "corrupted", "answer", "wrong"} pairs (`interp.tasks.pairs`);
  metric logit(answer) - logit(wrong).
Generated tasks draw n_discover + n_eval prompts with one seed and drop evaluation prompts whose
text also appears among the discovery prompts; a file is split in file order, the first
n_discover pairs (default: half) for discovery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from interp.errors import InvalidInput
from interp.tasks.base import PromptSet

TASKS = ("ioi", "greater-than")


@dataclass
class Task:
    """prompts (with `corrupted`) and metric(final logits [b, vocab], rows [b] long) -> [b]."""

    name: str
    prompts: PromptSet
    metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass(frozen=True)
class TaskSpec:
    """What the user asked for, checked without a model: a built-in name or a pairs file."""

    name: str
    pairs: list | None = None


def check_task(task: str) -> TaskSpec:
    """A built-in task name or a readable JSONL pairs file (read and checked now)."""
    if task in TASKS:
        return TaskSpec(task)
    if task.endswith(".jsonl") or Path(task).expanduser().is_file():
        from interp.tasks.pairs import read_pairs

        return TaskSpec(Path(task).name, read_pairs(task))
    raise InvalidInput(f"unknown task {task!r}; use one of {TASKS} or a .jsonl file of "
                       '{"clean", "corrupted", "answer", "wrong"} pairs')


def logit_diff_metric(prompts: PromptSet) -> Callable:
    answers, wrong = prompts.answers, prompts.wrong_answers

    def metric(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        index = torch.arange(logits.shape[0])
        return logits[index, answers[rows]] - logits[index, wrong[rows]]
    return metric


def greater_than_metric(prompts: PromptSet) -> Callable:
    from interp.tasks.greater_than import probability_difference

    tens = torch.tensor([m["tens"] for m in prompts.metadata])
    digits = torch.tensor(prompts.metadata[0]["digit_ids"])

    def metric(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return probability_difference(logits, tens[rows], digits)
    return metric


def _task(name: str, prompts: PromptSet) -> Task:
    metric = greater_than_metric(prompts) if name == "greater-than" else logit_diff_metric(prompts)
    return Task(name, prompts, metric)


def _take(prompts: PromptSet, rows: list[int]) -> PromptSet:
    """The prompts at `rows` (any order), re-padded to their own width."""
    from interp.tokens import TokenBatch

    lists, corrupt = prompts.tokens.token_lists(), prompts.corrupted.token_lists()
    pad = prompts.tokens.pad_id
    return PromptSet(
        name=prompts.name, tokens=TokenBatch.from_lists([lists[r] for r in rows], pad),
        texts=[prompts.texts[r] for r in rows], answers=prompts.answers[rows],
        wrong_answers=prompts.wrong_answers[rows],
        corrupted=TokenBatch.from_lists([corrupt[r] for r in rows], pad),
        metadata=[prompts.metadata[r] for r in rows])


def task_split(model, spec: TaskSpec | str, n_discover: int = 32, n_eval: int = 32,
               seed: int = 0) -> tuple[Task, Task]:
    """(discovery task, evaluation task) with no prompt text in common (module doc)."""
    if isinstance(spec, str):
        spec = check_task(spec)
    if n_discover < 1 or n_eval < 1:
        raise InvalidInput(f"need at least one discovery and one evaluation prompt, got "
                           f"n_discover={n_discover}, n_eval={n_eval}")
    if spec.pairs is not None:
        from interp.tasks.pairs import pairs_prompts

        prompts = pairs_prompts(model, spec.pairs, name=spec.name)
        cut = min(n_discover, len(prompts) // 2) if n_discover else len(prompts) // 2
        cut = max(1, cut)
        seen = set(prompts.texts[:cut])
        rest = [r for r in range(cut, len(prompts)) if prompts.texts[r] not in seen][:n_eval]
        if not rest:
            raise InvalidInput(f"{spec.name}: no pair left for evaluation after the {cut} "
                               "discovery pairs; add pairs whose clean prompts differ")
        return _task(spec.name, _take(prompts, list(range(cut)))), _task(spec.name, _take(prompts, rest))
    if spec.name == "ioi":
        from interp.tasks.ioi import ioi_prompts

        prompts = ioi_prompts(model, n=2 * (n_discover + n_eval), seed=seed)
    else:
        from interp.tasks.greater_than import greater_than_prompts

        prompts = greater_than_prompts(model, n=4 * (n_discover + n_eval), seed=seed)
    first, seen = [], set()
    for r, text in enumerate(prompts.texts):
        if text not in seen and len(first) < n_discover:
            first.append(r)
            seen.add(text)
    rest, used = [], set(seen)
    for r, text in enumerate(prompts.texts):
        if r not in first and text not in used and len(rest) < n_eval:
            rest.append(r)
            used.add(text)
    if len(rest) < n_eval:
        raise InvalidInput(f"{spec.name}: only {len(rest)} distinct evaluation prompts beyond the "
                           f"{n_discover} discovery prompts; ask for fewer")
    return _task(spec.name, _take(prompts, first)), _task(spec.name, _take(prompts, rest))
