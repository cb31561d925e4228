"""Issue 12's figures: does ACT help in-context classification? SST-2, 0-shot and k-shot.

    python -m benchmarks.calibration --model smollm2-135m --shots 0 4 --n-eval 800
    python -m benchmarks.calibration --model gemma-3-270m --shots 4 --n-eval 400

For each model and shot count: the head search (`interp.steering.act_search.search_heads`, the
function `interp calibrate` runs) on SST-2 train (calibration prompts and every demonstration)
and dev (its greedy stop), timed; then on a seeded draw of SST-2 TEST examples (disjoint from
both): the uncalibrated model, ACT on all heads, ACT on the searched heads, with Wilson 95%
intervals. Data: ../shared/data/icl/sst2 (see its SOURCES.md). Results are merged into
benchmarks/results/calibration.{json,md} after every step, so a run cut short keeps what it did.
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
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "icl" / "sst2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 4])
    parser.add_argument("--n-eval", type=int, default=800)
    parser.add_argument("--n-calibration", type=int, default=32)
    parser.add_argument("--n-dev", type=int, default=32)
    parser.add_argument("--screen", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="calibration")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from interp.models import load_model
    from interp.steering.act_eval import all_heads_edit
    from interp.steering.act_search import search_heads
    from interp.tasks.icl import evaluate, load_task, sample

    task, train = load_task(DATA / "stsa.binary.train")
    _, dev = load_task(DATA / "stsa.binary.dev", task=task)
    _, test = load_task(DATA / "stsa.binary.test", task=task)
    test = sample(test, args.n_eval, args.seed)
    model = load_model(args.model, device="cpu", show_progress=False)
    path = RESULTS / f"{args.out}.json"
    results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    results["machine"] = f"{platform.processor() or platform.machine()}, torch threads 1, " \
                         f"{os.cpu_count()} cores shared"

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    for shots in args.shots:
        key = f"{args.model}/{shots}-shot"
        entry = {"model": args.model, "shots": shots, "n_eval": len(test),
                 "n_calibration": args.n_calibration, "n_dev": args.n_dev, "seed": args.seed,
                 "command": "python -m benchmarks.calibration " + " ".join(
                     [f"--model {args.model}", f"--shots {shots}", f"--n-eval {args.n_eval}",
                      f"--n-calibration {args.n_calibration}", f"--n-dev {args.n_dev}",
                      f"--screen {args.screen}"])}
        log(f"{key}: searching heads")
        calibration = search_heads(model, task, train, dev, shots=shots,
                                   n_calibration=args.n_calibration, n_dev=args.n_dev,
                                   seed=args.seed, screen=args.screen,
                                   batch_size=args.batch_size)
        entry.update(search_seconds=round(calibration.search_seconds, 1),
                     heads=[list(h) for h in calibration.heads],
                     dev_accuracy=calibration.dev_accuracy,
                     baseline_dev_accuracy=calibration.baseline_dev_accuracy,
                     head_gains=calibration.head_gains[:16])
        log(f"{key}: search {calibration.search_seconds:.0f} s, heads {calibration.heads}, dev "
            f"{calibration.baseline_dev_accuracy:.3f} -> {calibration.dev_accuracy:.3f}")
        results["runs"][key] = entry
        _write(results, args.out)
        for name, edit in (("baseline", None), ("act_searched", calibration.edit(model)),
                           ("act_all_heads", all_heads_edit(model))):
            if name == "act_searched" and edit is None:
                entry[name] = {**entry["baseline"], "note": "no head kept: the model itself"}
                continue
            started = time.perf_counter()
            result = evaluate(model, task, test, train, shots, args.seed, edit, args.batch_size)
            entry[name] = {**result.to_json(), "seconds": round(time.perf_counter() - started, 1)}
            log(f"{key}: {name} {result.accuracy:.3f} {result.ci95}")
            _write(results, args.out)


def _write(results: dict, out: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    tmp = RESULTS / f"{out}.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(RESULTS / f"{out}.json")
    rows = ["| model | shots | n test | baseline | ACT all heads | ACT searched (heads) | "
            "searched - baseline | search wall time |", "|---|---|---|---|---|---|---|---|"]

    def cell(block):
        if not block:
            return "(not run)"
        low, high = block["ci95"]
        return f"{100 * block['accuracy']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"

    for entry in results["runs"].values():
        base, searched = entry.get("baseline"), entry.get("act_searched")
        delta = (f"{100 * (searched['accuracy'] - base['accuracy']):+.1f}"
                 if base and searched else "")
        heads = ", ".join(f"{l}.{h}" for l, h in entry.get("heads", [])) or "none"
        rows.append(f"| {entry['model']} | {entry['shots']} | {entry['n_eval']} | {cell(base)} | "
                    f"{cell(entry.get('act_all_heads'))} | {cell(searched)} ({heads}) | {delta} | "
                    f"{entry.get('search_seconds', '')} s |")
    commands = "\n".join(f"    {e['command']}" for e in results["runs"].values())
    (RESULTS / f"{out}.md").write_text(
        "# ACT on SST-2 (issue 12)\n\nAccuracy in % with the Wilson 95% interval, on a seeded "
        "draw of SST-2 test examples (disjoint from the train split the calibration prompts and "
        "every demonstration come from, and from the dev split the search stops on). Machine: "
        f"{results['machine']}.\n\n" + "\n".join(rows) + "\n\nCommands:\n\n" + commands + "\n"
        + (f"\n## Notes\n\n{results['notes']}\n" if results.get("notes") else ""))


def render(out: str = "calibration") -> None:
    """Re-write the markdown from the JSON (after editing its "notes")."""
    _write(json.loads((RESULTS / f"{out}.json").read_text()), out)


if __name__ == "__main__":
    main()
