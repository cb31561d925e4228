"""Discover and evaluate a task's circuit, store it, and write the JSON.

    interp circuit smollm2-135m --task ioi                              # path patching (Wang et al.)
    interp circuit smollm2-135m --task greater-than --method eap-ig --json gt.json
    interp circuit smollm2-135m --task my_pairs.jsonl --method eap

--task: ioi | greater-than | a .jsonl file of {"clean", "corrupted", "answer", "wrong"} pairs.
--method: one row of `circuits.discover.METHODS` (path, eap, eap-ig, sae-heads, sae-features).
The JSON: {"method", "task", "model", "nodes", "edges": [{"src", "dst", "score"}], "heads",
"head_scores": [{"layer", "head", "score"}], "faithfulness_curve": [{"k_percent",
"faithfulness"}], "cpr", "cmd", "random_cmd", "n_discover", "n_eval", "seconds", ...}; the path
method keeps its own fields too ("faithfulness", "random_baseline", "n_heads_total", ...).
Faithfulness is measured on evaluation prompts disjoint from the discovery prompts.
"""

from __future__ import annotations

from interp_cli.commands.common import (add_model_arguments, add_store_argument, check_json_path,
                                        load_from_args, open_store, write_json)

HELP = "discover and evaluate a task's circuit (path patching, EAP, EAP-IG, SAE methods)"


def add_arguments(parser) -> None:
    from circuits.discover import METHODS

    add_model_arguments(parser)
    add_store_argument(parser)
    parser.add_argument("--task", default="ioi",
                        help="ioi (default), greater-than, or a .jsonl file of prompt pairs "
                             '{"clean", "corrupted", "answer", "wrong"}')
    parser.add_argument("--method", default="path", choices=list(METHODS),
                        help="; ".join(f"{m.name}: {m.help}" for m in METHODS.values())
                             + " (default path)")
    parser.add_argument("--n-prompts", type=int, default=32, help="discovery prompts (default 32)")
    parser.add_argument("--n-eval-prompts", type=int, default=None,
                        help="evaluation prompts, disjoint from discovery (default 64 for path, "
                             "32 otherwise)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=5, help="EAP-IG interpolation steps (default 5)")
    parser.add_argument("--circuit-percent", type=float, default=1.0,
                        help="edge methods: the reported circuit's share of edges, in percent "
                             "(default 1); the faithfulness curve covers every size")
    parser.add_argument("--n-random", type=int, default=None,
                        help="random circuits per size (edge curve; default 1) and for path's "
                             "baseline (default 20)")
    parser.add_argument("--screen-k", type=int, default=16,
                        help="path: senders verified by exact path patching per stage (default 16)")
    parser.add_argument("--max-heads", type=int, default=None,
                        help="path: head budget (default 10%% of the model's heads)")
    parser.add_argument("--levels", type=int, default=4, choices=[1, 2, 3, 4],
                        help="path: levels back from the logits (1 = name movers only; default 4)")
    parser.add_argument("--greedy-steps", type=int, default=0,
                        help="path: greedy search steps for the completeness check (default 0)")
    parser.add_argument("--skip-criteria", action="store_true",
                        help="path: skip the completeness and minimality checks")
    parser.add_argument("--receivers", default="paper", choices=["paper", "all_inputs"],
                        help="path: Wang et al.'s receivers (default) or every input of the "
                             "previous level's heads")
    parser.add_argument("--trim", default="faithfulness", choices=["faithfulness", "effect"],
                        help="path: how to keep --max-heads heads when more are found")
    parser.add_argument("--json", type=str, default=None, metavar="PATH",
                        help="also write the result as JSON to PATH ('-' prints it)")


def run(args) -> int:
    import json

    from circuits.discover import check_method, discover_to_store

    check_json_path(args.json)
    spec = check_method(args.method, args.task)  # a bad task file fails before the model loads
    store = open_store(args.store)
    model = load_from_args(args)
    path = args.method == "path"
    options = {"n_discover": args.n_prompts, "n_eval": args.n_eval_prompts or (64 if path else 32),
               "seed": args.seed, "steps": args.steps, "circuit_percent": args.circuit_percent}
    if args.n_random is not None:
        options["n_random"] = args.n_random
    if path:
        options["path_config"] = {
            "screen_k": args.screen_k, "max_heads": args.max_heads, "levels": args.levels,
            "n_random": args.n_random if args.n_random is not None else 20,
            "greedy_steps": args.greedy_steps, "criteria": not args.skip_criteria,
            "receivers": args.receivers, "trim": args.trim}
        options.pop("n_random", None)
    run_id, data, circuit = discover_to_store(model, store, spec, args.method, **options)
    data = {"run_id": run_id, **data}
    if args.json == "-":
        print(json.dumps(data, indent=2))
        return 0
    if args.json:
        write_json(args.json, data)
    print(circuit.summary())
    _print_evaluation(data, circuit.evaluation)
    print(f"stored as run {run_id} in {store.path}" + (f"; JSON in {args.json}" if args.json else ""))
    return 0


def _print_evaluation(data: dict, evaluation: dict) -> None:
    role = evaluation.get("faithfulness_role_positions")
    if role:
        print(f"  faithfulness, heads kept only at their role's position: {role['faithfulness']:.1%}")
    if "completeness" in evaluation:
        print(f"  completeness: max incompleteness {evaluation['completeness']['max_incompleteness']:.1%}")
    if "minimality" in evaluation:
        print(f"  minimality: mean {evaluation['minimality']['mean']:.1%}, "
              f"{evaluation['minimality']['fraction_above_1pct']:.0%} of heads above 1%")
    if data.get("faithfulness_curve"):
        points = ", ".join(f"{p['k_percent']}%: {p['faithfulness']:.2f}" for p in data["faithfulness_curve"])
        print(f"  faithfulness curve (k% of edges: f): {points}")
        print(f"  CPR {data['cpr']:.3f}, CMD {data['cmd']:.3f} (random circuits: CMD "
              f"{data['random_cmd']:.3f}); {data['n_discover']} discovery and {data['n_eval']} "
              f"evaluation prompts, {data['seconds']:.0f} s")
