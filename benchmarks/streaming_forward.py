"""Issue 2's budget: a forward that reduces every head's attention to per-head statistics,
against a plain sdpa forward and TransformerLens's `run_with_cache`, on SmolLM2-135M.

    python -m benchmarks.streaming_forward                 # 2048 and 8192 tokens
    python -m benchmarks.streaming_forward --tokens 2048 --with-cache

Each case runs in its own process; peak memory is the process's peak resident set while the
forward runs (sampled every 5 ms), time is the forward alone (model already loaded). The
statistics are what the sink/entropy/retrieval scans need per head: mass on the first key,
row entropy and argmax key, each reduced over queries as the forward runs.
Writes benchmarks/results/streaming_forward.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).parent / "results" / "streaming_forward.md"
TEXT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "haystack"


def long_text_ids(encode, n_tokens: int) -> "torch.Tensor":
    """n_tokens of natural text (Paul Graham essays, test data), repeated if needed."""
    import torch

    text = "\n\n".join(p.read_text() for p in sorted(TEXT_DIR.glob("*.txt")))
    ids = encode(text)
    while len(ids) < n_tokens:
        ids = ids + ids
    return torch.tensor([ids[:n_tokens]])


def plain_sdpa_forward(n_tokens: int):
    """The baseline: transformers alone with sdpa attention, the same weights (the embedded
    model's converted directory) loaded without the bridge. Returns the forward to time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from interp.embedded import EMBEDDED_MODELS, ensure_converted

    path = str(ensure_converted(EMBEDDED_MODELS["smollm2-135m"], show_progress=False))
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = long_text_ids(lambda text: tokenizer(text, add_special_tokens=False).input_ids, n_tokens)
    plain = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                 attn_implementation="sdpa").eval()
    return lambda: plain(ids)


def run_one(case: dict) -> dict:
    import torch

    from benchmarks.measure import PeakRSS
    from interp import load_model

    torch.set_grad_enabled(False)
    method = case["method"]
    if method == "sdpa":
        forward = plain_sdpa_forward(case["tokens"])
    else:
        model = load_model("smollm2-135m", device="cpu", show_progress=False)
        ids = long_text_ids(model.encode, case["tokens"])
    if method == "streaming":
        from interp.attention_stats import masked_query_mean, stream_attention_stats
        from interp.tokens import TokenBatch
        from kernels import AttentionStatsRequest

        batch = TokenBatch(ids, torch.tensor([ids.shape[1]]))
        key_mask = torch.zeros_like(ids, dtype=torch.bool)
        key_mask[:, 0] = True
        request = AttentionStatsRequest(entropy=True, argmax=True, key_mask=key_mask)

        def reduce(layer, stats, sub_batch):
            return torch.stack([
                masked_query_mean(stats["key_mass"], sub_batch),
                masked_query_mean(stats["entropy"], sub_batch),
                masked_query_mean(stats["argmax"].float(), sub_batch),
            ], -1)  # [b, H, 3]

        def forward():
            out = stream_attention_stats(model, batch, request, reduce, batch_size=1)
            assert out.shape == (model.n_layers, 1, model.n_heads, 3)
    elif method == "run_with_cache":
        def forward():
            model.bridge.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_pattern"))
    elif method != "sdpa":
        raise ValueError(method)
    with PeakRSS() as memory:
        start = time.perf_counter()
        forward()
        seconds = time.perf_counter() - start
    return {**case, "seconds": round(seconds, 2), "peak_gb": round(memory.peak / 2**30, 2),
            "forward_gb": round((memory.peak - memory.start) / 2**30, 2)}


def main() -> None:
    from benchmarks.measure import markdown_table, run_case

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--with-cache", action="store_true",
                        help="also run TransformerLens run_with_cache (slow; 2048 tokens only)")
    args = parser.parse_args()
    rows = []
    for tokens in args.tokens:
        methods = ["sdpa", "streaming"] + (["run_with_cache"] if args.with_cache and tokens <= 2048 else [])
        case_rows = {m: run_case("benchmarks.streaming_forward", {"tokens": tokens, "method": m})
                     for m in methods}
        for method, row in case_rows.items():
            base = case_rows["sdpa"]
            if "error" not in row and "error" not in base:
                row["time_vs_sdpa"] = round(row["seconds"] / base["seconds"], 2)
                row["peak_vs_sdpa"] = round(row["peak_gb"] / base["peak_gb"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = markdown_table(rows, ["tokens", "method", "seconds", "peak_gb", "forward_gb",
                                  "time_vs_sdpa", "peak_vs_sdpa", "error"])
    header = (f"# Streaming attention statistics vs sdpa (SmolLM2-135M, fp32, batch 1)\n\n"
              f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
              f"no GPU. Command: `python -m benchmarks.streaming_forward"
              f"{' --with-cache' if args.with_cache else ''}`\n\n")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(header + table + "\n")
    print(table)


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):
        print(json.dumps(run_one(json.loads(sys.argv[1]))))
    else:
        main()
