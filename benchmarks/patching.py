"""IOI logit differences and the head sweep: activation vs attribution patching (issue 4).

    python -m benchmarks.patching [--models smollm2-135m gemma-3-270m] [--n-ld 240]
                                  [--n-sweep 16] [--threads N]

Per model:
1. clean and corrupted (ABC) logit difference IO - S on `--n-ld` IOI prompts (mean, std,
   accuracy = share of prompts with a positive clean difference), split by ABBA / BABA;
2. the full head sweep (every layer x head, noising under ABC, logit difference) on
   `--n-sweep` prompts with exact activation patching and with attribution patching: wall time
   of each, and their Pearson / Spearman correlation over all heads. Also the same with
   denoising under the S2 corruption.
Writes benchmarks/results/patching.md and patching.json.
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


def logit_differences(model, n: int, seed: int = 0) -> dict:
    from interp.patching.activation import final_logits_and_cache
    from interp.tasks.ioi import ioi_prompts

    prompts = ioi_prompts(model, n=n, seed=seed)
    rows = torch.arange(n)
    start = time.perf_counter()
    clean, _ = final_logits_and_cache(model, prompts.tokens, [])
    corrupted, _ = final_logits_and_cache(model, prompts.corrupted, [])
    seconds = time.perf_counter() - start
    clean_diff = clean[rows, prompts.answers] - clean[rows, prompts.wrong_answers]
    corrupted_diff = corrupted[rows, prompts.answers] - corrupted[rows, prompts.wrong_answers]
    out = {"n_prompts": n, "clean_ld_mean": float(clean_diff.mean()),
           "clean_ld_std": float(clean_diff.std()), "accuracy": float((clean_diff > 0).float().mean()),
           "top1_io": float((clean.argmax(-1) == prompts.answers).float().mean()),
           "corrupted_ld_mean": float(corrupted_diff.mean()),
           "corrupted_ld_std": float(corrupted_diff.std()), "seconds": round(seconds, 1)}
    for order in ("ABBA", "BABA"):
        chosen = torch.tensor([m["order"] == order for m in prompts.metadata])
        out[f"clean_ld_{order}"] = float(clean_diff[chosen].mean())
    return out


def sweep(model, n: int, corruption: str, direction: str, seed: int = 1) -> dict:
    from interp.patching.attribution import attribution_vs_activation
    from interp.tasks.ioi import ioi_prompts

    prompts = ioi_prompts(model, n=n, seed=seed, corruption=corruption)
    report = attribution_vs_activation(model, prompts, "heads", direction=direction)
    exact = report["activation"]
    return {
        "n_prompts": n, "corruption": corruption, "direction": direction,
        "heads": model.n_total_heads, "rows": model.n_total_heads * n,
        "activation_s": round(report["activation_seconds"], 1),
        "attribution_s": round(report["attribution_seconds"], 1),
        "speedup": round(report["speedup"], 1),
        "pearson": round(report["pearson"], 3), "spearman": round(report["spearman"], 3),
        "top5_activation": [f"{c['layer']}.{c['head']}:{c['value']:.2f}"
                            for c in exact.top(5, by_magnitude=True)],
        "top5_attribution": [f"{c['layer']}.{c['head']}:{c['value']:.2f}"
                             for c in report["attribution"].top(5, by_magnitude=True)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma-3-270m"])
    parser.add_argument("--n-ld", type=int, default=240)
    parser.add_argument("--n-sweep", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is faster on a machine shared with other jobs)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from interp.models import load_model

    ld_rows, sweep_rows = [], []
    for name in args.models:
        model = load_model(name, show_progress=False)
        ld = {"model": name, **logit_differences(model, args.n_ld)}
        print(json.dumps(ld), flush=True)
        ld_rows.append(ld)
        for corruption, direction in (("abc", "noise"), ("s2", "denoise")):
            row = {"model": name, **sweep(model, args.n_sweep, corruption, direction)}
            print(json.dumps(row), flush=True)
            sweep_rows.append(row)
        del model

    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, " \
              f"{'GPU' if torch.cuda.is_available() else 'no GPU'}"
    command = "python -m benchmarks.patching " + " ".join(sys.argv[1:])
    for row in ld_rows + sweep_rows:
        row["command"] = command
    # Keep earlier runs of other models: models are benchmarked one at a time.
    saved = RESULTS / "patching.json"
    if saved.is_file():
        earlier = json.loads(saved.read_text())
        ld_rows = [r for r in earlier["logit_diff"] if r["model"] not in args.models] + ld_rows
        sweep_rows = [r for r in earlier["sweeps"] if r["model"] not in args.models] + sweep_rows
    commands = sorted({r["command"] for r in ld_rows + sweep_rows})
    fmt = lambda x: round(x, 3) if isinstance(x, float) else x  # noqa: E731
    text = [f"# IOI logit differences and head sweeps (activation vs attribution patching)\n",
            f"Machine: {machine}. Commands: " + ", ".join(f"`{c}`" for c in commands) + "\n",
            "## Logit difference IO - S (clean IOI vs ABC-corrupted)\n",
            markdown_table([{k: fmt(v) for k, v in r.items()} for r in ld_rows],
                           ["model", "n_prompts", "clean_ld_mean", "clean_ld_std", "accuracy", "top1_io",
                            "clean_ld_ABBA", "clean_ld_BABA", "corrupted_ld_mean", "corrupted_ld_std"]),
            "\n## Full head sweep: exact activation patching vs attribution patching\n",
            markdown_table(sweep_rows, ["model", "n_prompts", "corruption", "direction", "heads", "rows",
                                        "activation_s", "attribution_s", "speedup", "pearson", "spearman",
                                        "top5_activation", "top5_attribution"])]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "patching.md").write_text("\n".join(text) + "\n")
    saved.write_text(json.dumps({"logit_diff": ld_rows, "sweeps": sweep_rows, "machine": machine},
                                indent=2))
    print("\n".join(text))


if __name__ == "__main__":
    main()
