"""Search the heads whose ACT sink calibration helps a classification task, and report it.

  interp calibrate smollm2-135m --train stsa.binary.train --dev stsa.binary.dev \\
      --eval stsa.binary.test --shots 4 --json report.json --save cal.json

Calibration prompts come from --train (so do every prompt's demonstrations), the search stops on
--dev, and --eval (disjoint from both) scores the uncalibrated model, ACT on all heads and ACT
on the searched heads: accuracy with its Wilson 95% interval and per-class counts. The searched
calibration lands in the results store (and in --save CAL.json); apply it later with
`interp evaluate MODEL --eval FILE --calibration CAL.json`.
"""

from __future__ import annotations

import sys

from interp_cli.commands.common import (add_model_arguments, add_store_argument, check_json_path,
                                        emit_json, load_from_args, open_store)
from interp_cli.commands.evaluate import add_task_arguments, load_files, print_report

HELP = "search the heads ACT should calibrate for a task; report baseline / all heads / searched"


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    add_task_arguments(parser, train_required=True)
    parser.add_argument("--dev", required=True, help="dev split: the search's greedy stop")
    parser.add_argument("--n-calibration", type=int, default=32,
                        help="calibration prompts drawn from --train (default 32)")
    parser.add_argument("--n-dev", type=int, default=32, help="dev prompts used (default 32)")
    parser.add_argument("--screen", type=int, default=16,
                        help="heads the first-order screen keeps for the exact single-head step "
                             "(default 16; 0: every head, slow)")
    parser.add_argument("--save", metavar="CAL.json", help="write the calibration as JSON")
    add_store_argument(parser)


def run(args) -> int:
    from interp.steering.act_eval import check_search_sizes

    check_search_sizes(lambda name: "--" + name.replace("_", "-"), shots=args.shots,
                       n_calibration=args.n_calibration, n_dev=args.n_dev, screen=args.screen)
    check_json_path(args.json)
    check_json_path(args.save)
    files = load_files(args, need_dev=True)
    store = open_store(args.store)
    from interp.steering.act_eval import calibrate_task, public
    from interp_cli.commands.scan import _ProgressBar

    model = load_from_args(args)
    bar = _ProgressBar()
    try:
        report, calibration = calibrate_task(model, files, seed=args.seed,
                                             n_calibration=args.n_calibration, n_dev=args.n_dev,
                                             screen=args.screen or None,
                                             batch_size=args.batch_size, progress=bar)
    finally:
        bar.close()
    run_id = calibration.save_to_store(store)
    to_stdout = str(args.json) != "-"          # else stdout carries the JSON alone
    print_report(report, files, None if to_stdout else sys.stderr)

    def say(text: str) -> None:
        print(text, file=sys.stdout if to_stdout else sys.stderr)

    say(f"search: {calibration.search_seconds:.0f} s; dev accuracy "
        f"{calibration.baseline_dev_accuracy:.3f} -> {calibration.dev_accuracy:.3f} on "
        f"{calibration.data['n_dev']} dev prompts")
    say(f"calibration stored as run {run_id} in {store.path}")
    if args.save:
        calibration.save(args.save)
        say(f"calibration written to {args.save}")
    if not emit_json(args.json, public(report)) and args.json:
        print(f"JSON written to {args.json}")
    return 0
