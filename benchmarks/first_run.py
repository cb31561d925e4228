"""How long the dashboard's first run takes: the standard scans
(`interp.heads.scan.STANDARD_SCANS`, every detector but safety) on one model, one after another
as the dashboard's job runs them, each timed.

    python -m benchmarks.first_run [--model smollm2-135m] [--threads 2]

Writes benchmarks/results/first_run.json and first_run.md. The issue's target: about 3 minutes
on 2 CPU cores for the whole set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from interp.heads.scan import run_scan, standard_scan_params
    from interp.models import load_model

    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu", show_progress=False)
    load_before = os.getloadavg()[0]
    rows, total = [], 0.0
    for name, params in standard_scan_params().items():
        start = time.perf_counter()
        scores = run_scan(model, [name], params={name: params}).scores[name]
        seconds = time.perf_counter() - start
        total += seconds
        rows.append({"detector": name, "seconds": round(seconds, 1), "params": params,
                     "top3": [f"L{h['layer']}.H{h['head']}" for h in scores.top(3)]})
        print(f"{name:<16}{seconds:7.1f} s  top {rows[-1]['top3']}", flush=True)
    report = {"model": args.model, "threads": args.threads, "total_s": round(total, 1),
              "detectors": rows, "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                             "load_average_1m_before": load_before,
                                             "load_average_1m_after": os.getloadavg()[0]}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "first_run.json").write_text(json.dumps(report, indent=2))
    lines = [f"# First run: the standard scans on {args.model}", "",
             f"Command: `python -m benchmarks.first_run --model {args.model} --threads {args.threads}`"
             f" ({os.cpu_count()} CPUs shared with other sessions; 1-min load average "
             f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after).", "",
             "| detector | seconds | top 3 heads |", "|---|---|---|"]
    lines += [f"| {r['detector']} | {r['seconds']} | {', '.join(r['top3'])} |" for r in rows]
    lines += ["", f"Total: {total:.1f} s (target: about 3 minutes on 2 CPU cores)."]
    (RESULTS / "first_run.md").write_text("\n".join(lines) + "\n")
    print(f"total {total:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
