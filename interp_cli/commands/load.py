"""Load a model (converting and verifying embedded weights on first use), print its facts and a
sanity check: the next-token prediction for an IOI prompt."""

from __future__ import annotations

import json
import time

from interp_cli.commands.common import add_model_arguments, load_from_args

HELP = "load a model, print its facts and an IOI sanity check"

IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the facts as JSON")


def run(args) -> int:
    from interp.embedded import EMBEDDED_MODELS, verify_package
    from interp.model_paths import check_model_name

    check_model_name(args.model)  # a model that can never load fails before the slow imports
    from interp.predict import next_token_table

    start = time.perf_counter()
    model = load_from_args(args)
    facts = model.facts()
    facts["load_seconds"] = round(time.perf_counter() - start, 2)
    if args.model in EMBEDDED_MODELS:  # the cache was verified when built; check the source too
        facts["sha256_verified"] = verify_package(EMBEDDED_MODELS[args.model])
    top = next_token_table(model, IOI_PROMPT, k=5)
    if args.json:
        print(json.dumps({"facts": facts, "ioi_check": {"prompt": IOI_PROMPT, "top": top}}, indent=2))
        return 0
    for key, value in facts.items():
        print(f"{key:>18}: {value}")
    print(f"\nIOI check: {IOI_PROMPT!r} ->")
    for row in top:
        print(f"  {row['token']!r:>12}  p={row['prob']:.3f}  logit={row['logit']:.2f}")
    return 0
