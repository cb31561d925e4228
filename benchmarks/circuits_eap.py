"""Edge attribution patching on SmolLM2-135M (and Gemma-3-270m where supported): MIB
faithfulness (CPR, CMD) of EAP, EAP-IG and path patching against random edge circuits, ROC-AUC
of EAP-IG's head scores against the path-patching IOI circuit, wall time.

    python -m benchmarks.circuits_eap                                  # SmolLM2, IOI + greater-than
    python -m benchmarks.circuits_eap --tasks ioi --methods eap-ig --n-discover 32 --n-eval 32

Every circuit is evaluated on prompts disjoint from its discovery prompts (circuits.tasks);
n_discover / n_eval are in the results. The random baseline (random edge circuits of each size,
`--n-random` per size) is computed once per task. The reference for ROC-AUC is the recorded
path-patching circuit of SmolLM2 (benchmarks/results/ioi_circuit.json, Wang et al.'s receivers,
15 heads) and, when the path method runs here, its own circuit. Results ->
benchmarks/results/circuits_eap.{md,json} (merged with earlier rows of other models/tasks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def recorded_path_circuit(model_name: str) -> list[tuple[int, int]] | None:
    runs = json.loads((RESULTS / "ioi_circuit.json").read_text())["runs"]
    for run in runs:
        if run["row"]["model"] == model_name and run["row"]["receivers"] == "paper":
            return sorted((h["layer"], h["head"]) for h in run["circuit"]["heads"])
    return None


def head_tensor(result: dict, model) -> torch.Tensor:
    scores = torch.zeros(model.n_layers, model.n_heads)
    for item in result["head_scores"]:
        scores[item["layer"], item["head"]] = item["score"]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="smollm2-135m")
    parser.add_argument("--tasks", default="ioi,greater-than")
    parser.add_argument("--methods", default="eap,eap-ig,path")
    parser.add_argument("--n-discover", type=int, default=32)
    parser.add_argument("--n-eval", type=int, default=32)
    parser.add_argument("--n-random", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="circuits_eap")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from circuits.discover import discover
    from circuits.faithfulness import CircuitRunner, faithfulness_curve
    from circuits.sae.discover import rank_against
    from circuits.tasks import task_split
    from interp.errors import InvalidInput
    from interp.models import load_model

    json_path, md_path = RESULTS / f"{args.out}.json", RESULTS / f"{args.out}.md"
    previous = json.loads(json_path.read_text()) if json_path.exists() else {"runs": []}
    runs = []
    for model_name in args.models.split(","):
        model = load_model(model_name, device="cpu")
        for task in args.tasks.split(","):
            random_result = None
            path_heads = eap_ig_heads = None
            for method in args.methods.split(","):
                if method == "path" and task != "ioi":
                    continue
                print(f"{model_name} {task} {method} ...", flush=True)
                try:
                    result = discover(model, task, method, n_discover=args.n_discover,
                                      n_eval=args.n_eval, n_random=0, steps=args.steps)
                except InvalidInput as error:
                    runs.append({"model": model_name, "task": task, "method": method, "error": str(error)})
                    print(f"  refused: {error}", flush=True)
                    continue
                row = {key: result.get(key) for key in (
                    "model", "task", "method", "cpr", "cmd", "n_discover", "n_eval",
                    "discovery_seconds", "seconds", "m_model", "m_empty", "n_edges")}
                row["curve"] = [round(p["faithfulness"], 4) for p in result["faithfulness_curve"]]
                if method == "path":
                    path_heads = sorted((h["layer"], h["head"]) for h in result["heads"])
                    row["path_heads"] = [f"{l}.{h}" for l, h in path_heads]
                    row["faithfulness_heads"] = result.get("faithfulness")
                if method == "eap-ig":
                    eap_ig_heads = sorted((h["layer"], h["head"]) for h in result["heads"])
                if task == "ioi" and method != "path":
                    reference = recorded_path_circuit(model_name)
                    if reference:
                        row["roc_auc_recorded_path"] = rank_against(head_tensor(result, model), reference)["roc_auc"]
                row["_head_scores"] = head_tensor(result, model)
                runs.append(row)
                print(f"  CPR {row['cpr']:.3f} CMD {row['cmd']:.3f} curve {row['curve']} "
                      f"({row['seconds']:.0f} s)", flush=True)
            if path_heads:
                for row in runs:
                    if row.get("task") == task and row.get("model") == model_name and "_head_scores" in row \
                            and row["method"] != "path":
                        row["roc_auc_path_here"] = rank_against(row["_head_scores"], path_heads)["roc_auc"]
            if eap_ig_heads and task != "ioi":  # issue 14: greater-than has no path circuit
                for row in runs:
                    if row.get("task") == task and row.get("model") == model_name and "_head_scores" in row \
                            and row["method"] != "eap-ig":
                        ranked = rank_against(row["_head_scores"], eap_ig_heads)
                        row["roc_auc_eap_ig_heads"] = ranked["roc_auc"]
                        row["ap_eap_ig_heads"] = ranked["average_precision"]
                        row["eap_ig_heads"] = [f"{l}.{h}" for l, h in eap_ig_heads]
            # random edge circuits of each size, once per task (the same evaluation prompts)
            if args.n_random < 1:
                continue
            print(f"{model_name} {task} random ...", flush=True)
            started = time.perf_counter()
            try:
                _, evaluate = task_split(model, task, args.n_discover, args.n_eval)
                runner = CircuitRunner(model, evaluate)
                zeros = torch.zeros(runner.graph.n_upstream, runner.graph.n_inputs)
                random_result = faithfulness_curve(runner, zeros, n_random=args.n_random)
                runs.append({"model": model_name, "task": task, "method": f"random (mean of {args.n_random})",
                             "cpr": random_result["random_cpr"], "cmd": random_result["random_cmd"],
                             "n_eval": len(evaluate), "seconds": round(time.perf_counter() - started, 1),
                             "curve": [round(p["faithfulness"], 4) for p in random_result["random_curve"]]})
                print(f"  random CMD {random_result['random_cmd']:.3f}", flush=True)
            except InvalidInput as error:
                print(f"  refused: {error}", flush=True)
    for row in runs:
        row.pop("_head_scores", None)
    keep = [r for r in previous["runs"] if (r.get("model"), r.get("task"), r.get("method"))
            not in {(x.get("model"), x.get("task"), x.get("method")) for x in runs}]
    all_runs = keep + runs
    command = "python -m benchmarks.circuits_eap " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out")
    meta = {"machine": f"{platform.machine()}, {args.threads} torch thread(s), no GPU",
            "commands": sorted(set(previous.get("meta", {}).get("commands", [])) | {command}),
            "k_percents": [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]}
    json_path.write_text(json.dumps({"meta": meta, "runs": all_runs}, indent=2))
    write_markdown(md_path, meta, all_runs)


def write_markdown(path: Path, meta: dict, runs: list[dict]) -> None:
    from benchmarks.measure import markdown_table

    def fmt(value, digits=3):
        return "" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))

    rows = [{"model": r.get("model"), "task": r.get("task"), "method": r.get("method"),
             "CPR": fmt(r.get("cpr")), "CMD": fmt(r.get("cmd")),
             "ROC-AUC vs path (recorded)": fmt(r.get("roc_auc_recorded_path")),
             "ROC-AUC vs path (this run)": fmt(r.get("roc_auc_path_here")),
             "ROC-AUC / AP vs EAP-IG heads": (f"{r['roc_auc_eap_ig_heads']:.3f} / "
                                              f"{r['ap_eap_ig_heads']:.3f}"
                                              if r.get("roc_auc_eap_ig_heads") is not None else ""),
             "n_discover": r.get("n_discover", ""), "n_eval": r.get("n_eval", ""),
             "discovery s": fmt(r.get("discovery_seconds"), 0), "total s": fmt(r.get("seconds"), 0),
             "error": r.get("error", "")} for r in runs]
    columns = ["model", "task", "method", "CPR", "CMD", "ROC-AUC vs path (recorded)",
               "ROC-AUC vs path (this run)", "ROC-AUC / AP vs EAP-IG heads", "n_discover", "n_eval",
               "discovery s", "total s"]
    if any(r["error"] for r in rows):
        columns.append("error")
    curves = [{"model": r.get("model"), "task": r.get("task"), "method": r.get("method"),
               **{f"{k}%": fmt(f, 2) for k, f in zip(meta["k_percents"], r.get("curve", []))}}
              for r in runs if r.get("curve")]
    text = ["# Circuit discovery by edge attribution patching (EAP, EAP-IG) vs path patching",
            "", f"Machine: {meta['machine']} (2 cores shared with other sessions: wall times are "
            "upper bounds). Commands:", ""] + [f"- `{c}`" for c in meta["commands"]] + [
            "", "Faithfulness as MIB: f(k) = (m(C_k) - m(empty)) / (m(model) - m(empty)) with every "
            "edge outside the top-k% edges patched from the corrupted run; CPR = area under f, "
            "CMD = area under |1 - f| (k as a fraction of the graph's edges; 70,651 for SmolLM2). "
            "Evaluation prompts are disjoint from discovery prompts. Path patching's curve ranks "
            "edges by their endpoints (circuits/discover.py). IOI metric: logit(IO) - logit(S); "
            "greater-than: p(tens digit after) - p(not after) (interp/tasks/greater_than.py).", "",
            markdown_table(rows, columns), "", "## Faithfulness curves f(k)", "",
            markdown_table(curves, ["model", "task", "method"] + [f"{k}%" for k in meta["k_percents"]]), ""]
    for r in runs:
        if r.get("path_heads"):
            text.append(f"Path-patching circuit found here ({r['model']}): {', '.join(r['path_heads'])}")
        if r.get("eap_ig_heads") and r.get("method") == "sae-heads":
            text.append(f"EAP-IG circuit heads, the reference for sae-heads on {r['task']} "
                        f"({r['model']}): {', '.join(r['eap_ig_heads'])}")
    # Observations written by hand live beside the generated tables and survive a rerun.
    notes = path.with_name(path.stem + "_notes.md")
    if notes.exists():
        text += ["", notes.read_text().rstrip("\n")]
    path.write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
