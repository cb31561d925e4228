"""Activation or attribution patching on a task's clean/corrupted prompts; the result (a
[layer, head] or [layer, position] map, 0 = corrupted, 1 = clean) goes to the store, where the
dashboard draws it as a heatmap.

    interp patch smollm2-135m --task ioi --component heads
    interp patch smollm2-135m --task ioi --component resid --direction denoise --json resid.json
    interp patch smollm2-135m --task ioi --component heads --method attribution

IOI's corrupted prompts are the ABC distribution (three fresh names). With it, noising (the
default: patch one head's corrupted output into the clean run) shows which heads the task needs;
denoising shows what one component alone restores (small for single heads under ABC; use
--corruption s2, which only replaces the repeated name, to see it).
"""

from __future__ import annotations

from interp_cli.commands.common import (add_model_arguments, add_store_argument, check_json_path,
                                        emit_json, load_from_args, open_store, print_table)

HELP = "activation / attribution patching of heads, residual stream or MLPs on a task"

def add_arguments(parser) -> None:
    # The options are the library's tables (what the dashboard's patching form offers too).
    from interp.patching.activation import DIRECTIONS
    from interp.patching.components import COMPONENTS, describe
    from interp.patching.metrics import METRICS
    from interp.patching.task_run import METHODS, TASKS
    from interp.tasks.ioi import CORRUPTIONS

    add_model_arguments(parser)
    add_store_argument(parser)
    parser.add_argument("--task", default="ioi", choices=TASKS, help="prompt task (default ioi)")
    parser.add_argument("--component", default="heads", choices=list(COMPONENTS),
                        help="what to patch (hook, unit): "
                             + "; ".join(describe(name) for name in COMPONENTS))
    parser.add_argument("--method", default="activation", choices=METHODS,
                        help="exact activation patching, or its gradient estimate (one backward pass)")
    parser.add_argument("--direction", default="noise", choices=DIRECTIONS,
                        help="noise: corrupted into clean (default); denoise: clean into corrupted")
    parser.add_argument("--corruption", default="abc", choices=CORRUPTIONS,
                        help="IOI corruption: abc (three fresh names, the paper's) or s2 (only S2)")
    parser.add_argument("--metric", default="logit_diff", choices=list(METRICS))
    parser.add_argument("--n-prompts", type=int, default=16, help="number of prompts (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="prompt seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=64, help="patched rows per forward")
    parser.add_argument("--json", type=str, default=None, metavar="PATH",
                        help="also write the result as JSON to PATH ('-' prints it)")
    parser.add_argument("--top", type=int, default=10, help="cells to print (default 10)")


def run(args) -> int:
    from interp.patching.task_run import patch_task

    check_json_path(args.json)
    store = open_store(args.store)
    model = load_from_args(args)
    result, run_id = patch_task(model, store, args.task, args.component, args.method,
                                args.direction, args.corruption, args.metric, args.n_prompts,
                                args.seed, args.batch_size)
    data = {"run_id": run_id, **result.to_json()}
    if emit_json(args.json, data):
        return 0
    print(f"{args.method} patching of {args.component} on {args.n_prompts} {args.task} prompts "
          f"({args.direction}, corruption {args.corruption}), {result.seconds:.1f}s")
    print(f"{args.metric}: clean {result.clean:.3f}, corrupted {result.corrupted:.3f} "
          "(values: 0 = corrupted, 1 = clean)")
    rows = [{**{axis: cell[axis] for axis in result.axes}, "value": f"{cell['value']:.3f}"}
            for cell in result.top(args.top, by_magnitude=True)]
    print_table(rows, list(result.axes) + ["value"])
    print(f"stored as run {run_id} in {store.path}" + (f"; JSON in {args.json}" if args.json else ""))
    return 0
