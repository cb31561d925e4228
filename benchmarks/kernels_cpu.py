"""CPU: a SmolLM2 forward with the torch reference vs eager vs SDPA, at 2k-8k tokens.

Each case runs in a fresh subprocess (peak RSS is per process), a few times; the table reports
the best wall time, the CPU time of that run, the peak RSS of the process, and that peak minus
the RSS with the model loaded and warmed up.

    python benchmarks/kernels_cpu.py [--model /tmp/smol] [--tokens 2048 4096 8192] [--reps 2]

Cases:
    sdpa          plain transformers, attn_implementation="sdpa"
    eager         plain transformers, attn_implementation="eager" (N x N patterns)
    interp        kernels' "interp" attention, no edits/stats (delegates to SDPA)
    interp+stats  per-head lse, entropy, argmax, key mass (BOS) and received mass, every layer,
                  handed to a callback that reduces them (the scan workload)
    interp+act    ACT calibration on every head of every layer, no statistics
Logits are computed for the last position only (logits_to_keep=1), so that the attention, not
the 49k-vocabulary logits, decides the memory.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("sdpa", "eager", "interp", "interp+stats", "interp+act")


def run_case(model_path: str, case: str, n_tokens: int, reps: int) -> dict:
    """Inside the subprocess: load, warm up, time `reps` forwards, report JSON."""
    import resource

    import torch
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(ROOT))
    from kernels import AttentionEdit, AttentionStatsRequest, SinkCalibration, attention_session

    impl = "eager" if case == "eager" else "sdpa"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32,
                                                 attn_implementation=impl).eval()
    cfg = model.config
    ids = torch.randint(10, cfg.vocab_size - 10, (1, n_tokens), generator=torch.Generator().manual_seed(0))
    bos = torch.zeros(1, n_tokens, dtype=torch.bool)
    bos[:, 0] = True
    stats = AttentionStatsRequest(lse=True, entropy=True, argmax=True, key_mask=bos, received=True)
    edit = AttentionEdit((SinkCalibration(
        heads=[(l, h) for l in range(cfg.num_hidden_layers) for h in range(cfg.num_attention_heads)],
        sink_positions=(0,), beta=0.4),))
    kept = {}

    def reduce(layer, result):   # what a scan does: keep a few numbers, drop the tensors
        kept[layer] = {k: float(v.float().mean()) for k, v in result.items()}

    def forward():
        if case.startswith("interp"):
            with attention_session(model, stats=stats if case == "interp+stats" else None,
                                   edit=edit if case == "interp+act" else None, on_stats=reduce):
                model(ids, use_cache=False, logits_to_keep=1)
        else:
            model(ids, use_cache=False, logits_to_keep=1)

    with torch.inference_mode():
        model(ids[:, :64], use_cache=False, logits_to_keep=1)      # warm up kernels
        base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        best = None
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            forward()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if best is None or wall < best[0]:
                best = (wall, cpu)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": case, "tokens": n_tokens, "wall_s": best[0], "cpu_s": best[1],
            "peak_rss_mb": peak, "model_rss_mb": base_rss, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.environ.get("SMOLLM2_PATH", "/tmp/smol"))
    ap.add_argument("--tokens", type=int, nargs="+", default=[2048, 4096, 8192])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "kernels_cpu.md"))
    ap.add_argument("--_child", nargs=3, metavar=("CASE", "TOKENS", "REPS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        case, n, reps = args._child
        print(json.dumps(run_case(args.model, case, int(n), int(reps))))
        return

    rows = []
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    for n in args.tokens:
        for case in args.cases:
            reps = args.reps if n <= 4096 else 1   # 8k eager takes minutes per run
            proc = subprocess.run([sys.executable, __file__, "--model", args.model,
                                   "--_child", case, str(n), str(reps)],
                                  capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                print(f"{case} @ {n}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                rows.append({"case": case, "tokens": n, "error": proc.stderr.strip().splitlines()[-1]})
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{case:13s} {n:6d} tokens  wall {row['wall_s']:7.2f}s  cpu {row['cpu_s']:7.2f}s  "
                  f"peak RSS {row['peak_rss_mb']:7.0f} MB (model loaded: {row['model_rss_mb']:.0f} MB)",
                  flush=True)
    write_table(rows, args)


def write_table(rows: list[dict], args) -> None:
    load = os.getloadavg()
    lines = [
        "# kernels: CPU forward, torch reference vs eager vs SDPA",
        "",
        f"SmolLM2-135M ({args.model}), fp32, batch 1, logits for the last position only; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}. "
        f"Best of {args.reps} runs per case (1 above 4096 tokens), each case in its own process, "
        f"torch threads = 2 (the default here).",
        "",
        "| tokens | case | wall s | x sdpa | CPU s | peak RSS MB | above model MB | x sdpa |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sorted({r["tokens"] for r in rows}):
        base = next((r for r in rows if r["tokens"] == n and r["case"] == "sdpa" and "error" not in r), None)
        for r in (r for r in rows if r["tokens"] == n):
            if "error" in r:
                lines.append(f"| {n} | {r['case']} | failed: {r['error'][:60]} | | | | | |")
                continue
            above = r["peak_rss_mb"] - r["model_rss_mb"]
            xt = f"{r['wall_s'] / base['wall_s']:.2f}" if base else ""
            xm = f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}" if base else ""
            lines.append(f"| {n} | {r['case']} | {r['wall_s']:.2f} | {xt} | {r['cpu_s']:.2f} | "
                         f"{r['peak_rss_mb']:.0f} | {above:.0f} | {xm} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
