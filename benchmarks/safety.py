"""Issue 6's figures: safety heads of qwen2.5-coder-0.5b-instruct by Ships and Sahara, and the
causal check by refusal rate (first-token log-odds and generated replies).

    python -m benchmarks.safety                        # 16 train, 24 test, Sahara 3 steps
    python -m benchmarks.safety --train 8 --test 16 --sahara-steps 2 --sahara-candidates 24

Data (../shared/data, see its SOURCES.md): calibration and training prompts from
refusal_direction/harmful_train.json (AdvBench, MaliciousInstruct, TDC2023) and
harmless_train.json (Alpaca); held-out test prompts from refusal_direction/harmful_val.json
(HarmBench val) and harmless_val.json. The analysis is `interp.heads.safety.safety_analysis`,
the same function `interp safety` runs. Writes benchmarks/results/safety.{md,json}.
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
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "refusal_direction"


def read(name: str) -> list[str]:
    return [r["instruction"] for r in json.loads((DATA / f"{name}.json").read_text())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--calibration", type=int, default=12)
    parser.add_argument("--train", type=int, default=16)
    parser.add_argument("--test", type=int, default=24)
    parser.add_argument("--method", default="query_scale")
    parser.add_argument("--sahara-steps", type=int, default=3)
    parser.add_argument("--sahara-candidates", type=int, default=None)
    parser.add_argument("--random", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", default=None, help="scan only these layers (smoke runs)")
    parser.add_argument("--out", default="safety")
    args = parser.parse_args()

    import torch

    from interp.heads.safety import SAFETY, safety_analysis
    from interp.models import load_model

    torch.set_grad_enabled(False)
    model = load_model(args.model, device="cpu", show_progress=False)
    start = time.perf_counter()

    def progress(fraction, message):
        print(f"[{time.perf_counter() - start:7.0f}s] {fraction:5.1%} {message}", flush=True)

    scores = safety_analysis(
        model, read("harmful_train"), read("harmless_train")[:400], read("harmful_val"),
        read("harmless_val")[:args.test], n_calibration=args.calibration, n_train=args.train,
        n_test=args.test, seed=args.seed, method=args.method, eps=1e-5,
        sahara_steps=args.sahara_steps, sahara_candidates=args.sahara_candidates,
        n_random=args.random, max_new_tokens=args.max_new_tokens, progress=progress,
        layers=None if args.layers is None else [int(x) for x in args.layers.split(",")],
        batch_size=24)
    total = time.perf_counter() - start
    result = SAFETY.summary(scores)
    result.update({
        "total_seconds": round(total, 1), "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "args": vars(args),
        "train_selection": scores.info["train_selection"],
        "verify": scores.verify,
        "ships_top_logodds_drop": _logodds_drop(scores),
    })
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2))
    torch.save({"scores": scores.scores, **scores.details}, f"/tmp/{args.out}-details.pt")
    (RESULTS / f"{args.out}.md").write_text(markdown(result))
    print(markdown(result))


def _logodds_drop(scores) -> list[dict]:
    """Mean change of the training prompts' refusal log-odds when each top Ships head is ablated."""
    ablated = scores.details.get("refusal_logodds_ablated")
    base = scores.details.get("refusal_logodds_base")
    if ablated is None:
        return []
    return [{**h, "logodds_change": round(float((ablated[:, h["layer"], h["head"]] - base).mean()), 3)}
            for h in scores.top(10)]


def _f(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(r: dict) -> str:
    from benchmarks.measure import markdown_table

    lines = [f"# Safety heads of {r['model_id']}", "",
             f"Command: `python -m benchmarks.safety {' '.join(f'--{k.replace(chr(95), chr(45))} {v}' for k, v in r['args'].items() if v is not None)}`",
             f"CPU: {r['cpu']}, torch threads: {r['torch_threads']}. Total {r['total_seconds']} s.",
             f"Training prompts: {r['train_selection']}.", "",
             f"## Top-10 heads by Ships (full scan of all heads: {r['scan_seconds']} s)", ""]
    lines.append(markdown_table(
        [{"rank": i + 1, "head": f"L{h['layer']}H{h['head']}", "Ships (mean KL)": f"{h['score']:.4f}",
          "refusal log-odds change": h.get("logodds_change", "")}
         for i, h in enumerate(r["ships_top_logodds_drop"] or r["top_heads"])],
        ["rank", "head", "Ships (mean KL)", "refusal log-odds change"]))
    if r.get("sahara"):
        lines += ["", f"## Sahara head set ({r['sahara_seconds']} s)", "",
                  ", ".join(f"L{l}H{h} ({a:.2f} deg)" for (l, h), a in
                            zip(r["sahara"]["heads"], r["sahara"]["angles"]))]
    tokens = r.get("refusal_tokens") or {}
    lines += ["", "Refusal-start tokens (from the model's own replies): "
              + ", ".join(repr(t["token"]) for t in tokens.get("refusal", []))]
    verify = r.get("verify")
    if verify:
        base = verify["baseline"]["harmful"]
        lines += ["", f"## Causal check on {verify['n_harmful']} held-out harmful (HarmBench val) and "
                  f"{verify['n_harmless']} harmless prompts, {verify['max_new_tokens']} new tokens", "",
                  f"Baseline refusal rate: log-odds {_f(base['refusal_rate_logodds'])}, "
                  f"log-odds vs observed starts {_f(base['refusal_rate_logodds_observed'])}, "
                  f"generation {_f(base['refusal_rate_generation'])}; the two main metrics agree on "
                  f"{_f(base['agreement'])} of prompts.", ""]
        rows = []
        flat = [(f"{set_name} {k_name}", row) for set_name, by_k in verify["summary"].items()
                for k_name, row in by_k.items()]
        for name, row in flat:
            for which in ("top", "random"):
                rows.append({
                    "ablated": f"{name} {which}",
                    "heads": " ".join(f"L{l}H{h}" for l, h in row["heads"]) if which == "top"
                    else "; ".join(" ".join(f"L{l}H{h}" for l, h in hs) for hs in row["random_heads"]),
                    "refusal (log-odds)": _f(row[f"refusal_rate_logodds_{which}"]),
                    "refusal (generation)": _f(row[f"refusal_rate_generation_{which}"]),
                    "compliance x (log-odds)": _f(row[f"multiplier_logodds_{which}"]),
                    "compliance x (generation)": _f(row[f"multiplier_generation_{which}"]),
                    "refused -> complied (log-odds / gen)":
                        f"{_f(row[f'harmful_flip_rate_logodds_{which}'])} / "
                        f"{_f(row[f'harmful_flip_rate_generation_{which}'])}",
                    "harmless ppl": _f(row[f"harmless_perplexity_under_unablated_{which}"]),
                    "harmless same reply": _f(row[f"harmless_same_as_baseline_{which}"]),
                })
        base_ppl = verify["baseline"]["harmless_perplexity_under_unablated"]
        lines.append(markdown_table(rows, list(rows[0])))
        lines += ["", f"Baseline harmless perplexity (unablated replies under the unablated model): "
                  f"{_f(base_ppl)}. 'compliance x' = (1 - refusal rate ablated) / (1 - refusal rate "
                  "baseline), the paper's '16x' figure in our setting."]
        dis = base.get("disagreements") or []
        if dis:
            lines += ["", "Where the metrics disagree (baseline):"]
            lines += [f"- log-odds says {d['logodds_says']}, reply says {d['generation_says']}: "
                      f"{d['continuation'][:100]!r}" for d in dis]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
