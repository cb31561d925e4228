"""SAE benchmarks on SmolLM2-135M: SAE quality, head codes against the path-patching IOI circuit
(and attribution patching's head ranking beside them), sensitivity to the number of SAE training
examples, wall time, and the faithfulness of a sparse feature circuit against its size.

    python -m benchmarks.sae                     # everything -> benchmarks/results/sae.{md,json}
    python -m benchmarks.sae --parts quality,heads

The reference circuit is the recorded path-patching circuit of SmolLM2
(benchmarks/results/ioi_circuit.json, Wang et al.'s receivers; 15 heads). Head-code
hyperparameters (l1, negatives) were chosen on IOI prompts of seed 0; every figure here is on
prompts of other seeds (discovery seed 1, faithfulness evaluation seed 1001).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def load_reference() -> list[tuple[int, int]]:
    runs = json.loads((RESULTS / "ioi_circuit.json").read_text())["runs"]
    run = next(r for r in runs if r["row"]["model"] == "smollm2-135m" and r["row"]["receivers"] == "paper")
    return sorted((h["layer"], h["head"]) for h in run["circuit"]["heads"])


def part_quality(model, args) -> dict:
    from circuits.sae import train_sae

    out = {}
    for k in args.quality_k:
        trained = train_sae(model, args.quality_hook, features=args.quality_features, k=k,
                            tokens=args.quality_tokens, batch_size=1024, loss_windows=8,
                            show_progress=False)
        report = {key: value for key, value in trained.report.items()}
        print(f"quality k={k}: EV {report['explained_variance']:.3f} L0 {report['l0']:.1f} "
              f"dead {report['dead_fraction']:.3f} dLoss {report['loss_increase']:.3f} "
              f"({report['seconds']:.0f}s)", flush=True)
        out[f"k={k}"] = report
    return out


def _attribution_scores(model, prompts) -> torch.Tensor:
    """|effect| of each head by attribution patching (noising), summed over any position axis."""
    from interp.patching.attribution import attribution_patch

    result = attribution_patch(model, prompts, "heads", direction="noise")
    values = (result.values - 1.0).abs()
    while values.ndim > 2:
        values = values.sum(-1)
    return values


def part_heads(model, args, reference) -> dict:
    from circuits.sae.discover import head_faithfulness_curve, rank_against
    from circuits.sae.head_codes import head_codes, ioi_negatives, task_examples
    from interp.tasks.ioi import ioi_prompts

    out = {"reference": [f"{l}.{h}" for l, h in reference]}
    started = time.perf_counter()
    prompts = ioi_prompts(model, n=args.n_prompts, seed=1)
    examples = task_examples(model, prompts, ioi_negatives(model, prompts, args.negatives, seed=1))
    cache_seconds = time.perf_counter() - started
    out["examples"] = examples.info
    out["activation_seconds"] = round(cache_seconds, 1)
    print(f"head outputs of {examples.vectors.shape[0]} examples in {cache_seconds:.0f}s", flush=True)

    sensitivity = {}
    for n_sae in args.n_sae_examples:
        runs = []
        for trial in range(args.trials):
            t = time.perf_counter()
            result = head_codes(examples, n_sae, l1_coefficient=args.l1, seed=trial)
            seconds = time.perf_counter() - t
            node, edge = rank_against(result.node, reference), rank_against(result.edge_heads, reference)
            runs.append({"roc_auc": node["roc_auc"], "average_precision": node["average_precision"],
                         "edge_roc_auc": edge["roc_auc"], "edge_average_precision": edge["average_precision"],
                         "seconds": seconds})
        summary = {key: {"mean": statistics.mean(r[key] for r in runs),
                         "std": statistics.pstdev(r[key] for r in runs)} for key in runs[0]}
        sensitivity[n_sae] = {"runs": runs, **summary}
        print(f"n_sae_examples={n_sae}: node AUC {summary['roc_auc']['mean']:.3f} +- "
              f"{summary['roc_auc']['std']:.3f}, AP {summary['average_precision']['mean']:.3f}; edge AUC "
              f"{summary['edge_roc_auc']['mean']:.3f}; {summary['seconds']['mean']:.1f}s", flush=True)
    out["sensitivity"] = sensitivity
    out["chance_average_precision"] = len(reference) / model.n_total_heads

    t = time.perf_counter()
    attribution = _attribution_scores(model, prompts)
    out["attribution_patching"] = {**rank_against(attribution, reference),
                                   "seconds": round(time.perf_counter() - t, 1)}
    print(f"attribution patching: {out['attribution_patching']}", flush=True)

    default = head_codes(examples, args.default_n_sae, l1_coefficient=args.l1, seed=0)
    eval_prompts = ioi_prompts(model, n=args.n_eval, seed=1001)
    t = time.perf_counter()
    out["faithfulness_sae_heads"] = head_faithfulness_curve(model, eval_prompts, default.node)
    out["faithfulness_attribution"] = head_faithfulness_curve(model, eval_prompts, attribution)
    out["faithfulness_seconds"] = round(time.perf_counter() - t, 1)
    for name in ("faithfulness_sae_heads", "faithfulness_attribution"):
        c = out[name]
        print(f"{name}: CPR {c['cpr']:.3f} CMD {c['cmd']:.3f} (random CMD {c['random_cmd']:.3f})", flush=True)
    return out


def part_end_to_end(model, args, reference) -> dict:
    from circuits.sae.discover import sae_heads

    t = time.perf_counter()
    result = sae_heads(model, "ioi", n_prompts=args.n_prompts, n_sae_examples=args.default_n_sae,
                       l1_coefficient=args.l1, negatives=args.negatives, faithfulness=False,
                       reference=reference, seed=1)
    seconds = time.perf_counter() - t
    print(f"end to end sae_heads: {seconds:.0f}s, AUC {result['roc_auc']:.3f}", flush=True)
    return {"seconds": round(seconds, 1), "roc_auc": result["roc_auc"],
            "average_precision": result["average_precision"], "n_prompts": args.n_prompts}


def part_features(model, args) -> dict:
    from circuits.sae import train_sae
    from circuits.sae.feature_circuits import discover_feature_circuit
    from interp.tasks.ioi import ioi_prompts

    saes = []
    for layer in args.feature_layers:
        trained = train_sae(model, f"blocks.{layer}.hook_resid_pre", features=args.feature_features,
                            k=32, tokens=args.feature_tokens, batch_size=1024, loss_windows=4,
                            show_progress=False)
        print(f"feature SAE layer {layer}: EV {trained.report['explained_variance']:.3f}", flush=True)
        saes.append(trained)
    out = {"saes": {s.sae.cfg.hook_name: {k: s.report[k] for k in ("explained_variance", "l0",
                                                                    "dead_fraction", "loss_increase")}
                    for s in saes}}
    for method in args.feature_methods:
        t = time.perf_counter()
        found = discover_feature_circuit(model, ioi_prompts(model, n=args.n_feature_prompts, seed=1),
                                         ioi_prompts(model, n=args.n_feature_prompts, seed=1001), saes,
                                         method=method, steps=args.ig_steps, nodes_per_point=10)
        ev = found.evaluation
        out[method] = {"curve": ev["faithfulness_curve"], "random_curve": ev["random_curve"],
                       "cpr": ev["cpr"], "cmd": ev["cmd"], "random_cmd": ev["random_cmd"],
                       "n_nodes": ev["n_nodes"], "seconds": round(time.perf_counter() - t, 1),
                       "discovery_seconds": found.info["discovery_seconds"],
                       "top_nodes": found.nodes[:10]}
        print(f"feature circuit ({method}): CPR {ev['cpr']:.3f} CMD {ev['cmd']:.3f} random CMD "
              f"{ev['random_cmd']:.3f}; curve {[(p['k'], round(p['faithfulness'], 3)) for p in ev['faithfulness_curve']]}",
              flush=True)
    return out


def markdown(results: dict) -> str:
    lines = ["# SAE benchmarks (SmolLM2-135M)", "",
             f"Machine: {results['machine']}. Command: `{results['command']}`.", ""]
    if "quality" in results:
        lines += ["## SAE quality at one residual layer (held-out windows of the shipped novel)", "",
                  "| hook | k | features | tokens | explained variance | L0 | dead | loss clean | loss spliced | increase | recovered | s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in results["quality"].values():
            lines.append(f"| {r['hook']} | {r['k']} | {r['features']} | {r['tokens_trained']} | "
                         f"{r['explained_variance']:.3f} | {r['l0']:.1f} | {r['dead_fraction']:.3f} | "
                         f"{r['loss_clean']:.3f} | {r['loss_spliced']:.3f} | {r['loss_increase']:.3f} | "
                         f"{r['fraction_loss_recovered']:.3f} | {r['seconds']:.0f} |")
        lines += ["", "Goal: explained variance >= 0.8 at L0 <= 64.", ""]
    if "heads" in results:
        h = results["heads"]
        lines += ["## Head codes (O'Neill & Bui) against the path-patching IOI circuit", "",
                  f"Reference: {len(h['reference'])} heads ({', '.join(h['reference'])}); chance "
                  f"average precision {h['chance_average_precision']:.3f}. Examples: {h['examples']}. "
                  f"Head outputs computed in {h['activation_seconds']} s.", "",
                  "| SAE training examples | node ROC-AUC | node AP | edge ROC-AUC | edge AP | seconds (SAE + scoring) |",
                  "|---|---|---|---|---|---|"]
        for n, s in h["sensitivity"].items():
            lines.append(f"| {n} | {s['roc_auc']['mean']:.3f} +- {s['roc_auc']['std']:.3f} | "
                         f"{s['average_precision']['mean']:.3f} +- {s['average_precision']['std']:.3f} | "
                         f"{s['edge_roc_auc']['mean']:.3f} +- {s['edge_roc_auc']['std']:.3f} | "
                         f"{s['edge_average_precision']['mean']:.3f} | {s['seconds']['mean']:.1f} |")
        a = h["attribution_patching"]
        lines += ["", f"Attribution patching (|noising effect| per head, same prompts): ROC-AUC "
                      f"{a['roc_auc']:.3f}, AP {a['average_precision']:.3f} ({a['seconds']} s). "
                      "EAP-IG's ranking: not measured here (the EAP work had not landed).",
                  "", "Paper (GPT-2 small, IOI): ROC-AUC 0.868. Goal here: >= 0.90.", "",
                  "Faithfulness of head rankings (top k% of heads clean, the rest given their "
                  "corrupted z; evaluation prompts of seed 1001):", "",
                  "| ranking | CPR | CMD | random CMD | " + " | ".join(
                      f"f({p['k_percent']}%)" for p in h["faithfulness_sae_heads"]["faithfulness_curve"]) + " |",
                  "|---|---|---|---|" + "---|" * len(h["faithfulness_sae_heads"]["faithfulness_curve"])]
        for name in ("faithfulness_sae_heads", "faithfulness_attribution"):
            c = h[name]
            lines.append(f"| {name.removeprefix('faithfulness_')} | {c['cpr']:.3f} | {c['cmd']:.3f} | "
                         f"{c['random_cmd']:.3f} | " + " | ".join(f"{p['faithfulness']:.2f}" for p in c["faithfulness_curve"]) + " |")
        lines.append("")
    if "end_to_end" in results:
        e = results["end_to_end"]
        lines += ["## Wall time", "", f"`sae_heads` end to end (IOI prompts, head outputs, SAE, "
                  f"scores; model already loaded): {e['seconds']} s for {e['n_prompts']} prompts "
                  f"(ROC-AUC {e['roc_auc']:.3f}). Goal: at most 2 minutes on CPU; seconds once "
                  "activations are cached (see the sensitivity table's seconds column).", ""]
    if "features" in results:
        f = results["features"]
        lines += ["## Sparse feature circuit faithfulness against its size (IOI)", "",
                  f"SAEs: {json.dumps(f['saes'])}", ""]
        for method in ("atp", "ig"):
            if method in f:
                m = f[method]
                lines += [f"### node effects by {method} ({m['n_nodes']} nodes; {m['seconds']} s)", "",
                          "| k % | nodes | faithfulness | random |", "|---|---|---|---|"]
                for p, r in zip(m["curve"], m["random_curve"]):
                    lines.append(f"| {p['k_percent']} | {p['k']} | {p['faithfulness']:.3f} | {r['faithfulness']:.3f} |")
                lines += ["", f"CPR {m['cpr']:.3f}, CMD {m['cmd']:.3f}, random CMD {m['random_cmd']:.3f}.", ""]
    lines += ["## Notes", "",
              "- Head-code settings (300 features, l1 1.0, 200 steps of 512 vectors, negatives 's1', "
              "10 SAE examples) were chosen on 100 IOI prompts of seed 0 (198 examples), where node "
              "ROC-AUC was 0.80-0.85 across settings (ABC negatives 0.75-0.80, l1 3 or 10 lower). "
              "The table above is on seed-1 prompts, never tuned on.",
              "- 's1' negatives replace the first mention of the subject (the paper's); SmolLM2 "
              "still prefers the indirect object on them by about 2 logits (vs 4.2 on positives), "
              "so they take the answer away only in part; ABC negatives (0.2 logits) ranked worse.",
              "- The machine was shared by several engineers (load average 12-16 on 2 cores during "
              "every run), so wall times are 3-6x what an idle machine gives.",
              "- Feature-circuit SAEs were trained on 20k tokens only (time), hence their low "
              "explained variance; their error nodes carry most of the effect.", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parts", default="quality,heads,end_to_end,features")
    parser.add_argument("--quality-hook", default="blocks.6.hook_resid_pre")
    parser.add_argument("--quality-k", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--quality-features", type=int, default=4096)
    parser.add_argument("--quality-tokens", type=int, default=150_000)
    parser.add_argument("--n-prompts", type=int, default=250)
    parser.add_argument("--n-sae-examples", type=int, nargs="+", default=[5, 10, 25, 50, 100, 250])
    parser.add_argument("--default-n-sae", type=int, default=10)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--l1", type=float, default=1.0)
    parser.add_argument("--negatives", default="s1")
    parser.add_argument("--n-eval", type=int, default=64)
    parser.add_argument("--feature-layers", type=int, nargs="+", default=[8, 16, 22])
    parser.add_argument("--feature-features", type=int, default=2048)
    parser.add_argument("--feature-tokens", type=int, default=40_000)
    parser.add_argument("--feature-methods", nargs="+", default=["atp", "ig"])
    parser.add_argument("--ig-steps", type=int, default=5)
    parser.add_argument("--n-feature-prompts", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "sae"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import interp

    model = interp.load_model("smollm2-135m", device="cpu", show_progress=False)
    reference = load_reference()
    parts = args.parts.split(",")
    results = {"machine": f"{platform.machine()}, {args.threads} torch thread(s), no GPU, shared "
                          f"(load average at start {os.getloadavg()[0]:.1f})",
               "command": "python -m benchmarks.sae " + " ".join(os.sys.argv[1:])}
    out = Path(args.out)
    previous = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    for part in parts:
        started = time.perf_counter()
        if part == "quality":
            results["quality"] = part_quality(model, args)
        elif part == "heads":
            results["heads"] = part_heads(model, args, reference)
        elif part == "end_to_end":
            results["end_to_end"] = part_end_to_end(model, args, reference)
        elif part == "features":
            results["features"] = part_features(model, args)
        results.setdefault("part_seconds", {})[part] = round(time.perf_counter() - started, 1)
        merged = {**previous, **results, "load_average_end": os.getloadavg()[0]}
        out.with_suffix(".json").write_text(json.dumps(merged, indent=1, default=str))
        out.with_suffix(".md").write_text(markdown(merged))


if __name__ == "__main__":
    main()
