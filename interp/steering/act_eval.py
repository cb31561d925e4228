"""ACT on a classification task, start to end: what `interp calibrate` and `interp evaluate` run.

    files = TaskFiles.load(eval="test.jsonl", train="train.jsonl", dev="dev.jsonl", shots=4)
    report, calibration = calibrate_task(model, files)     # baseline / all heads / searched
    report = evaluate_task(model, files, calibration)       # a saved calibration on any task

`TaskFiles.load` reads and checks every file (exists, format, columns, labels, enough train
examples for the shots) and needs no model, so front ends call it before the model loads.
The reports are the JSON the issue fixes: {"model", "task", "n", "shots", "baseline":
{"accuracy", "ci95"}, "calibrated": {...}, "heads": [[layer, head], ...], "tau", "beta"}, and
`calibrate` adds "all_heads".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from interp.errors import InvalidInput
from interp.tasks.icl import Accuracy, Example, ICLTask, evaluate, load_task, sample
from kernels import AttentionEdit, SinkCalibration

Progress = Callable[[float, str], None]

# Sizes of a head search, checked the same way for `interp calibrate` and the dashboard's form:
# the upper bounds keep one search within about an hour on 2 CPU cores.
SEARCH_BOUNDS = {"shots": (0, 16), "n_calibration": (1, 512), "n_dev": (1, 512),
                 "n_eval": (1, 2000), "screen": (0, 64)}
SEARCH_DEFAULTS = {"shots": 0, "n_calibration": 32, "n_dev": 32, "n_eval": 200, "screen": 16}


def check_search_sizes(spelling: Callable[[str], str] = str, **sizes) -> dict[str, int]:
    """Form values (text, numbers or None = the default) -> checked ints, or InvalidInput naming
    the field (as `spelling` writes it, e.g. as a CLI flag) and its bounds. Keys: those of
    SEARCH_BOUNDS."""
    unknown = set(sizes) - set(SEARCH_BOUNDS)
    if unknown:
        raise InvalidInput(f"unknown search sizes {sorted(unknown)}; use {sorted(SEARCH_BOUNDS)}")
    checked = {}
    for name, (lo, hi) in SEARCH_BOUNDS.items():
        value = sizes.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            checked[name] = SEARCH_DEFAULTS[name]
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"{spelling(name)} must be a whole number in [{lo}, {hi}], "
                               f"got {value!r}") from None
        if not number.is_integer() or not lo <= number <= hi:
            raise InvalidInput(f"{spelling(name)} must be a whole number in [{lo}, {hi}], "
                               f"got {value!r}")
        checked[name] = int(number)
    return checked


@dataclass
class TaskFiles:
    """A task's examples: eval (scored), train (demonstrations, calibration set), dev (the
    search's stop). `paths` maps each split to its file."""

    task: ICLTask
    eval: list[Example]
    train: list[Example]
    dev: list[Example]
    shots: int
    paths: dict

    @classmethod
    def load(cls, eval: str | Path, train: str | Path | None = None, dev: str | Path | None = None,
             fmt: str | None = None, shots: int = 0, text_col: str = "text",
             label_col: str = "label", need_dev: bool = False, limit: int | None = None,
             seed: int = 0) -> "TaskFiles":
        """Load and check the files (no model needed). The label set is the train file's when
        there is one; `limit` keeps that many eval examples (a seeded draw)."""
        if shots < 0:
            raise InvalidInput(f"--shots must be >= 0, got {shots}")
        if shots and train is None:
            raise InvalidInput(f"{shots}-shot prompts draw demonstrations from a train split: "
                               "give --train FILE (or --shots 0)")
        if need_dev and (train is None or dev is None):
            raise InvalidInput("the head search needs --train FILE (calibration set) and --dev "
                               "FILE (its stop), disjoint from --eval")
        for name, other in (("--train", train), ("--dev", dev)):
            if other is not None and Path(other).resolve() == Path(eval).resolve():
                raise InvalidInput(f"--eval and {name} are the same file: score on examples the "
                                   "demonstrations and the search never saw (e.g. SST-2 test, "
                                   "not train/dev)")
        options = dict(fmt=fmt, text_col=text_col, label_col=label_col)
        task, train_set, dev_set = None, [], []
        if train is not None:
            task, train_set = load_task(train, **options)
        if dev is not None:
            task, dev_set = load_task(dev, task=task, **options)
        task, eval_set = load_task(eval, task=task, **options)
        if shots and len(train_set) < shots + 1:
            raise InvalidInput(f"{shots}-shot prompts need more than {shots} train examples; "
                               f"{train} has {len(train_set)}: lower --shots")
        paths = {"eval": str(eval), "train": str(train) if train else None,
                 "dev": str(dev) if dev else None}
        return cls(task, sample(eval_set, limit, seed), train_set, dev_set, shots, paths)


def _block(result: Accuracy | None) -> dict | None:
    return None if result is None else {"accuracy": result.accuracy, "ci95": list(result.ci95)}


def all_heads_edit(model, tau: float = 0.1, beta: float = 0.4) -> AttentionEdit:
    """ACT on every head of the model (the paper's ablation: calibration without a search)."""
    heads = tuple((l, h) for l in range(model.n_layers) for h in range(model.n_heads))
    return AttentionEdit((SinkCalibration(heads=heads, beta=beta, tau=tau),))


def evaluate_task(model, files: TaskFiles, calibration=None, seed: int = 0, batch_size: int = 8,
                  progress: Progress | None = None) -> dict:
    """The report of `interp evaluate`: baseline and (with a `Calibration`) calibrated accuracy
    on the eval examples; per-class counts under "per_class" of each block's Accuracy."""
    edit = calibration.edit(model) if calibration is not None else None
    run = dict(train=files.train, shots=files.shots, seed=seed, batch_size=batch_size)
    n_runs = 2 if edit is not None else 1
    baseline = evaluate(model, files.task, files.eval,
                        progress=_part(progress, 0, n_runs, "baseline"), **run)
    calibrated = None
    if calibration is not None:
        calibrated = baseline if edit is None else evaluate(
            model, files.task, files.eval, edit=edit,
            progress=_part(progress, 1, n_runs, "calibrated"), **run)
    report = {"model": model.name, "task": files.task.name, "n": len(files.eval),
              "shots": files.shots, "baseline": _block(baseline), "calibrated": _block(calibrated),
              "heads": [list(h) for h in calibration.heads] if calibration else [],
              "tau": calibration.tau if calibration else None,
              "beta": calibration.beta if calibration else None}
    report["_per_class"] = {"baseline": baseline.per_class,
                            "calibrated": calibrated.per_class if calibrated else None}
    return report


def calibrate_task(model, files: TaskFiles, seed: int = 0, n_calibration: int = 32,
                   n_dev: int = 32, batch_size: int = 8, progress: Progress | None = None,
                   screen: int | None = 16):
    """Search heads on train/dev, then score baseline, ACT on all heads and ACT on the searched
    heads on the eval examples. Returns (report, Calibration)."""
    from interp.steering.act_search import search_heads

    if not files.dev:
        raise InvalidInput("the head search needs a --dev FILE (its stop), disjoint from --eval")
    calibration = search_heads(model, files.task, files.train, files.dev, shots=files.shots,
                               n_calibration=n_calibration, n_dev=n_dev, seed=seed,
                               screen=screen, batch_size=batch_size, data=dict(files.paths),
                               progress=_part(progress, 0, 4, "search"))
    run = dict(train=files.train, shots=files.shots, seed=seed, batch_size=batch_size)
    results = {}
    for index, (name, edit) in enumerate((
            ("baseline", None), ("all_heads", all_heads_edit(model, calibration.tau,
                                                             calibration.beta)),
            ("calibrated", calibration.edit(model)))):
        if name == "calibrated" and edit is None:      # no head kept: the model itself
            results[name] = results["baseline"]
            continue
        results[name] = evaluate(model, files.task, files.eval, edit=edit,
                                 progress=_part(progress, index + 1, 4, name), **run)
    report = {"model": model.name, "task": files.task.name, "n": len(files.eval),
              "shots": files.shots, "baseline": _block(results["baseline"]),
              "calibrated": _block(results["calibrated"]),
              "heads": [list(h) for h in calibration.heads], "tau": calibration.tau,
              "beta": calibration.beta, "all_heads": _block(results["all_heads"])}
    report["_per_class"] = {k: v.per_class for k, v in results.items()}
    report["_search_seconds"] = calibration.search_seconds
    return report, calibration


def _part(progress, index, parts, label):
    """Map a sub-task's progress (0..1) into part `index` of `parts` equal parts."""
    if progress is None:
        return None
    return lambda fraction, message: progress((index + fraction) / parts, f"{label}: {message}")


def public(report: dict) -> dict:
    """The report without its private extras (per-class counts): the JSON contract."""
    return {k: v for k, v in report.items() if not k.startswith("_")}


__all__ = ["TaskFiles", "all_heads_edit", "calibrate_task", "evaluate_task", "public"]
