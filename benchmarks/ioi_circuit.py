"""The IOI circuit of each model: discovery, faithfulness vs random circuits, completeness and
minimality (issue 4).

    python -m benchmarks.ioi_circuit [--models smollm2-135m gemma-3-270m] [--n-prompts 32]
        [--n-eval 200] [--n-criteria 48] [--n-random 20] [--receivers all_inputs paper]
        [--store PATH] [--threads N]

Per model and receiver mode: discover the circuit on `--n-prompts` IOI prompts (seed 0), then
on `--n-eval` fresh prompts (seed 1000) measure faithfulness (heads kept at every position, and
only at their role's position) and the faithfulness of `--n-random` random circuits of the same
size; completeness and minimality on the first `--n-criteria` of them. Each circuit is saved to
the store (kind "circuit"). Writes benchmarks/results/ioi_circuit.md and ioi_circuit.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from benchmarks.measure import markdown_table

RESULTS = Path(__file__).parent / "results"


def run(model, receivers: str, args, store) -> tuple[dict, dict]:
    from circuits.evaluate import completeness, faithfulness, minimality, random_baseline, template_means
    from circuits.ioi import DiscoveryConfig, discover_ioi_circuit
    from interp.tasks.ioi import ioi_prompts

    config = DiscoveryConfig(n_prompts=args.n_prompts, screen_k=args.screen_k, receivers=receivers,
                             max_heads=args.max_heads, trim=args.trim, evaluate=False)
    start = time.perf_counter()
    circuit, stages = discover_ioi_circuit(
        model, config, progress=lambda f, m: print(f"  [{time.perf_counter() - start:.0f}s] {m}",
                                                   file=sys.stderr, flush=True))
    discovery_s = time.perf_counter() - start

    start = time.perf_counter()
    prompts = ioi_prompts(model, n=args.n_eval, seed=1000)
    means = template_means(model, prompts)
    every = faithfulness(model, prompts, circuit, means, "all")
    role = faithfulness(model, prompts, circuit, means, "role")
    baseline = random_baseline(model, prompts, len(circuit), args.n_random, 0, means, every["F_model"])
    small = prompts.subset(slice(0, args.n_criteria))
    small_means = template_means(model, small)
    complete = completeness(model, small, circuit, small_means, n_random=5,
                            greedy_steps=args.greedy_steps)
    minimal = minimality(model, small, circuit, small_means)
    evaluation_s = time.perf_counter() - start

    circuit.faithfulness = every["faithfulness"]
    circuit.random_baseline = {k: baseline[k] for k in ("mean", "std", "max", "n", "size")}
    circuit.evaluation.update({
        "faithfulness_all_positions": every, "faithfulness_role_positions": role,
        "random_baseline_values": baseline["values"], "completeness": complete,
        "minimality": minimal, "n_eval_prompts": args.n_eval, "n_criteria_prompts": args.n_criteria,
    })
    run_id = circuit.save(store, {f"stage-{k}": {"values": v.values} for k, v in stages.items()})
    row = {
        "model": model.name, "receivers": receivers, "budget": circuit.params["budget"],
        "trim": args.trim,
        "heads": len(circuit),
        "of": model.n_total_heads, "share": f"{len(circuit) / model.n_total_heads:.1%}",
        "F_model": round(every["F_model"], 3), "F_circuit": round(every["F_circuit"], 3),
        "faithfulness": f"{every['faithfulness']:.1%}",
        "faithfulness_role_pos": f"{role['faithfulness']:.1%}",
        "random_mean": f"{baseline['mean']:.1%}", "random_std": f"{baseline['std']:.1%}",
        "random_max": f"{baseline['max']:.1%}",
        "max_incompleteness": f"{complete['max_incompleteness']:.1%}",
        "minimality_mean": f"{minimal['mean']:.1%}",
        "heads_above_1pct": f"{minimal['fraction_above_1pct']:.0%}",
        "discovery_s": round(discovery_s), "evaluation_s": round(evaluation_s), "run_id": run_id,
    }
    roles = {role_name: ", ".join(f"{l}.{h}" for l, h in heads)
             for role_name, heads in circuit.by_role().items()}
    return row, {"row": row, "roles": roles, "circuit": circuit.to_json()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma-3-270m"])
    parser.add_argument("--receivers", nargs="+", default=["all_inputs", "paper"])
    parser.add_argument("--n-prompts", type=int, default=32)
    parser.add_argument("--screen-k", type=int, default=16)
    parser.add_argument("--n-eval", type=int, default=200)
    parser.add_argument("--n-criteria", type=int, default=48)
    parser.add_argument("--n-random", type=int, default=20)
    parser.add_argument("--greedy-steps", type=int, default=2)
    parser.add_argument("--max-heads", type=int, default=None,
                        help="head budget (default 10%% of the model's heads)")
    parser.add_argument("--trim", default="faithfulness", choices=["faithfulness", "effect"])
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from interp.models import load_model
    from interp.store import Store

    store = Store(args.store)
    rows, details = [], []
    for name in args.models:
        model = load_model(name, show_progress=False)
        for receivers in args.receivers:
            row, detail = run(model, receivers, args, store)
            print(json.dumps(row), flush=True)
            print(json.dumps(detail["roles"]), flush=True)
            rows.append(row)
            details.append(detail)
        del model

    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, " \
              f"{'GPU' if torch.cuda.is_available() else 'no GPU'}"
    command = "python -m benchmarks.ioi_circuit " + " ".join(sys.argv[1:])
    for detail in details:
        detail["machine"], detail["command"] = machine, command
    # Keep earlier runs of other (model, receivers) pairs: models are benchmarked one at a time.
    saved = RESULTS / "ioi_circuit.json"
    if saved.is_file():
        key = lambda d: (d["row"]["model"], d["row"]["receivers"], d["row"].get("budget"),  # noqa: E731
                         d["row"].get("trim", "effect"))
        fresh = {key(d) for d in details}
        earlier = [d for d in json.loads(saved.read_text())["runs"] if key(d) not in fresh]
        details = earlier + details
        rows = [d["row"] for d in details]
    commands = sorted({d.get("command", command) for d in details})
    text = ["# IOI circuits: discovery and evaluation\n", f"Machine: {machine}. Commands: "
            + ", ".join(f"`{c}`" for c in commands) + "\n",
            markdown_table(rows, ["model", "receivers", "budget", "trim", "heads", "of", "share", "F_model", "F_circuit",
                                  "faithfulness", "faithfulness_role_pos", "random_mean", "random_std",
                                  "random_max", "max_incompleteness", "minimality_mean",
                                  "heads_above_1pct", "discovery_s", "evaluation_s"]),
            "\n## Roles -> heads\n"]
    for detail in details:
        row = detail["row"]
        text.append(f"### {row['model']} ({row['receivers']} receivers, budget {row.get('budget')}, "
                    f"trim {row.get('trim', 'effect')})\n")
        text += [f"- {role}: {heads}" for role, heads in detail["roles"].items()]
        text.append("")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ioi_circuit.md").write_text("\n".join(text) + "\n")
    saved.write_text(json.dumps({"runs": details}, indent=2))
    print("\n".join(text))


if __name__ == "__main__":
    main()
