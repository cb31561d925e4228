"""Scan every head of a model with one or more detectors, optionally verify the top heads
causally, store the results (one run of kind "scan" per detector, stored as soon as that detector
finishes, so an interrupted scan keeps what it finished) and print the top heads.

Detectors: previous_token, duplicate_token, induction, sink, retrieval, streaming, safety
(safety needs a model that refuses, e.g. qwen2.5-coder-0.5b-instruct; `interp safety` runs the
whole Ships/Sahara analysis with both refusal metrics).

  interp scan smollm2-135m --detectors induction,sink --verify 5
  interp scan qwen2.5-coder-0.5b-instruct --detectors safety --verify 3
  interp scan smollm2-135m --detectors retrieval --max-tokens 2000 --json scan.json
  interp scan smollm2-135m --detectors streaming --param streaming.windows=64,256

--prompts N and --max-tokens T size each detector's default prompts (for retrieval: N needles,
contexts of T/2 and T tokens); --param DETECTOR.NAME=VALUE sets any other parameter
(`interp scan --list` shows them all).
"""

from __future__ import annotations

import sys

from interp_cli.commands.common import (add_model_arguments, add_store_argument, check_json_path,
                                        load_from_args, open_store, print_table, write_json)

HELP = "scan heads: induction, sink, retrieval, streaming, ... (with causal checks)"


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--detectors", default="induction,sink",
                        help="comma-separated detector names (default: induction,sink)")
    parser.add_argument("--prompts", type=int, default=None, metavar="N", help="number of prompts per detector")
    parser.add_argument("--max-tokens", type=int, default=None, metavar="T", help="tokens per prompt")
    parser.add_argument("--param", action="append", default=[], metavar="DETECTOR.NAME=VALUE",
                        help="set a detector parameter (repeatable), e.g. sink.epsilon=0.2")
    parser.add_argument("--verify", type=int, default=None, metavar="K",
                        help="ablate the top-K heads and K random heads, measure the behaviour")
    parser.add_argument("--ablation", choices=["mean", "zero"], default="mean", help="ablation for --verify")
    parser.add_argument("--random-draws", type=int, default=5, help="random K-head sets for --verify")
    parser.add_argument("--verify-prompts", type=int, default=None, metavar="N",
                        help="prompts (needle tests for retrieval) per --verify measurement")
    parser.add_argument("--verify-tokens", type=int, default=None, metavar="T",
                        help="tokens per --verify prompt (not used by retrieval)")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the scan JSON here")
    parser.add_argument("--top", type=int, default=10, help="rows of the printed table per detector")
    parser.add_argument("--no-store", action="store_true", help="do not write to the results store")
    parser.add_argument("--list", action="store_true", help="list detectors and their parameters, then exit")
    add_store_argument(parser)


def parse_params(items: list[str]) -> dict[str, dict]:
    """['sink.epsilon=0.2', ...] -> {"sink": {"epsilon": "0.2"}} (values typed by the detector)."""
    from interp.errors import InvalidInput

    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        detector, dot, name = key.partition(".")
        if not sep or not dot or not detector or not name:
            raise InvalidInput(f"--param {item!r}: write DETECTOR.NAME=VALUE, e.g. sink.epsilon=0.2")
        out.setdefault(detector.strip(), {})[name.strip()] = value.strip()
    return out


def run(args) -> int:
    from interp.heads.registry import DETECTORS, get_detector, parse_detectors
    from interp.heads.scan import run_scan, scan_json

    if args.list:
        for detector in DETECTORS.values():
            print(f"{detector.name}: {detector.description}")
            for p in detector.describe_params():
                print(f"    {p['name']} = {p['default']!r}  ({p['type']}) {p['help']}")
        return 0
    detectors = parse_detectors(args.detectors)      # bad names fail before the model loads
    params = parse_params(args.param)
    for detector in detectors:
        overrides = detector.cli_overrides(args.prompts, args.max_tokens)
        params[detector.name] = {**overrides, **params.get(detector.name, {})}
        detector.make_params(params[detector.name])  # validate before loading the model
    if args.verify:
        from interp.heads.verify import check_verify_options

        check_verify_options(args.verify, args.ablation, args.random_draws, args.verify_prompts,
                             args.verify_tokens)
    check_json_path(args.json)
    store = None if args.no_store else open_store(args.store)  # a bad --store fails now too
    model = load_from_args(args)
    if args.max_tokens is not None and args.max_tokens > model.n_ctx:
        from interp.errors import InvalidInput

        raise InvalidInput(f"--max-tokens {args.max_tokens} exceeds {model.name}'s context of "
                           f"{model.n_ctx} tokens")
    bar = _ProgressBar()
    try:
        result = run_scan(model, [d.name for d in detectors], params=params, verify_k=args.verify,
                          ablation=args.ablation, n_random=args.random_draws,
                          verify_prompts=args.verify_prompts, verify_tokens=args.verify_tokens, store=store,
                          progress=bar)
    finally:
        bar.close()
    for name, scores in result.scores.items():
        print(f"\n{name}: top {args.top} heads of {model.name}")
        print_table([{"layer": h["layer"], "head": h["head"], "score": f"{h['score']:.4f}"}
                     for h in scores.top(args.top)], ["layer", "head", "score"])
        for line in get_detector(name).summary_lines(scores):
            print(line)
    if args.json:
        write_json(args.json, scan_json(model, result.scores))
        print(f"\nJSON written to {args.json}")
    if result.run_ids:
        runs = ", ".join(f"{run_id} ({name})" for name, run_id in result.run_ids.items())
        print(f"stored as run{'s' if len(result.run_ids) > 1 else ''} {runs} in {store.path}")
    return 0


class _ProgressBar:
    """A tqdm bar on stderr driven by (fraction, message) callbacks."""

    def __init__(self):
        from tqdm import tqdm

        self.bar = tqdm(total=1000, file=sys.stderr, leave=False,
                        bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")

    def __call__(self, fraction: float, message: str) -> None:
        target = int(1000 * min(max(fraction, 0.0), 1.0))
        if target > self.bar.n:
            self.bar.update(target - self.bar.n)
        self.bar.set_postfix_str(message[:80])

    def close(self) -> None:
        self.bar.close()
