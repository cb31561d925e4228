"""Generate with and without an attention edit and print both.

  interp steer --prompt "..." --scale 0 --heads 20.0,20.1     ablate heads
  interp steer --prompt "..." --pasta "the key phrase" --heads 12.3,14.1 [--alpha 0.01]
  interp steer MODEL --prompt "..." --pasta "the key phrase" --heads auto
                                                   the heads `interp pasta MODEL` profiled
  interp steer --prompt "..." --act [--beta 0.4] [--heads ...]  ACT sink calibration
The edit is printed as JSON (save it with --edit-json PATH to reuse it)."""

from __future__ import annotations

import json

from interp.edit_kinds import EDIT_KINDS
from interp_cli.commands.common import (add_model_arguments, add_store_argument, load_from_args,
                                        write_json)

HELP = "generate with and without an attention edit (ablate/scale heads, PASTA, ACT)"


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--heads", help="LAYER.HEAD,... (e.g. 20.1,21.3); with --pasta, 'auto' "
                                        "= the heads stored by `interp pasta MODEL`")
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--scale", type=float, help="multiply the heads' outputs (0 = ablate)")
    kind.add_argument("--pasta", metavar="PHRASE", action="append",
                      help="highlight PHRASE (repeatable) on --heads")
    kind.add_argument("--act", action="store_true", help="ACT calibration of the prompt's sinks")
    parser.add_argument("--alpha", type=float, default=EDIT_KINDS["pasta"].default,
                        help=f"PASTA scaling (default {EDIT_KINDS['pasta'].default})")
    parser.add_argument("--beta", type=float, default=EDIT_KINDS["act"].default,
                        help=f"ACT scaling (default {EDIT_KINDS['act'].default})")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    parser.add_argument("--edit-json", help="also write the edit as JSON to this path")
    add_store_argument(parser)


def run(args) -> int:
    from interp.edit_kinds import check_edit, is_auto_heads
    from interp.errors import InvalidInput
    from interp.model_paths import check_model_name, peek_shape

    kind = "act" if args.act else "pasta" if args.pasta else "scale"
    request = dict(kind=kind, prompt=args.prompt, heads=args.heads, phrases=args.pasta or (),
                   strength={"scale": args.scale, "pasta": args.alpha, "act": args.beta}[kind])
    # Everything but the sinks ACT finds is checked before the model loads.
    check_model_name(args.model)
    profile = None
    if is_auto_heads(args.heads):
        profile = _stored_profile(args, kind)
        request["heads"] = profile.heads
    check_edit(**request, shape=peek_shape(args.model))
    if args.max_new_tokens < 1:
        raise InvalidInput(f"--max-new-tokens {args.max_new_tokens}: generate at least 1 token")
    from interp.steering import build_edit, compare

    model = load_from_args(args)
    if profile is not None:
        profile.check_model(model)
        print(f"heads (PASTA profile of {profile.model_id}): "
              + ",".join(f"{layer}.{head}" for layer, head in profile.heads))
    edit = build_edit(model, **request, chat=args.chat)
    before, after = compare(model, args.prompt, edit, args.max_new_tokens, chat=args.chat)
    print(f"edit: {json.dumps(edit.to_dict())[:400]}")
    print(f"\nwithout: {before.text!r}\n   with: {after.text!r}")
    if args.edit_json:
        write_json(args.edit_json, edit.to_dict())
    return 0


def _stored_profile(args, kind: str):
    """The newest stored PASTA profile of the model `args` names (before it loads)."""
    from interp.errors import InvalidInput
    from interp.model_paths import peek_shape
    from interp.steering.pasta_profile import PastaProfile
    from interp_cli.commands.common import open_store_read_only

    if kind != "pasta":
        raise InvalidInput("--heads auto is the profiled PASTA heads: use it with --pasta PHRASE, "
                           "or name the heads as LAYER.HEAD,...")
    shape = peek_shape(args.model)
    _, store = open_store_read_only(args.store)
    name = shape.name if shape is not None else str(args.model)
    if store is None:
        raise InvalidInput(f"no results store yet, so no PASTA profile of {name}: run "
                           f"`interp pasta {name}` first (or name --heads LAYER.HEAD,...)")
    profile = PastaProfile.from_store(store, name)
    if not profile.heads:
        raise InvalidInput(f"the stored PASTA profile of {profile.model_id} chose no head (none "
                           f"helped every task): rerun `interp pasta {name}` with more items or "
                           "other tasks, or name --heads LAYER.HEAD,...")
    return profile
