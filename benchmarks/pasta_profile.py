"""Issue 12's PASTA figures: do profiled heads make the model follow the highlighted text?

    python -m benchmarks.pasta_profile --model smollm2-135m --n-items 16 --layers 8 --size 8

1. Profile (`interp.steering.pasta_profile.profile_heads`, what `interp pasta` runs) on the
   PROFILING half of each built-in task (`counterfactual`, `uppercase`; halves split with
   --seed), timed.
2. On the disjoint EVALUATION half of each task (every item, none seen by the profile): the
   unsteered model, PASTA on the profiled heads, PASTA on the same number of random heads
   (--random-seeds draws over all heads), and PASTA on each task's own top heads (no
   intersection; an upper reference, still chosen on the profiling half). Metric: accuracy
   (the highlighted answer's first token beats the foils') with its Wilson 95% interval, and
   the mean margin.
Results: benchmarks/results/pasta.{json,md}, written after every step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tasks", nargs="+", default=["counterfactual", "uppercase"])
    parser.add_argument("--n-items", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-seeds", type=int, default=3)
    parser.add_argument("--out", default="pasta")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from interp.models import load_model
    from interp.steering.pasta_profile import evaluate_heads, profile_heads
    from interp.tasks.icl import wilson_interval
    from interp.tasks.pasta_tasks import distinguishable, load_pasta_task, split

    model = load_model(args.model, device="cpu", show_progress=False)
    tasks = [load_pasta_task(t) for t in args.tasks]
    results = {"command": "python -m benchmarks.pasta_profile " + " ".join(
                   f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                   for k, v in vars(args).items()),
               "model": model.model_id, "machine": f"{platform.machine()}, torch threads 1, "
               f"{os.cpu_count()} cores shared with other jobs", "args": vars(args)}

    def save() -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{args.out}.json").write_text(json.dumps(results, indent=2))
        (RESULTS / f"{args.out}.md").write_text(report(results))

    started = time.perf_counter()
    last = [0.0]

    def progress(fraction, message):
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"[{time.perf_counter() - started:5.0f} s] {fraction:5.1%} {message}", flush=True)

    profile = profile_heads(model, tasks, n_items=args.n_items, layers=args.layers or None,
                            size=args.size, alpha=args.alpha, seed=args.seed, progress=progress)
    results["profile"] = profile.to_json()
    save()
    print(f"profile: {profile.seconds:.0f} s, heads {profile.heads} (k={profile.k})", flush=True)

    all_heads = [(l, h) for l in range(model.n_layers) for h in range(model.n_heads)]
    n = max(1, len(profile.heads))
    sets = {"baseline": [], "profiled": list(profile.heads)}
    for seed in range(args.random_seeds):
        sets[f"random_{seed}"] = sorted(random.Random(seed).sample(all_heads, n))
    for task in tasks:
        sets[f"top_{task.name}"] = [tuple(row[:2]) for row in profile.head_gains[task.name][:n]]
    results["head_sets"] = {k: [list(h) for h in v] for k, v in sets.items()}
    results["evaluation"] = {}
    for task in tasks:
        _, evaluation = split(task, args.seed)
        items, dropped = distinguishable(model, evaluation)
        rows = {}
        for name, heads in sets.items():
            if name == "profiled" and not heads:
                continue
            m = evaluate_heads(model, items, heads, args.alpha)
            correct = int((m > 0).sum())
            rows[name] = {"accuracy": correct / len(items),
                          "ci95": wilson_interval(correct, len(items)),
                          "correct": correct, "n": len(items), "margin": float(m.mean()),
                          "margins": [round(float(x), 4) for x in m]}
            print(task.name, name, {k: v for k, v in rows[name].items() if k != "margins"},
                  flush=True)
        results["evaluation"][task.name] = {"n": len(items), "dropped": dropped, "rows": rows}
        save()
    results["seconds"] = time.perf_counter() - started
    save()


def sign_test(fixed: int, broken: int) -> float:
    """Two-sided exact sign test (McNemar's exact test) of the discordant pairs."""
    n, low = fixed + broken, min(fixed, broken)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(low + 1)) / 2 ** n)


def report(results: dict) -> str:
    profile = results.get("profile", {})
    lines = [f"# PASTA head profiling on {results['model']}", "",
             f"Command: `{results['command']}`  ", f"Machine: {results['machine']}", ""]
    if profile:
        heads = ", ".join(f"{l}.{h}" for l, h in profile["heads"]) or "none"
        kept = profile.get("layers_profiled", profile.get("layers_screened"))
        screen = (f"layer screen kept layers {kept}" if profile.get("layer_gains")
                  else "no layer screen: every head profiled alone")
        lines += [f"Profile: {profile['n_items']} profiling items (profiling halves), {screen}, "
                  f"alpha {profile['alpha']}, "
                  f"{profile['seconds']:.0f} s. Chosen heads (top-{profile['k']} of every task, "
                  f"intersected): **{heads}**.", "",
                  "Unsteered accuracy on the profiling items: " + ", ".join(
                      f"{t} {b['accuracy']:.2f}" for t, b in profile["baseline"].items()), ""]
        for task, rows in profile["head_gains"].items():
            lines.append(f"Best heads alone on {task} (margin gain, accuracy gain): " + ", ".join(
                f"{l}.{h} {g:+.2f}/{a:+.2f}" for l, h, g, a in rows[:6]))
        lines.append("")
    for task, ev in results.get("evaluation", {}).items():
        lines += [f"## {task}: evaluation half, {ev['n']} items (disjoint from profiling)", "",
                  "| heads | accuracy | 95% CI (Wilson) | vs baseline | items fixed / broken "
                  "(sign test p) | mean margin |", "|---|---|---|---|---|---|"]
        base = ev["rows"]["baseline"]
        for name, r in ev["rows"].items():
            flips = "-"
            if "margins" in r and "margins" in base:
                pairs = list(zip(base["margins"], r["margins"]))
                fixed = sum(b <= 0 < s for b, s in pairs)
                broken = sum(s <= 0 < b for b, s in pairs)
                flips = f"{fixed} / {broken}" + (f" (p={sign_test(fixed, broken):.3f})"
                                                 if fixed + broken else "")
            lines.append(f"| {name} | {r['accuracy']:.3f} ({r['correct']}/{r['n']}) | "
                         f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | "
                         f"{100 * (r['accuracy'] - base['accuracy']):+.1f} pts | {flips} | "
                         f"{r['margin']:+.2f} |")
        lines.append("")
    if "seconds" in results:
        lines.append(f"Total wall time: {results['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
