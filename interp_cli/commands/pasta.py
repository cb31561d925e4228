"""Profile the heads PASTA should steer on a model, and store the chosen set.

  interp pasta smollm2-135m [--tasks counterfactual uppercase] [--n-items 16] [--layers 8]
                            [--size 8] [--alpha 0.01] [--json PROFILE.json]

Each head is steered alone (alpha on the keys outside the highlighted phrase) on the profiling
half of each task, ranked by the gain of the task's margin over the unsteered model, and the top
set kept (intersection across tasks); `--layers N` first screens the layers (every head of a
layer together) and profiles the heads of the best N only (0: every head, slow on a CPU). Tasks:
the built-in `counterfactual` and `uppercase`, or JSONL files of {prompt, highlight, target,
foils}. The profile lands in the results store; then
`interp steer MODEL --prompt ... --pasta PHRASE --heads auto` steers the chosen heads.
"""

from __future__ import annotations

import sys

from interp_cli.commands.common import (add_model_arguments, add_store_argument, check_json_path,
                                        emit_json, load_from_args, open_store)

HELP = "profile which heads PASTA should steer (per-head gains on emphasis tasks); store the set"


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--tasks", nargs="+", default=["counterfactual", "uppercase"],
                        metavar="TASK", help="built-in task names or JSONL files "
                                             "(default: counterfactual uppercase)")
    parser.add_argument("--n-items", type=int, default=16,
                        help="profiling items per task, from its profiling half (default 16)")
    parser.add_argument("--layers", type=int, default=8,
                        help="layers kept by the layer screen (default 8; 0: profile every head)")
    parser.add_argument("--size", type=int, default=8, help="heads to choose (default 8)")
    parser.add_argument("--alpha", type=float, default=0.01, help="PASTA scaling (default 0.01)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the profiling/evaluation split (default 0)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", help="write the profile as JSON to this path ('-': stdout)")
    add_store_argument(parser)


def run(args) -> int:
    from interp.model_paths import check_model_name, peek_shape
    from interp.steering.pasta_profile import check_profile_arguments
    from interp.tasks.pasta_tasks import load_pasta_task

    check_model_name(args.model)
    shape = peek_shape(args.model)
    layers = args.layers or None
    check_profile_arguments(args.n_items, layers, args.size, args.alpha, args.batch_size,
                            shape.n_layers if shape is not None else None)
    tasks = [load_pasta_task(t) for t in args.tasks]      # a bad task file fails here
    check_json_path(args.json)
    store = open_store(args.store)
    from interp.steering.pasta_profile import profile_heads
    from interp_cli.commands.scan import _ProgressBar

    model = load_from_args(args)
    bar = _ProgressBar()
    try:
        profile = profile_heads(model, tasks, n_items=args.n_items, layers=layers,
                                size=args.size, alpha=args.alpha, seed=args.seed,
                                batch_size=args.batch_size, progress=bar)
    finally:
        bar.close()
    run_id = profile.save_to_store(store)
    out = sys.stderr if str(args.json) == "-" else sys.stdout
    for name, base in profile.baseline.items():
        best = ", ".join(f"{l}.{h} {g:+.2f}" for l, h, g, _ in profile.head_gains[name][:5])
        print(f"{name}: {profile.n_items[name]} items, unsteered accuracy "
              f"{base['accuracy']:.2f}; best heads alone (margin gain): {best}", file=out)
    heads = ",".join(f"{l}.{h}" for l, h in profile.heads) or "(none helped every task)"
    print(f"chosen heads (top-{profile.k} intersection): {heads}", file=out)
    print(f"profile stored as run {run_id} in {store.path} ({profile.seconds:.0f} s); steer "
          f"with `interp steer {args.model} --prompt ... --pasta PHRASE --heads auto`", file=out)
    emit_json(args.json, profile.to_json())
    return 0
