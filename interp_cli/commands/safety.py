"""Safety heads (Zhou et al. 2024, "On the Role of Attention Heads in Large Language Model
Safety"): which attention heads make the model refuse harmful requests?

  1. calibrates refusal/compliance first tokens on the model's own greedy replies,
  2. scores every head, on harmful prompts the model refuses, by Ships (KL of the next-token
     distribution when the head's query is scaled by eps, the paper's) and by the drop of the
     refusal log-odds (--rank-by picks which ranks), and runs Sahara's greedy search,
  3. checks causally: refusal rate (first-token log-odds and generated replies) on held-out
     harmful prompts with the top-1/3/5 heads of each score and Sahara's set ablated vs
     several random head sets (95% interval), says plainly where ablating the top heads does
     not lower refusal, and whether harmless replies stay the same.

Results go to the store (run kind "safety", detector "safety"); the top heads are printed.

  interp safety                                     # qwen2.5-coder-0.5b-instruct, own prompts
  interp safety --harmful h.json --harmless ok.json --train 16 --test 24 --json
  interp safety --rank-by refusal_logodds --method zero --ks 1,3 --random 5
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
    parser.add_argument("--rank-by", default="ships", choices=["ships", "refusal_logodds"],
                        help="score that ranks the heads: ships (KL of the next-token "
                             "distribution, the paper's) or refusal_logodds (drop of the refusal "
                             "log-odds when the head is ablated); both are stored and checked "
                             "(default ships)")
    parser.add_argument("--ks", default="1,3,5",
                        help="top-k head sets the causal check ablates (default '1,3,5')")
    parser.add_argument("--eps", type=float, default=1e-5, help="query scale (default 1e-5)")
    parser.add_argument("--sahara-steps", type=int, default=3,
                        help="heads in Sahara's greedy set; each step is a full scan (default 3)")
    parser.add_argument("--sahara-candidates", type=int, default=None,
                        help="later Sahara steps consider only this many top first-step heads "
                             "(default: all, as the reference)")
    parser.add_argument("--layers", default=None,
                        help="scan only these layers, e.g. '8,9,20' (default: all)")
    parser.add_argument("--random", type=int, default=3,
                        help="random head sets per k in the causal check; 2 or more give a "
                             "95%% interval (default 3)")
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
    try:
        ks = tuple(int(x) for x in args.ks.replace(",", " ").split())
    except ValueError:
        raise InvalidInput(f"--ks must be integers like '1,3,5', got {args.ks!r}") from None
    if not ks or min(ks) < 1:
        raise InvalidInput(f"--ks must be positive integers like '1,3,5', got {args.ks!r}")
    if args.random < 1:
        raise InvalidInput("--random must be at least 1")
    harmful, harmless = read(args.harmful), read(args.harmless)
    harmful_test, harmless_test = read(args.harmful_test), read(args.harmless_test)
    store = open_store(args.store)
    model = load_from_args(args)
    params = {"method": args.method, "eps": args.eps, "sahara_steps": args.sahara_steps,
              "sahara_candidates": args.sahara_candidates, "calibration": args.calibration,
              "train": args.train, "test": args.test, "random": args.random,
              "max_new_tokens": args.max_new_tokens, "seed": args.seed, "layers": layers,
              "harmful": args.harmful, "harmless": args.harmless, "rank_by": args.rank_by,
              "ks": list(ks)}
    with store.run("safety", model.model_id, params) as run_writer:
        scores = safety_analysis(
            model, harmful, harmless, harmful_test, harmless_test, n_calibration=args.calibration,
            n_train=args.train, n_test=args.test, seed=args.seed, method=args.method,
            eps=args.eps, sahara_steps=args.sahara_steps,
            sahara_candidates=args.sahara_candidates, ks=ks, n_random=args.random,
            rank_by=args.rank_by,
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


def _heads(heads) -> str:
    return " ".join(f"L{l}H{h}" for l, h in heads)


def _rate(row: dict, key: str, which: str) -> str:
    value = row[f"{key}_{which}"]
    interval = row.get(f"{key}_{which}_interval")
    return _fmt(value) + ("" if not interval else f" [{interval[0]:.2f},{interval[1]:.2f}]")


def print_report(result: dict) -> None:
    rank_by = result.get("rank_by", "ships")
    print(f"safety heads of {result['model_id']} (ranked by {rank_by} on {result['n_train']} "
          f"refused harmful prompts, scan {result['scan_seconds']} s)")
    top_by = result.get("top_by") or {rank_by: result["top_heads"]}
    names = list(top_by)
    rows = []
    for i in range(max(len(v) for v in top_by.values())):
        row = {"rank": i + 1}
        for name in names:
            entry = top_by[name][i] if i < len(top_by[name]) else None
            row[name] = "-" if entry is None else \
                f"L{entry['layer']}H{entry['head']} {entry['score']:.4f}"
        rows.append(row)
    print_table(rows, ["rank", *names])
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
    print(f"\nheld-out harmful prompts (n={base['n']}), ablation {result.get('check_method')}: "
          f"refusal rate baseline {_fmt(base['refusal_rate_generation'])} (generation) / "
          f"{_fmt(base['refusal_rate_logodds'])} (log-odds); [95% interval]: top over prompts, "
          "random over draws")
    rows = []
    for set_name, by_k in result["causal_check"].items():
        for k_name, row in by_k.items():
            rows.append({
                "heads": f"{set_name} {k_name}", "ablated": _heads(row["heads"]),
                "gen refusal top": _rate(row, "refusal_rate_generation", "top"),
                "gen refusal random": _rate(row, "refusal_rate_generation", "random"),
                "logodds refusal top": _rate(row, "refusal_rate_logodds", "top"),
                "logodds refusal random": _rate(row, "refusal_rate_logodds", "random"),
                "lowers (gen/logodds)": f"{'yes' if row['lowers_refusal_generation'] else 'NO'}/"
                                        f"{'yes' if row['lowers_refusal_logodds'] else 'NO'}",
                "harmless same top/random": f"{_fmt(row['harmless_same_as_baseline_top'])} / "
                                            f"{_fmt(row['harmless_same_as_baseline_random'])}",
            })
    print_table(rows, list(rows[0]))
    print()
    for verdict in result.get("verdicts", []):
        print("-", verdict)
