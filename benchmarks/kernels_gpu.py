"""GPU: the fused Triton attention vs SDPA-flash, FlexAttention and eager; end-to-end ACT cost.

    python benchmarks/kernels_gpu.py [--model /path/to/SmolLM2] [--gemma /path/to/gemma-3-270m]
                                     [--tokens 1024 4096 16384 32768] [--head-dims 64 128]

Part 1, one attention call, B=1, H=32 (no GQA), causal, bf16, per N and head dim:
    ours                 Triton kernel, no edits, no statistics
    ours+edits+stats     PASTA key bias (8 heads) + ACT (8 heads, 4 sink keys) + head scale,
                         and lse, entropy, argmax, key mass per row
    ours+...+received    the same plus the received-mass pass (second kernel)
    ours+ACT found       ACT on 8 heads with each head's sinks found in the call (tau 0.1): a
                         received-mass pass on those heads, then the calibrated pass (kernels.act)
    sdpa-flash           torch SDPA restricted to the flash backend
    flex+score_mod       FlexAttention (compiled) with the key bias as score_mod, a causal
                         block mask, return_lse; head scale applied after. ACT, entropy and argmax
                         have no FlexAttention equivalent (ACT needs the row's sink mass).
    eager                QK^T, mask, softmax, PV in torch (skipped where it runs out of memory)
TFLOP/s counts the causal half: 2 * 2 * B * H * N^2 / 2 * D flops. Peak memory is what the call
allocates beyond its inputs.

Part 2, end to end: prefill of --prompt tokens + 128 greedy decode tokens, bf16, with
transformers' SDPA, with "interp" attention and no edit, and with ACT as its authors run it
(sinks found per head in the forward, kept for the decode steps) on one head per layer and on
every head, and with ACT on every head with a fixed sink (BOS), the older mode.

Writes benchmarks/results/kernels_gpu_<gpu>.md.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kernels import AttentionEdit, AttentionStatsRequest, LayerEdit, SinkCalibration  # noqa: E402
from kernels import attention_session, reference_attention  # noqa: E402
from kernels.triton_attention import triton_attention  # noqa: E402


def bench(fn, warmup: int = 3, reps: int = 10) -> tuple[float, float]:
    """(median ms, peak MB allocated beyond what was live before the call)."""
    import triton.testing

    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    ms = triton.testing.do_bench(fn, warmup=warmup, rep=max(reps * 10, 50), return_mode="median")
    return ms, peak


def check_correctness(device) -> None:
    """A small Triton-vs-reference check before timing anything."""
    g = torch.Generator(device="cpu").manual_seed(0)
    B, H, N, D = 2, 4, 300, 64
    q, k, v = (torch.randn(B, H, N, D, generator=g) for _ in range(3))
    kpm = torch.ones(B, N, dtype=torch.bool)
    kpm[0, :17] = False
    edit = LayerEdit(key_bias=torch.randn(B, H, N, generator=g), head_scale=torch.tensor([1.0, 0.0, 2.0, 0.5]),
                     sink_mask=(torch.arange(N) < 3).expand(B, N).clone(), act_beta=torch.tensor([0.4, 1.0, 0.0, 0.7]))
    stats = AttentionStatsRequest(lse=True, entropy=True, argmax=True, key_mask=torch.arange(N).expand(B, N) < 5,
                                  received=True)
    ref_out, ref = reference_attention(q, k, v, key_padding_mask=kpm, edit=edit, stats=stats)
    to = lambda x: x.to(device) if torch.is_tensor(x) else x
    edit_d = LayerEdit(*(to(getattr(edit, f)) for f in ("key_bias", "head_scale", "sink_mask", "act_beta")))
    stats_d = AttentionStatsRequest(lse=True, entropy=True, argmax=True, key_mask=to(stats.key_mask), received=True)
    out, got = triton_attention(to(q), to(k), to(v), key_padding_mask=to(kpm), edit=edit_d, stats=stats_d)
    torch.testing.assert_close(out.cpu(), ref_out, atol=2e-3, rtol=2e-3)
    for name in ("lse", "entropy", "key_mass", "received"):
        torch.testing.assert_close(got[name].cpu(), ref[name], atol=2e-3, rtol=2e-3, msg=name)
    agree = (got["argmax"].cpu() == ref["argmax"]).float().mean().item()
    assert agree > 0.99, f"argmax agrees on only {agree:.1%} of rows"
    # ACT with the sinks found in the call: both backends must find the same sinks
    found = AttentionStatsRequest(lse=True, received=True, sinks=True)
    direction = torch.randn(D, generator=g)
    direction /= direction.norm()
    q_sink, k_sink = q + 4.0 * direction, k.clone()
    k_sink[:, :, [0, 5, 40]] += 8.0 * direction                      # plant sinks
    edit_f = LayerEdit(act_beta=torch.tensor([0.4, 1.0, 0.0, 0.7]), act_tau=0.1)
    ref_out, ref = reference_attention(q_sink, k_sink, v, key_padding_mask=kpm, edit=edit_f, stats=found)
    out, got = triton_attention(to(q_sink), to(k_sink), to(v), key_padding_mask=to(kpm),
                                edit=LayerEdit(act_beta=to(edit_f.act_beta), act_tau=0.1), stats=found)
    assert ref["sinks"].any(), "the planted keys should be sinks past the first"
    assert torch.equal(got["sinks"].cpu(), ref["sinks"]), "Triton and the reference found different sinks"
    torch.testing.assert_close(out.cpu(), ref_out, atol=2e-3, rtol=2e-3)
    print("correctness check (fp32, padding, bias, ACT fixed and found in the call, head scale, "
          "all statistics): ok")


def attention_rows(n_tokens: list[int], head_dims: list[int], device) -> list[dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    B, H, dtype = 1, 32, torch.bfloat16
    rows = []
    for D in head_dims:
        for N in n_tokens:
            g = torch.Generator(device=device).manual_seed(0)
            q, k, v = (torch.randn(B, H, N, D, device=device, dtype=dtype, generator=g) for _ in range(3))
            heads8 = torch.zeros(H, dtype=torch.bool, device=device)
            heads8[:8] = True
            bias = torch.where(heads8[None, :, None] & (torch.arange(N, device=device) >= 64),
                               math.log(0.01), 0.0).expand(B, H, N).contiguous()   # PASTA
            sink = (torch.arange(N, device=device) < 4).expand(B, N).contiguous()
            beta = torch.where(heads8.roll(8), 0.4, 1.0)                            # ACT, 8 heads
            hscale = torch.ones(H, device=device)
            hscale[-1] = 0.0
            edit = LayerEdit(key_bias=bias, head_scale=hscale, sink_mask=sink, act_beta=beta)
            act_found = LayerEdit(act_beta=beta, act_tau=0.1)
            row_stats = AttentionStatsRequest(lse=True, entropy=True, argmax=True, key_mask=sink)
            all_stats = AttentionStatsRequest(lse=True, entropy=True, argmax=True, key_mask=sink, received=True)
            flops = 4 * B * H * N * N * D / 2

            def score_mod(score, b, h, q_idx, kv_idx):
                return score + bias[b, h, kv_idx]

            def causal(b, h, q_idx, kv_idx):
                return q_idx >= kv_idx

            block_mask = create_block_mask(causal, None, None, N, N, device=device)

            def flex_call():
                out, lse = flex(q, k, v, score_mod=score_mod, block_mask=block_mask, return_lse=True)
                return out * hscale[None, :, None, None], lse

            def sdpa_flash():
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True)

            def eager():
                s = (q @ k.transpose(-1, -2)) * D ** -0.5
                s = s.masked_fill(~torch.ones(N, N, dtype=torch.bool, device=device).tril(), float("-inf"))
                return torch.softmax(s.float(), dim=-1).to(dtype) @ v

            cases = {
                "ours": lambda: triton_attention(q, k, v),
                "ours+edits+stats": lambda: triton_attention(q, k, v, edit=edit, stats=row_stats),
                "ours+edits+stats+received": lambda: triton_attention(q, k, v, edit=edit, stats=all_stats),
                "ours+ACT found (8 heads)": lambda: triton_attention(q, k, v, edit=act_found),
                "sdpa-flash": sdpa_flash,
                "flex+score_mod": flex_call,
                "eager": eager,
            }
            for name, fn in cases.items():
                try:
                    ms, mb = bench(fn)
                    rows.append(dict(D=D, N=N, case=name, ms=ms, tflops=flops / ms / 1e9, mb=mb))
                except torch.cuda.OutOfMemoryError:
                    rows.append(dict(D=D, N=N, case=name, ms=None, tflops=None, mb=None))
                finally:
                    torch.cuda.empty_cache()
                r = rows[-1]
                print(f"D={D:4d} N={N:6d} {name:26s} " + (
                    f"{r['ms']:9.3f} ms {r['tflops']:7.1f} TFLOP/s {r['mb']:9.1f} MB" if r["ms"] else "OOM"),
                    flush=True)
            del q, k, v, bias
    return rows


def end_to_end(model_path: str, prompt: int, device) -> list[dict]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16,
                                                 attn_implementation="sdpa").to(device).eval()
    cfg = model.config.get_text_config()
    ids = torch.randint(10, 5000, (1, prompt), device=device, generator=torch.Generator(device=device).manual_seed(0))
    heads = [(l, h) for l in range(cfg.num_hidden_layers) for h in range(cfg.num_attention_heads)]
    act_bos = AttentionEdit((SinkCalibration(heads=heads, sink_positions=(0,), beta=0.4),))
    act_all = AttentionEdit((SinkCalibration(heads=heads, beta=0.4, tau=0.1),))
    act_one = AttentionEdit((SinkCalibration(heads=[(l, 0) for l in range(cfg.num_hidden_layers)],
                                             beta=0.4, tau=0.1),))
    gen = dict(max_new_tokens=128, min_new_tokens=128, do_sample=False)

    def run(session):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            if session is None:
                model.generate(ids, **gen)
            else:
                with attention_session(model, **session):
                    model.generate(ids, **gen)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    cases = {"sdpa": None, "interp, no edit": {},
             "interp, ACT found, 1 head/layer": {"edit": act_one},
             "interp, ACT found, all heads": {"edit": act_all},
             "interp, ACT sink=BOS, all heads": {"edit": act_bos}}
    rows = []
    for name, session in cases.items():
        run(session)   # warm up (Triton compiles)
        best = min(run(session) for _ in range(3))
        rows.append(dict(model=Path(model_path).name, case=name, s=best))
        print(f"{Path(model_path).name}: {name:26s} {best:.3f} s", flush=True)
    return rows


def write(rows, e2e, args, gpu: str) -> Path:
    lines = [f"# kernels: GPU benchmark on {gpu}", "",
             f"torch {torch.__version__}; one attention call, B=1, H=32, causal, bf16. "
             "TFLOP/s counts the causal half; memory is allocated beyond the inputs.", ""]
    for D in args.head_dims:
        lines += [f"## head dim {D}", "", "| N | case | ms | TFLOP/s | x sdpa-flash | x flex | peak MB |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for N in args.tokens:
            sub = [r for r in rows if r["D"] == D and r["N"] == N]
            ref = {r["case"]: r for r in sub}
            for r in sub:
                if r["ms"] is None:
                    lines.append(f"| {N} | {r['case']} | OOM | | | | |")
                    continue
                xs = ref["sdpa-flash"]["ms"] / r["ms"] if ref.get("sdpa-flash", {}).get("ms") else float("nan")
                xf = ref["flex+score_mod"]["ms"] / r["ms"] if ref.get("flex+score_mod", {}).get("ms") else float("nan")
                lines.append(f"| {N} | {r['case']} | {r['ms']:.3f} | {r['tflops']:.1f} | {xs:.2f} | "
                             f"{xf:.2f} | {r['mb']:.1f} |")
        lines.append("")
    if e2e:
        lines += ["## end to end: prefill + 128 decode tokens, bf16", "",
                  "| model | case | s | x sdpa | x interp no edit |", "|---|---|---:|---:|---:|"]
        for r in e2e:
            base = next(x for x in e2e if x["model"] == r["model"] and x["case"] == "sdpa")
            plain = next(x for x in e2e if x["model"] == r["model"] and x["case"] == "interp, no edit")
            lines.append(f"| {r['model']} | {r['case']} | {r['s']:.3f} | {r['s'] / base['s']:.3f} | "
                         f"{r['s'] / plain['s']:.3f} |")
    safe = "".join(c if c.isalnum() else "_" for c in gpu).strip("_")
    out = ROOT / "benchmarks" / "results" / f"kernels_gpu_{safe}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 16384, 32768])
    ap.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--model", default=None, help="SmolLM2 directory for the end-to-end part")
    ap.add_argument("--gemma", default=None, help="Gemma-3 directory for the end-to-end part")
    ap.add_argument("--prompt", type=int, default=1024)
    ap.add_argument("--skip-attention", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("kernels_gpu.py needs a CUDA GPU")
    device = torch.device("cuda")
    gpu = torch.cuda.get_device_name(device)
    print(f"GPU: {gpu}")
    check_correctness(device)
    rows = [] if args.skip_attention else attention_rows(args.tokens, args.head_dims, device)
    e2e = []
    for path in (args.model, args.gemma):
        if path:
            e2e += end_to_end(path, args.prompt, device)
    print(f"wrote {write(rows, e2e, args, gpu)}")


if __name__ == "__main__":
    main()
