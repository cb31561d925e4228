"""Safety heads (Zhou et al. 2024, "On the Role of Attention Heads in Large Language Model
Safety"): which attention heads make the model refuse harmful requests?

  1. calibrates refusal/compliance first tokens on the model's own greedy replies,
  2. scores every head by Ships (KL of the next-token distribution when the head's query is
     scaled by eps) on harmful prompts the model refuses, and runs Sahara's greedy search,
  3. checks causally: refusal rate (first-token log-odds and generated replies) on held-out
     harmful prompts with the top-1 / top-3 heads ablated vs random heads, and whether
     harmless replies stay the same.

Results go to the store (run kind "safety", detector "safety"); the top heads are printed.

  interp safety                                     # qwen2.5-coder-0.5b-instruct, own prompts
  interp safety --harmful h.json --harmless ok.json --train 16 --test 24 --json
"""

from __future__ import annotations

import json

from interp_cli.commands.common import add_model_arguments, add_store_argument, open_store, print_table

HELP = "find safety heads (Ships, Sahara) and check them by refusal rate"
DEFAULT_SAFETY_MODEL = "qwen2.5-coder-0.5b-instruct"


def add_arguments(parser) -> None:
    parser.add_argument("model", nargs="?", default=DEFAULT_SAFETY_MODEL,
                        help=f"a model that refuses harmful requests (default: {DEFAULT_SAFETY_MODEL})")
    add_model_arguments(parser, positional=False)
    add_store_argument(parser)
    parser.add_argument("--harmful", default=None,
                        help="harmful instructions (.json/.csv/.txt; default: the project's own)")
    parser.add_argument("--harmless", default=None,
                        help="harmless instructions (.json/.csv/.txt; default: the project's own)")
    parser.add_argument("--harmful-test", default=None, help="held-out harmful instructions "
                        "(default: a split of --harmful)")
    parser.add_argument("--harmless-test", default=None, help="held-out harmless instructions "
                        "(default: a split of --harmless)")
    parser.add_argument("--calibration", type=int, default=8,
                        help="prompts of each kind used to choose refusal tokens (default 8)")
    parser.add_argument("--train", type=int, default=16,
                        help="refused harmful prompts the heads are scored on (default 16)")
    parser.add_argument("--test", type=int, default=16,
                        help="held-out prompts of each kind for the causal check (default 16)")
    parser.add_argument("--method", default="query_scale",
                        choices=["query_scale", "query_mean", "zero", "mean"],
                        help="head ablation (default query_scale, the paper's)")
    parser.add_argument("--eps", type=float, default=1e-5, help="query scale (default 1e-5)")
    parser.add_argument("--sahara-steps", type=int, default=3,
                        help="heads in Sahara's greedy set; each step is a full scan (default 3)")
    parser.add_argument("--sahara-candidates", type=int, default=None,
                        help="later Sahara steps consider only this many top first-step heads "
                             "(default: all, as the reference)")
    parser.add_argument("--layers", default=None,
                        help="scan only these layers, e.g. '8,9,20' (default: all)")
    parser.add_argument("--random", type=int, default=2,
                        help="random head sets per k in the causal check (default 2)")
    parser.add_argument("--max-new-tokens", type=int, default=24,
                        help="greedy reply length for the generation metric (default 24)")
    parser.add_argument("--no-verify", action="store_true", help="skip the causal check")
    parser.add_argument("--seed", type=int, default=0, help="seed of the splits and random heads")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    from interp_cli.commands.common import load_from_args
    from interp.errors import InvalidInput
    from interp.heads.safety import SAFETY, safety_analysis
    from interp.tasks.safety import load_instructions

    for name in ("calibration", "train", "test"):
        if getattr(args, name) < 1:
            raise InvalidInput(f"--{name} must be at least 1")

    def read(path):
        return None if path is None else load_instructions(path)

    layers = None
    if args.layers:
        try:
            layers = [int(x) for x in args.layers.replace(",", " ").split()]
        except ValueError:
            raise InvalidInput(f"--layers must be integers like '8,9,20', got {args.layers!r}") from None
    harmful, harmless = read(args.harmful), read(args.harmless)
    harmful_test, harmless_test = read(args.harmful_test), read(args.harmless_test)
    store = open_store(args.store)
    model = load_from_args(args)
    params = {"method": args.method, "eps": args.eps, "sahara_steps": args.sahara_steps,
              "sahara_candidates": args.sahara_candidates, "calibration": args.calibration,
              "train": args.train, "test": args.test, "random": args.random,
              "max_new_tokens": args.max_new_tokens, "seed": args.seed, "layers": layers,
              "harmful": args.harmful, "harmless": args.harmless}
    with store.run("safety", model.model_id, params) as run_writer:
        scores = safety_analysis(
            model, harmful, harmless, harmful_test, harmless_test, n_calibration=args.calibration,
            n_train=args.train, n_test=args.test, seed=args.seed, method=args.method,
            eps=args.eps, sahara_steps=args.sahara_steps,
            sahara_candidates=args.sahara_candidates, n_random=args.random,
            max_new_tokens=args.max_new_tokens, run_verify=not args.no_verify, layers=layers,
            progress=run_writer.progress)
        run_writer.add_scores(scores)
        result = SAFETY.summary(scores)
        run_writer.set_result(result)
    result["run_id"] = run_writer.id
    if args.json:
        print(json.dumps({**result, "scores": scores.to_json()}, indent=2))
        return 0
    print_report(result)
    return 0


def _fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def print_report(result: dict) -> None:
    print(f"safety heads of {result['model_id']} (Ships on {result['n_train']} refused harmful "
          f"prompts, scan {result['scan_seconds']} s)")
    print_table([{"rank": i + 1, "head": f"L{h['layer']}H{h['head']}", "ships": f"{h['score']:.4f}"}
                 for i, h in enumerate(result["top_heads"])], ["rank", "head", "ships"])
    if result.get("sahara"):
        heads = ", ".join(f"L{l}H{h} ({a:.1f} deg)" for (l, h), a in
                          zip(result["sahara"]["heads"], result["sahara"]["angles"]))
        print(f"\nSahara head set: {heads}  ({result['sahara_seconds']} s)")
    tokens = result.get("refusal_tokens")
    if tokens:
        print("refusal-start tokens:", [t["token"] for t in tokens["refusal"]][:8],
              " compliance-start:", [t["token"] for t in tokens["compliance"]][:8])
    if "causal_check" not in result:
        return
    base = result["baseline"]
    print(f"\nheld-out harmful prompts (n={base['n']}): refusal rate baseline "
          f"{_fmt(base['refusal_rate_logodds'])} (log-odds) / "
          f"{_fmt(base['refusal_rate_generation'])} (generation)")
    rows = []
    for name, row in result["causal_check"].items():
        rows.append({
            "ablated": name, "heads": " ".join(f"L{l}H{h}" for l, h in row["heads"]),
            "refusal logodds top/random": f"{_fmt(row['refusal_rate_logodds_top'])} / "
                                          f"{_fmt(row['refusal_rate_logodds_random'])}",
            "refusal gen top/random": f"{_fmt(row['refusal_rate_generation_top'])} / "
                                      f"{_fmt(row['refusal_rate_generation_random'])}",
            "compliance x (gen)": f"{_fmt(row['multiplier_generation_top'])} / "
                                  f"{_fmt(row['multiplier_generation_random'])}",
            "harmless ppl top/random": f"{_fmt(row['harmless_perplexity_under_unablated_top'])} / "
                                       f"{_fmt(row['harmless_perplexity_under_unablated_random'])}",
            "harmless same": f"{_fmt(row['harmless_same_as_baseline_top'])} / "
                             f"{_fmt(row['harmless_same_as_baseline_random'])}",
        })
    print_table(rows, list(rows[0]))
