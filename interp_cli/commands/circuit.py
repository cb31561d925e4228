"""Discover a task's circuit by path patching (Wang et al. 2022's method for IOI), evaluate it
(faithfulness, completeness, minimality, random circuits of the same size) and store it; the
dashboard draws it as a graph.

    interp circuit smollm2-135m --task ioi
    interp circuit gemma-3-270m --task ioi --json gemma_ioi.json

The JSON: {"model", "task", "heads": [{"layer", "head", "role"}], "edges": [...],
"faithfulness", "random_baseline": {"mean", "std"}, "n_heads_total", ...}.
"""

from __future__ import annotations

from interp_cli.commands.common import (add_model_arguments, add_store_argument, check_json_path,
                                        load_from_args, open_store, write_json)

HELP = "discover and evaluate a task's circuit (IOI) by path patching"


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    add_store_argument(parser)
    parser.add_argument("--task", default="ioi", choices=["ioi"], help="task (default ioi)")
    parser.add_argument("--n-prompts", type=int, default=32, help="discovery prompts (default 32)")
    parser.add_argument("--n-eval-prompts", type=int, default=64,
                        help="evaluation prompts, another seed (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--screen-k", type=int, default=16,
                        help="senders verified by exact path patching per stage (default 16)")
    parser.add_argument("--max-heads", type=int, default=None,
                        help="head budget (default 10%% of the model's heads)")
    parser.add_argument("--levels", type=int, default=4, choices=[1, 2, 3, 4],
                        help="levels back from the logits (1 = name movers only; default 4)")
    parser.add_argument("--n-random", type=int, default=20, help="random circuits for the baseline")
    parser.add_argument("--greedy-steps", type=int, default=0,
                        help="greedy search steps for the completeness check (default 0)")
    parser.add_argument("--skip-criteria", action="store_true",
                        help="skip the completeness and minimality checks (the slow part of the "
                             "evaluation); faithfulness and the random baseline are always measured")
    parser.add_argument("--receivers", default="paper", choices=["paper", "all_inputs"],
                        help="paper (default): name-mover queries at END, S-inhibition values at "
                             "S2, induction keys at S1+1; all_inputs: every input of the previous "
                             "level's heads, roles named by attention")
    parser.add_argument("--trim", default="faithfulness", choices=["faithfulness", "effect"],
                        help="when more heads are found than --max-heads allows, keep those grown "
                             "greedily to bring the circuit's logit difference closest to the "
                             "model's (default) or the strongest path-patching effects")
    parser.add_argument("--json", type=str, default=None, metavar="PATH",
                        help="also write the circuit as JSON to PATH ('-' prints it)")


def run(args) -> int:
    import json

    from circuits.ioi import DiscoveryConfig, discover_ioi_circuit

    check_json_path(args.json)
    store = open_store(args.store)
    model = load_from_args(args)
    config = DiscoveryConfig(
        n_prompts=args.n_prompts, n_eval_prompts=args.n_eval_prompts, seed=args.seed,
        screen_k=args.screen_k, max_heads=args.max_heads, levels=args.levels, n_random=args.n_random,
        greedy_steps=args.greedy_steps, criteria=not args.skip_criteria,
        receivers=args.receivers, trim=args.trim,
    )
    with store.run("circuit", model.model_id, {"task": args.task, **vars(config)}) as run:
        circuit, stages = discover_ioi_circuit(model, config, progress=run.progress)
        for name, result in stages.items():
            result.params["stage"] = name
            run.add_artifact(f"stage-{name}", {"values": result.values, "raw": result.raw})
        circuit.evaluation["stages"] = {name: result.to_json() for name, result in stages.items()}
        run.set_result(circuit.to_json())
    data = {"run_id": run.id, **circuit.to_json()}
    if args.json == "-":
        print(json.dumps(data, indent=2))
        return 0
    if args.json:
        write_json(args.json, data)
    print(circuit.summary())
    evaluation = circuit.evaluation
    role = evaluation.get("faithfulness_role_positions")
    if role:
        print(f"  faithfulness, heads kept only at their role's position: {role['faithfulness']:.1%}")
    if "completeness" in evaluation:
        print(f"  completeness: max incompleteness {evaluation['completeness']['max_incompleteness']:.1%}")
    if "minimality" in evaluation:
        print(f"  minimality: mean {evaluation['minimality']['mean']:.1%}, "
              f"{evaluation['minimality']['fraction_above_1pct']:.0%} of heads above 1%")
    print(f"stored as run {run.id} in {store.path}" + (f"; JSON in {args.json}" if args.json else ""))
    return 0
