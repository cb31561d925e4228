"""Score a model on a classification task, optionally with a saved ACT calibration.

  interp evaluate smollm2-135m --eval stsa.binary.test --train stsa.binary.train --shots 4 \\
      --calibration cal.json --json report.json

Prompts are 0-shot (an instruction line) or K-shot with seeded demonstrations from --train;
the prediction is the label word whose first token is likeliest at the last position. Files:
JSONL {"text", "label"}, CSV/TSV with --text-col/--label-col, or SST-2 `stsa.binary.*`
(the format is read from the name, or give --format).
"""

from __future__ import annotations

import sys
from pathlib import Path

from interp_cli.commands.common import (add_model_arguments, check_json_path, emit_json,
                                        load_from_args)

HELP = "accuracy on a classification task (0/K-shot), with or without a saved ACT calibration"


def add_task_arguments(parser, train_required: bool = False) -> None:
    """The arguments `evaluate` and `calibrate` share."""
    from interp.tasks.icl import FORMATS

    parser.add_argument("--eval", required=True, help="the labelled examples to score")
    parser.add_argument("--train", required=train_required,
                        help="train split: demonstrations (and the calibration set)")
    parser.add_argument("--format", choices=FORMATS, help="file format (default: from the name)")
    parser.add_argument("--shots", type=int, default=0, help="demonstrations per prompt (0)")
    parser.add_argument("--text-col", default="text", help="text column/key (default text)")
    parser.add_argument("--label-col", default="label", help="label column/key (default label)")
    parser.add_argument("--limit", type=int, help="score this many eval examples (a seeded draw)")
    parser.add_argument("--seed", type=int, default=0, help="demonstration/sampling seed (0)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", type=Path, help="write the report as JSON ('-': stdout)")


def load_files(args, need_dev: bool = False):
    """The task's files, loaded and checked before the model loads."""
    from interp.errors import InvalidInput
    from interp.model_paths import check_model_name
    from interp.steering.act_eval import TaskFiles

    check_model_name(args.model)
    if args.limit is not None and args.limit < 1:
        raise InvalidInput(f"--limit {args.limit}: score at least 1 example")
    if args.batch_size < 1:
        raise InvalidInput(f"--batch-size {args.batch_size}: use at least 1")
    return TaskFiles.load(args.eval, args.train, getattr(args, "dev", None), args.format,
                          args.shots, args.text_col, args.label_col, need_dev=need_dev,
                          limit=args.limit, seed=args.seed)


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    add_task_arguments(parser)
    parser.add_argument("--calibration", metavar="CAL.json",
                        help="an ACT calibration written by `interp calibrate --save`")


def print_report(report: dict, files, file=None) -> None:
    """The report as text (to stderr when the JSON goes to stdout)."""
    out = {"file": file} if file is not None else {}
    print(f"{report['model']} on {report['task']}: {report['n']} examples, "
          f"{report['shots']}-shot, labels {list(files.task.labels)}", **out)
    for name in ("baseline", "all_heads", "calibrated"):
        block = report.get(name)
        if not block:
            continue
        low, high = block["ci95"]
        counts = report["_per_class"].get(name) or {}
        per_class = ", ".join(f"{label} {c['correct']}/{c['n']} (predicted {c['predicted']})"
                              for label, c in counts.items())
        print(f"  {name:<11} accuracy {block['accuracy']:.3f}  95% CI [{low:.3f}, {high:.3f}]"
              f"  {per_class}", **out)
    if report.get("tau") is not None:
        heads = ", ".join(f"{l}.{h}" for l, h in report["heads"]) or "none (no head helped)"
        print(f"  ACT heads: {heads}  (tau {report['tau']}, beta {report['beta']})", **out)


def run(args) -> int:
    check_json_path(args.json)
    files = load_files(args)
    calibration = None
    if args.calibration:
        from interp.steering.act_search import Calibration

        calibration = Calibration.load(args.calibration)
    from interp.steering.act_eval import evaluate_task, public
    from interp_cli.commands.scan import _ProgressBar

    model = load_from_args(args)
    if calibration is not None:
        calibration.edit(model)          # the right model, heads that exist: before the work
    bar = _ProgressBar()
    try:
        report = evaluate_task(model, files, calibration, args.seed, args.batch_size, bar)
    finally:
        bar.close()
    print_report(report, files, sys.stderr if str(args.json) == "-" else None)
    if not emit_json(args.json, public(report)) and args.json:
        print(f"JSON written to {args.json}")
    return 0
