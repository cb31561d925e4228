"""CPU: what ACT with in-forward sink finding costs, against the same forward without it.

SmolLM2-135M, fp32, one prompt of --tokens tokens of real text (Paul Graham essays from the
shared test data), prefill with logits for the last position only, one torch thread. Cases, run
interleaved in one process (so a shared machine's load hits them alike), --reps times each:

    no edit            kernels' "interp" attention, nothing to do: torch SDPA
    ACT, 1 head/layer  30 heads: in each layer the head with the most sinks past the first on
                       this text (a search keeps a few dozen heads; these do the most work)
    ACT, all heads     all 270 heads (the paper's "calibrate everything" ablation)

Reports the median CPU seconds and wall seconds per forward, the ratio to "no edit" (goal for
calibrated heads: at most 1.2x), and the load average before and after. On a loaded machine the
difference of two medians is noisy, so the CPU seconds spent inside ACT's own two passes
(`kernels.act`: the statistics pass, then the correction or the exact pass) are also timed
directly, per forward.

    python benchmarks/act_overhead.py [--tokens 2048] [--reps 5]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kernels.act  # noqa: E402
from interp.forward import kernel_attention  # noqa: E402
from interp.models import load_model  # noqa: E402
from interp.steering import act_calibration, find_sinks  # noqa: E402

TEXT_DIR = ROOT.parent / "shared" / "data" / "haystack"


def busiest_head_per_layer(model, text: str) -> list[tuple[int, int]]:
    """Per layer, the head with the most sinks past the first on `text` (head 0 if none)."""
    sinks = find_sinks(model, text)
    heads = []
    for layer in range(model.n_layers):
        counts = [len(sinks.get((layer, h), [])) for h in range(model.n_heads)]
        heads.append((layer, max(range(model.n_heads), key=counts.__getitem__)))
    return heads, sum(len(sinks.get(h, [])) for h in heads)


class PassTimer:
    """CPU seconds spent in kernels.act's passes (wrapping its pair methods while it is on)."""

    def __init__(self):
        self.seconds = 0.0
        self.exact_pairs = self.corrected_pairs = 0

    def __enter__(self):
        self.saved = {name: getattr(kernels.act._Pairs, name) for name in ("statistics", "correct", "run")}
        for name, method in self.saved.items():
            setattr(kernels.act._Pairs, name, self._timed(name, method))
        return self

    def __exit__(self, *exc):
        for name, method in self.saved.items():
            setattr(kernels.act._Pairs, name, method)

    def _timed(self, name, method):
        def timed(pairs, *args):
            c0 = time.process_time()
            result = method(pairs, *args)
            self.seconds += time.process_time() - c0
            if name == "correct":
                self.corrected_pairs += int(result[1].sum())
            elif name == "run":
                self.exact_pairs += len(pairs.b)
            return result
        return timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "act_overhead.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()

    model = load_model("smollm2-135m", device="cpu", dtype=torch.float32, show_progress=False)
    text = " ".join(p.read_text() for p in sorted(TEXT_DIR.glob("*.txt")))
    ids = torch.tensor([model.encode(text)[: args.tokens]])
    prompt = model.tokenizer.decode(ids[0], skip_special_tokens=True)
    one_per_layer, n_sinks = busiest_head_per_layer(model, prompt)
    all_heads = [(layer, h) for layer in range(model.n_layers) for h in range(model.n_heads)]
    cases = {
        "no edit": None,
        f"ACT, 1 head/layer ({len(one_per_layer)} heads)": act_calibration(model, heads=one_per_layer),
        f"ACT, all heads ({len(all_heads)})": act_calibration(model, heads=all_heads),
    }

    def forward(edit) -> tuple[float, float, PassTimer]:
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode(), PassTimer() as passes, kernel_attention(model, edit=edit):
            model.hf_model(ids, use_cache=False, logits_to_keep=1)
        return time.process_time() - c0, time.perf_counter() - t0, passes

    for edit in cases.values():   # warm up every path once
        forward(edit)
    times = {name: [] for name in cases}
    for rep in range(args.reps):
        for name, edit in cases.items():
            times[name].append(forward(edit))
        print(f"rep {rep + 1}/{args.reps}: " + ", ".join(
            f"{n} {t[-1][0]:.2f}s" for n, t in times.items()), flush=True)
    load_after = os.getloadavg()

    base_cpu = statistics.median(c for c, _, _ in times["no edit"])
    base_wall = statistics.median(w for _, w, _ in times["no edit"])
    lines = [
        "# ACT overhead: in-forward sink finding + calibration vs the plain forward (CPU)",
        "",
        f"SmolLM2-135M, fp32, prefill of {ids.shape[1]} tokens of real text (Paul Graham essays, "
        f"shared test data), logits for the last position only; torch.set_num_threads(1); "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs shared with other "
        f"jobs: load average {load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f} "
        f"before, {load_after[0]:.1f} / {load_after[1]:.1f} / {load_after[2]:.1f} after. "
        f"Cases interleaved, {args.reps} runs each after one warm-up; medians. CPU seconds are "
        "the process's own time (less sensitive to the other jobs than wall time).",
        "",
        f"The 1-head-per-layer set has {n_sinks} sinks past the first on this text in total.",
        "",
        "| case | CPU s | x no edit | wall s | x no edit | CPU s in ACT's passes | 1 + that / no edit "
        "| pairs corrected / exact pass |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in times.items():
        cpu, wall = statistics.median(c for c, _, _ in runs), statistics.median(w for _, w, _ in runs)
        inside = statistics.median(p.seconds for _, _, p in runs)
        last = runs[-1][2]
        lines.append(f"| {name} | {cpu:.2f} | {cpu / base_cpu:.2f} | {wall:.2f} | {wall / base_wall:.2f} "
                     f"| {inside:.2f} | {1 + inside / base_cpu:.2f} | {last.corrected_pairs} / "
                     f"{last.exact_pairs} |")
    lines += ["", "Command: `python benchmarks/act_overhead.py --tokens "
              f"{args.tokens} --reps {args.reps}`", ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
