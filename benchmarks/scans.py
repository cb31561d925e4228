"""Issue 3's figures: head scans and their causal checks on SmolLM2-135M (and Gemma-3-270M).

    python -m benchmarks.scans tops          # top-10 heads per detector (smollm2)
    python -m benchmarks.scans induction     # repeated-token loss, top-k vs random-k ablated
    python -m benchmarks.scans retrieval     # heads > 0.1; needle recall, top-k vs random-k
    python -m benchmarks.scans perf          # time / peak memory at 1k and 4k vs run_with_cache
    python -m benchmarks.scans gemma         # every scan end to end on gemma-3-270m
    python -m benchmarks.scans all

Each section writes benchmarks/results/scans_<section>.json and appends a Markdown summary to
benchmarks/results/scans.md. torch runs on one thread (faster on the shared 2-core machine:
two OpenMP threads spin-wait on each other whenever another process holds a core).
Perf cases run one per subprocess (benchmarks.measure.run_case) so peaks never mix.
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

RESULTS = Path(__file__).parent / "results"
SHARED_HAYSTACK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "haystack"


def _setup():
    import torch

    torch.set_num_threads(int(os.environ.get("SCANS_THREADS", "1")))
    torch.set_grad_enabled(False)


def _load(name: str):
    from interp import load_model

    return load_model(name, device="cpu", show_progress=False)


def _save(section: str, data: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"scans_{section}.json").write_text(json.dumps(data, indent=2))
    header = (f"\n## {section}\n\nCommand: `python -m benchmarks.scans {' '.join(sys.argv[1:])}` "
              f"({platform.machine()}, {os.cpu_count()} CPU cores, torch threads "
              f"{os.environ.get('SCANS_THREADS', '1')}, {time.strftime('%Y-%m-%d %H:%M')})\n\n")
    with open(RESULTS / "scans.md", "a") as f:
        f.write(header + markdown + "\n")
    print(header + markdown)


def _progress(label):
    def report(fraction, message):
        print(f"  [{label}] {100 * fraction:5.1f}% {message}", file=sys.stderr, flush=True)
    return report


def _top_table(scores, k=10) -> str:
    return ", ".join(f"{h['layer']}.{h['head']} ({h['score']:.3f})" for h in scores.top(k))


# ---- sections ------------------------------------------------------------------------------

RETRIEVAL_PARAMS = {"context_lengths": (1000, 2000), "depths": (10.0, 50.0, 90.0), "n_needles": 5}


def tops(model_name: str = "smollm2-135m", sizes: dict | None = None) -> dict:
    """Every detector but retrieval (its own section) at its defaults."""
    from interp.heads import DETECTORS

    _setup()
    model = _load(model_name)
    params = sizes or {}
    out, lines = {}, []
    for name, detector in DETECTORS.items():
        if name == "retrieval":
            continue
        start = time.perf_counter()
        scores = detector.scan(model, params=params.get(name), progress=_progress(name))
        seconds = time.perf_counter() - start
        out[name] = {"top": scores.top(10), "params": scores.params, "seconds": round(seconds, 1),
                     "info": {k: v for k, v in scores.info.items() if k not in ("later_sinks", "tests")}}
        lines.append(f"| {name} | {_top_table(scores)} | {seconds:.0f} |")
        if name == "sink":
            later = list(scores.info["later_sink_tokens"].items())[:8]
            lines.append(f"| | Sink_1^0.3 = {scores.info['sink_fraction']:.3f}; later sink tokens: "
                         + ", ".join(f"{t!r} x{r['count']}" for t, r in later) + " | |")
        if name == "streaming":
            lines.append("| | streaming heads (mass > 0.9): " + ", ".join(
                f"W={w}: {100 * f:.1f}%" for w, f in scores.info["streaming_fraction"].items()) + " | |")
        if name == "retrieval":
            lines.append(f"| | {scores.info['n_retrieval_heads']} heads > 0.1 "
                         f"({100 * scores.info['retrieval_head_fraction']:.1f}% of {scores.scores.numel()}); "
                         f"answered {scores.info['n_answered']}/{scores.info['n_tests']} tests | |")
    table = "| detector | top-10 heads (layer.head, score) | seconds |\n|---|---|---|\n" + "\n".join(lines)
    return {"model": model.model_id, "detectors": out, "markdown": f"Model: {model.model_id}\n\n" + table}


def induction(model_name: str = "smollm2-135m") -> dict:
    """Repeated-token loss (second half) with the top-k induction heads vs k random heads."""
    from interp.heads import get_detector, verify

    _setup()
    model = _load(model_name)
    scores = get_detector("induction").scan(model, params={"prompts": "repeated"}, progress=_progress("scan"))
    rows, out = [], []
    for ablation in ("mean", "zero"):
        for k in (5, 10, 20):
            v = verify(model, scores, k=k, ablation=ablation, n_random=5, n_prompts=16, max_tokens=256)
            out.append(v)
            rows.append(f"| {ablation} | {k} | {v['baseline']:.3f} | {v['top_k']:.3f} | "
                        f"{v['random_k_mean']:.3f} (min {min(v['random_k']):.3f}, max {max(v['random_k']):.3f}) | "
                        f"{v['ratio']:.1f} |")
            print(rows[-1], file=sys.stderr, flush=True)
    table = ("Repeated random tokens (16 prompts, 2 x 128 tokens); loss on the second half, nats/token; "
             "5 random draws.\n\n| ablation | k | clean | top-k | random-k mean | effect ratio |\n"
             "|---|---|---|---|---|---|\n" + "\n".join(rows))
    return {"model": model.model_id, "top": scores.top(20), "verify": out, "markdown": table}


def retrieval(model_name: str = "smollm2-135m", ablation: str = "zero") -> dict:
    """Retrieval heads > 0.1, then needle recall with the top-k heads vs k random heads ablated.

    The recall is measured on the tests the model answered at 1000 tokens (verify's default:
    recall can only drop from there), for k = 5, 10, 20 and 3 random draws each.
    """
    from interp.heads import get_detector, verify

    _setup()
    model = _load(model_name)
    scores = get_detector("retrieval").scan(model, params=RETRIEVAL_PARAMS, progress=_progress("scan"))
    info = scores.info
    # the answered 1000-token tests (2000-token decodes through the hooked bridge cost twice as much)
    from interp.heads.retrieval import build_tests

    tests = build_tests(model, scores_params(scores))
    answered = [t for t, ok in zip(tests, scores.details["answered"].bool().tolist())
                if ok and t.context_length == 1000][:6]
    rows, out = [], []
    for k in (5, 10, 20):
        v = verify(model, scores, k=k, ablation=ablation, n_random=3, n_prompts=len(answered),
                   prompts=answered, progress=_progress(f"verify k={k}"))
        out.append(v)
        rows.append(f"| {k} | {v['baseline']:.3f} | {v['top_k']:.3f} | {v['random_k_mean']:.3f} "
                    f"({', '.join(f'{x:.2f}' for x in v['random_k'])}) |")
        print(rows[-1], file=sys.stderr, flush=True)
    table = (f"Needle tests: {info['n_tests']} ({RETRIEVAL_PARAMS}); answered (ROUGE-1 recall > 0.5): "
             f"{info['n_answered']}; mean recall {info['mean_recall']:.3f}.\n"
             f"Heads with retrieval score > 0.1: **{info['n_retrieval_heads']} of {scores.scores.numel()} "
             f"({100 * info['retrieval_head_fraction']:.1f}%)**. Top 10: {_top_table(scores)}\n\n"
             f"Needle recall ({ablation} ablation, {out[0]['n_prompts']} answered 1000-token tests):\n\n"
             "| k | clean | top-k ablated | random-k ablated: mean (draws) |\n|---|---|---|---|\n" + "\n".join(rows))
    return {"model": model.model_id, "info": {k: v for k, v in info.items()}, "top": scores.top(20),
            "verify": out, "markdown": table}


def scores_params(scores):
    from interp.heads import get_detector

    return get_detector(scores.detector).make_params(
        {k: tuple(v) if isinstance(v, list) else v for k, v in scores.params.items()})


# ---- perf: one case per process --------------------------------------------------------------

def _text_batch(model, n_tokens: int):
    """One natural-text prompt of n_tokens (the shared essays: test data)."""
    from interp.tokens import TokenBatch

    text = "\n\n".join(p.read_text() for p in sorted(SHARED_HAYSTACK.glob("*.txt")))
    ids = model.encode(text)[:n_tokens]
    if len(ids) < n_tokens:
        raise SystemExit(f"shared haystack has only {len(ids)} tokens")
    return TokenBatch.from_lists([ids], model.pad_token_id)


def perf_case(case: dict) -> dict:
    """Run one (detector, method, tokens) case; time and peak RSS of the scan alone."""
    import torch

    from benchmarks.measure import PeakRSS
    from interp.names import hook_name

    _setup()
    model = _load("smollm2-135m")
    batch = _text_batch(model, case["tokens"])
    detector, method = case["detector"], case["method"]
    if detector == "retrieval":
        run = _retrieval_run(model, case)
    elif method == "streamed":
        from interp.heads import get_detector

        params = {"streaming": {"windows": (64, 256)}}.get(detector)
        run = lambda: get_detector(detector).scan(model, prompts=batch, params=params)   # noqa: E731
    else:
        # TransformerLens: cache every layer's pattern, then compute the same statistic from it
        from interp.heads.induction import detection_keys

        def run():
            _, cache = model.bridge.run_with_cache(batch.input_ids, names_filter=lambda n: n.endswith("hook_pattern"),
                                                   remove_batch_dim=True)
            n = batch.seq_len
            out = []
            for layer in range(model.n_layers):
                pattern = cache[hook_name("pattern", layer)]            # [H, N, N]
                if detector == "induction":
                    d = torch.zeros(n, n)
                    for i, row in enumerate(detection_keys(batch.token_lists()[0], "induction")):
                        d[i, row] = 1
                    out.append((pattern * d).sum((-1, -2)) / pattern.sum((-1, -2)))
                elif detector == "sink":
                    out.append(pattern[:, :, 0].mean(-1))
                else:
                    q, k = torch.arange(n)[:, None], torch.arange(n)[None, :]
                    keep = (k < 4) | ((q - k >= 0) & (q - k < 64))
                    out.append((pattern * keep).sum(-1)[:, 68:].mean(-1))
            return torch.stack(out)
    with PeakRSS() as memory:
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
    return {**case, "seconds": round(seconds, 2), "peak_gb": round(memory.peak / 2**30, 2),
            "scan_gb": round((memory.peak - memory.start) / 2**30, 2)}


def _retrieval_run(model, case: dict):
    """One needle test of case["tokens"] tokens, greedy, 24 steps: the argmax streamed out of the
    kernel (ours) vs TransformerLens's way, the full pattern at hook_pattern on every step
    (prefill included: the bridge computes every layer's N x N pattern)."""
    import torch

    from interp.forward import greedy_decode
    from interp.heads.retrieval import retrieval_decode
    from interp.names import hook_name
    from interp.tasks.needle import default_needles, is_stop_token, load_haystack, needle_test

    test = needle_test(model, default_needles()[0], case["tokens"], 50.0, haystack=load_haystack(SHARED_HAYSTACK))
    if case["method"] == "streamed":
        return lambda: retrieval_decode(model, test, max_new_tokens=24)

    def with_patterns():
        rows = {}

        def keep(pattern, hook):
            rows[hook.name] = pattern[0, :, -1].argmax(-1)
        names = [hook_name("pattern", l) for l in range(model.n_layers)]
        with model.bridge.hooks(fwd_hooks=[(n, keep) for n in names]), torch.no_grad():
            return greedy_decode(model, test.input_ids, 24,
                                 stop=lambda token: is_stop_token(model, token))
    return with_patterns


def perf(token_counts=(1024, 4096), detectors=("induction", "sink", "streaming")) -> dict:
    from benchmarks.measure import markdown_table, run_case

    rows = []
    for tokens in token_counts:
        for detector in detectors:
            for method in ("streamed", "run_with_cache"):
                if method == "run_with_cache" and tokens > 3000 and detector != "retrieval":
                    need = 30 * 9 * tokens * tokens * 4 / 2**30
                    rows.append({"tokens": tokens, "detector": detector, "method": method,
                                 "error": f"not run: the patterns alone need {need:.1f} GiB (30 layers x 9 heads "
                                          f"x {tokens}^2 fp32) on a 24 GiB machine shared by 6 engineers"})
                    continue
                case = {"tokens": tokens, "detector": detector, "method": method}
                print(f"perf case {case}", file=sys.stderr, flush=True)
                rows.append(run_case("benchmarks.scans", {"perf_case": case}, timeout=3000))
                print(rows[-1], file=sys.stderr, flush=True)
    for row in rows:
        if row.get("method") == "run_with_cache" and "seconds" in row:
            mine = next(r for r in rows if r["tokens"] == row["tokens"] and r["detector"] == row["detector"]
                        and r["method"] == "streamed")
            if "seconds" in mine:
                mine["time_vs_cache"] = round(mine["seconds"] / row["seconds"], 2)
                mine["scan_mem_vs_cache"] = round(mine["scan_gb"] / max(row["scan_gb"], 1e-3), 3)
    table = ("One natural-text prompt, SmolLM2-135M fp32, CPU (retrieval: one needle test of that many "
             "tokens, 24 greedy steps; its `run_with_cache` row is the bridge with hook_pattern, the full "
             "pattern of every layer at every step). seconds: the scan alone (model loaded); "
             "peak_gb: process peak RSS; scan_gb: peak minus RSS before the scan.\n\n"
             + markdown_table(rows, ["tokens", "detector", "method", "seconds", "peak_gb", "scan_gb",
                                     "time_vs_cache", "scan_mem_vs_cache", "error"]))
    return {"rows": rows, "markdown": table}


def gemma() -> dict:
    """Every detector on gemma-3-270m (base, BOS-prefixed, sliding-window layers), small sizes,
    with the causal checks of induction and sink."""
    from interp.heads import DETECTORS, verify

    _setup()
    model = _load("gemma-3-270m")
    sizes = {"retrieval": {"context_lengths": (1000,), "depths": (10.0, 50.0, 90.0), "n_needles": 3},
             "streaming": {"n_prompts": 2, "max_tokens": 1024}}
    lines, out = [], {}
    for name, detector in DETECTORS.items():
        start = time.perf_counter()
        scores = detector.scan(model, params=sizes.get(name), progress=_progress(name))
        seconds = time.perf_counter() - start
        extra = ""
        if name in ("induction", "sink"):
            v = verify(model, scores, k=5, ablation="mean", n_random=3)
            scores.verify = v
            extra = (f"verify k=5: clean {v['baseline']:.3f}, top-5 {v['top_k']:.3f}, "
                     f"random-5 {v['random_k_mean']:.3f} (ratio {v['ratio']:.1f})")
        if name == "sink":
            extra += f"; Sink_1^0.3 = {scores.info['sink_fraction']:.3f}, first tokens {scores.info['first_tokens']}"
        if name == "retrieval":
            extra = (f"{scores.info['n_retrieval_heads']} heads > 0.1; answered "
                     f"{scores.info['n_answered']}/{scores.info['n_tests']}; responses: "
                     + "; ".join(repr(t['response'][:60]) for t in scores.info["tests"][:3]))
        if name == "streaming":
            extra = ", ".join(f"W={w}: {100 * f:.1f}% streaming" for w, f in scores.info["streaming_fraction"].items())
        out[name] = {"top": scores.top(10), "seconds": round(seconds, 1), "verify": scores.verify}
        lines.append(f"| {name} | {_top_table(scores)} | {seconds:.0f} | {extra} |")
        print(lines[-1], file=sys.stderr, flush=True)
    table = (f"Model: {model.model_id} ({model.n_layers} x {model.n_heads} heads)\n\n"
             "| detector | top-10 heads | seconds | notes |\n|---|---|---|---|\n" + "\n".join(lines))
    return {"model": model.model_id, "detectors": out, "markdown": table}


SECTIONS = {"tops": tops, "induction": induction, "retrieval": retrieval, "perf": perf, "gemma": gemma}


def main() -> None:
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):
        # a perf case in its own process (benchmarks.measure.run_case)
        case = json.loads(sys.argv[1])["perf_case"]
        print(json.dumps(perf_case(case)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=[*SECTIONS, "all"])
    parser.add_argument("--tokens", type=int, nargs="+", default=None,
                        help="perf only: token counts (default 1024 4096)")
    parser.add_argument("--detectors", nargs="+", default=None, help="perf only: detectors")
    args = parser.parse_args()
    for name in (SECTIONS if args.section == "all" else [args.section]):
        if name == "perf" and (args.tokens or args.detectors):
            result = perf(tuple(args.tokens or (1024, 4096)),
                          tuple(args.detectors or ("induction", "sink", "streaming")))
            name = "perf_" + "_".join(map(str, args.tokens or ()))
        else:
            result = SECTIONS[name]()
        _save(name, result, result.pop("markdown"))


if __name__ == "__main__":
    main()
