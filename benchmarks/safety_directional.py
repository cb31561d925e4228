"""Issue 17's figures: do the top safety heads, ranked by Ships (the paper's) or by the drop of
the refusal log-odds (directional), cut refusal on harmful prompts from a DIFFERENT source than
the ones they were found on, more than random heads do, with harmless replies unchanged?

    python -m benchmarks.safety_directional                       # the committed run
    python -m benchmarks.safety_directional --train 4 --test 4 --harmless-test 2 --layers 23 \\
        --random 2 --checks 'query_scale=1,3;zero=3' --max-new-tokens 6   # smoke

Data (../shared/data, see its SOURCES.md): refusal tokens calibrated and training prompts
selected from refusal_direction/harmful_train.json (AdvBench, MaliciousInstruct, TDC2023; the
model's refusals among them, most confident first) and harmless_train.json (Alpaca); the test
split is refusal_direction/harmful_val.json (HarmBench val, a different source) and
harmless_val.json. One batched scan with the paper's ablation (query_scale) gives both scores
and Sahara's set (later steps over the top first-step candidates); then
`interp.heads.safety.causal_check` ablates the top-1/3/5 of each, and Sahara's set, against
random k-head sets, with query_scale and (top-3 only) with zero ablation, the rankings of the
query_scale scan in both (a second full scan does not fit the CPU budget: one scan costs about
a minute of one core per training prompt). Everything is greedy; torch runs on one thread.
Writes benchmarks/results/<out>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.safety import RESULTS, read  # noqa: E402  (the shared refusal_direction data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--calibration", type=int, default=12)
    parser.add_argument("--train", type=int, default=8)
    parser.add_argument("--test", type=int, default=24, help="harmful (HarmBench) test prompts")
    parser.add_argument("--harmless-test", type=int, default=8)
    parser.add_argument("--scan-method", default="query_scale",
                        help="the ablation of the one scan that ranks the heads (both scores)")
    parser.add_argument("--rankings", default=None,
                        help="skip the scan: a JSON file {'scan': {...}} with the top heads of "
                             "an earlier scan ('top_by': {score: [{layer, head, score}]}, "
                             "optional 'sahara')")
    parser.add_argument("--checks", default="query_scale=3;zero=3;query_scale=1;query_scale=5",
                        help="ablation=ks of each causal check, ';'-separated")
    parser.add_argument("--random", default="1:2,3:3,5:2",
                        help="random draws per k ('3', or 'k:draws,...')")
    parser.add_argument("--sahara-steps", type=int, default=3)
    parser.add_argument("--sahara-candidates", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=16, help="reply length in the check")
    parser.add_argument("--calibration-tokens", type=int, default=16,
                        help="reply length when calibrating refusal tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layers", default=None, help="scan only these layers (smoke runs)")
    parser.add_argument("--out", default="safety_directional")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite <out>.md from <out>.json")
    args = parser.parse_args()
    if args.render:
        result = json.loads((RESULTS / f"{args.out}.json").read_text())
        (RESULTS / f"{args.out}.md").write_text(markdown(result))
        return

    import torch

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    from interp.heads.safety import causal_check, detect
    from interp.models import load_model
    from interp.refusal import select_refusing
    from interp.scores import HeadScores
    from interp.tasks.safety import safety_prompt_set

    start = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - start:7.0f}s] {message}", flush=True)

    checks = [(m.split("=")[0], tuple(int(k) for k in m.split("=")[1].split(",")))
              for m in args.checks.split(";") if m]
    draws = ({int(a): int(b) for a, b in (x.split(":") for x in args.random.split(","))}
             if ":" in args.random else int(args.random))
    model = load_model(args.model, device="cpu", show_progress=False)
    log("model loaded")
    harmful_test = read("harmful_val")[:args.test]
    train_source = read("harmful_train")
    assert not set(harmful_test) & set(train_source), "test split overlaps the training source"
    splits = select_refusing(model, train_source, read("harmless_train")[:400], harmful_test,
                             read("harmless_val")[:args.harmless_test],
                             n_calibration=args.calibration, n_train=args.train,
                             n_test=max(args.test, args.harmless_test), seed=args.seed,
                             max_new_tokens=args.calibration_tokens, batch_size=24)
    log(f"calibrated and selected: {splits.selection}")
    harmful = safety_prompt_set(model, splits.harmful_test, "harmful")
    harmless = safety_prompt_set(model, splits.harmless_test, "harmless")
    layers = None if args.layers is None else [int(x) for x in args.layers.split(",")]
    if args.rankings is None:
        scores = detect(model, splits.train, args.scan_method, 1e-5, args.sahara_steps, 1, layers,
                        splits.tokens, sahara_candidates=args.sahara_candidates,
                        progress=lambda f, m: None)
        scan = {"method": args.scan_method, "scan_seconds": scores.info["scan_seconds"],
                "sahara_seconds": scores.info.get("sahara_seconds"),
                "top_by": scores.info["top_by"], "sahara": scores.info.get("sahara")}
    else:
        scan = json.loads(Path(args.rankings).read_text())["scan"]
    head_sets = {name: [(h["layer"], h["head"]) for h in top] for name, top in scan["top_by"].items()}
    if scan.get("sahara"):
        head_sets["sahara"] = [tuple(h) for h in scan["sahara"]["heads"]]
    log(f"{scan['method']}: scan {scan['scan_seconds']} s, Sahara {scan.get('sahara_seconds')} s; "
        + "; ".join(f"{name}: {heads[:5]}" for name, heads in head_sets.items()))
    stub = HeadScores("safety", torch.zeros(model.n_layers, model.n_heads), model.model_id,
                      {"method": scan["method"], "eps": 1e-5})
    runs: dict[str, dict] = {}
    baseline = None
    # one k at a time, results written after each: the goal's k=3 first
    for method, ks in checks:
        for k in ks:
            check_start = time.perf_counter()
            verify = causal_check(model, stub, harmful, harmless, splits.tokens, (k,),
                                  draws[k] if isinstance(draws, dict) else draws, args.seed + k,
                                  method, 1e-5, args.max_new_tokens, batch_size=32,
                                  progress=lambda f, m: log(f"{method} k={k} {f:5.1%} {m}"),
                                  head_sets={n: h[:k] for n, h in head_sets.items() if len(h) >= k},
                                  baseline=baseline)
            baseline = verify.pop("_baseline")
            log(f"{method} k={k}: check {time.perf_counter() - check_start:.0f} s")
            for verdict in verify["verdicts"]:
                log(verdict)
            run = runs.setdefault(method, {"check_seconds": 0.0, "verify": None})
            run["check_seconds"] = round(run["check_seconds"] + time.perf_counter() - check_start, 1)
            if run["verify"] is None:
                run["verify"] = verify
            else:
                merged = run["verify"]
                merged["ks"] += verify["ks"]
                merged["n_random"].update(verify["n_random"])
                for name, by_k in verify["summary"].items():
                    merged["summary"].setdefault(name, {}).update(by_k)
                merged["verdicts"] += verify["verdicts"]
                merged["head_sets"].update({f"{n} (k={k})": h for n, h in verify["head_sets"].items()})
                merged["conditions"].update({f"{n} ({method}, k={k})" if n.startswith("random") else n: c
                                             for n, c in verify["conditions"].items()})
            _write(args, model, splits, scan, runs, time.perf_counter() - start,
                   torch.get_num_threads())
    log("done")


def _write(args, model, splits, scan, runs, total, threads) -> None:
    result = {"model_id": model.model_id, "args": vars(args), "total_seconds": round(total, 1),
              "torch_threads": threads, "cpu": platform.processor() or platform.machine(),
              "train_selection": splits.selection,
              "train_instructions": [m["instruction"] for m in splits.train.metadata],
              "refusal_tokens": splits.tokens.to_json(), "scan": scan, "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{args.out}.md").write_text(markdown(result))


def _f(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def _with_interval(value, interval):
    return _f(value) + ("" if not interval else f" [{interval[0]:.2f}, {interval[1]:.2f}]")


def markdown(r: dict) -> str:
    from benchmarks.measure import markdown_table

    args = r["args"]
    command = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in args.items() if v is not None)
    lines = [f"# Safety heads of {r['model_id']} on a held-out source: Ships vs refusal log-odds",
             "", f"Command: `python -m benchmarks.safety_directional {command}`",
             f"CPU: {r['cpu']}, torch threads: {r['torch_threads']}. Total {r['total_seconds']} s.",
             f"Training prompts (harmful_train.json: AdvBench, MaliciousInstruct, TDC2023): "
             f"{r['train_selection']}. Test: harmful_val.json (HarmBench), harmless_val.json "
             "(Alpaca). Refusal-start tokens: "
             + ", ".join(repr(t["token"]) for t in r["refusal_tokens"]["refusal"]), ""]
    scan = r["scan"]
    lines += [f"## Rankings: one {scan['method']} scan of every head (both scores from it; "
              f"{scan['scan_seconds']} s, Sahara {scan['sahara_seconds']} s)", ""]
    tops = [{"rank": i + 1, **{name: f"L{t[i]['layer']}H{t[i]['head']}"
                               + ("" if t[i]["score"] is None else f" ({t[i]['score']:.3f})")
                               for name, t in scan["top_by"].items()}} for i in range(5)]
    if scan.get("source"):
        lines += [f"Rankings from {scan['source']}.", ""]
    lines += [markdown_table(tops, list(tops[0])), ""]
    if scan.get("sahara"):
        lines += ["Sahara set: " + ", ".join(f"L{l}H{h}" for l, h in scan["sahara"]["heads"]), ""]
    for method, run in r["runs"].items():
        verify = run["verify"]
        base = verify["baseline"]["harmful"]
        lines += [f"## Causal check, heads ablated with {method} ({run['check_seconds']} s)", "",
                  f"Held-out: {verify['n_harmful']} harmful, {verify['n_harmless']} harmless, "
                  f"{verify['max_new_tokens']} new tokens, random draws per k {verify['n_random']}. "
                  f"Baseline refusal rate: generation {_f(base['refusal_rate_generation'])}, "
                  f"log-odds {_f(base['refusal_rate_logodds'])}.", ""]
        rows = []
        for set_name, by_k in verify["summary"].items():
            for k_name, row in by_k.items():
                rows.append({
                    "set": f"{set_name} {k_name}",
                    "heads": " ".join(f"L{l}H{h}" for l, h in row["heads"]),
                    "gen refusal top [95% prompts]": _with_interval(
                        row["refusal_rate_generation_top"], row["refusal_rate_generation_top_interval"]),
                    "gen refusal random [95% draws]": _with_interval(
                        row["refusal_rate_generation_random"], row["refusal_rate_generation_random_interval"]),
                    "random max change (gen)": _f(row["refusal_rate_generation_random_max_change"]),
                    "log-odds refusal top": _f(row["refusal_rate_logodds_top"]),
                    "log-odds refusal random [95%]": _with_interval(
                        row["refusal_rate_logodds_random"], row["refusal_rate_logodds_random_interval"]),
                    "lowers (gen / log-odds)": f"{'yes' if row['lowers_refusal_generation'] else 'no'}"
                                               f" / {'yes' if row['lowers_refusal_logodds'] else 'no'}",
                    "halves (gen)": "yes" if row["halves_refusal_generation"] else "no",
                    "harmless same reply top / random": f"{_f(row['harmless_same_as_baseline_top'])}"
                                                        f" / {_f(row['harmless_same_as_baseline_random'])}",
                    "harmless refusal top / random": f"{_f(row['harmless_refusal_rate_generation_top'])}"
                                                     f" / {_f(row['harmless_refusal_rate_generation_random'])}",
                })
        lines += [markdown_table(rows, list(rows[0])), ""]
        lines += ["Verdicts:", ""] + [f"- {v}" for v in verify["verdicts"]] + [""]
        lines += ["Goal (top-3 halves the generation refusal rate, random 3-head sets move it by at "
                  "most 0.10):", ""]
        for set_name, by_k in verify["summary"].items():
            row = by_k.get("top3")
            if row is None:
                continue
            change = row["refusal_rate_generation_random_max_change"]
            met = row["halves_refusal_generation"] and change is not None and change <= 0.10
            lines.append(f"- {set_name}: top-3 {_f(row['refusal_rate_generation_top'])} vs baseline "
                         f"{_f(row['refusal_rate_generation_baseline'])} (halved: "
                         f"{'yes' if row['halves_refusal_generation'] else 'no'}); random 3-head "
                         f"sets moved it by at most {_f(change)}: goal {'MET' if met else 'not met'}")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
