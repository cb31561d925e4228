"""Generate with and without an attention edit and print both.

  interp steer --prompt "..." --scale 0 --heads 20.0,20.1     ablate heads
  interp steer --prompt "..." --pasta "the key phrase" --heads 12.3,14.1 [--alpha 0.01]
  interp steer --prompt "..." --act [--beta 0.4] [--heads ...]  ACT sink calibration
The edit is printed as JSON (save it with --edit-json PATH to reuse it)."""

from __future__ import annotations

import json

from interp.edit_kinds import EDIT_KINDS
from interp_cli.commands.common import add_model_arguments, load_from_args, write_json

HELP = "generate with and without an attention edit (ablate/scale heads, PASTA, ACT)"


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--heads", help="LAYER.HEAD,... (e.g. 20.1,21.3)")
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


def run(args) -> int:
    from interp.edit_kinds import check_edit
    from interp.errors import InvalidInput
    from interp.model_paths import check_model_name, peek_shape

    kind = "act" if args.act else "pasta" if args.pasta else "scale"
    request = dict(kind=kind, prompt=args.prompt, heads=args.heads, phrases=args.pasta or (),
                   strength={"scale": args.scale, "pasta": args.alpha, "act": args.beta}[kind])
    # Everything but the sinks ACT finds is checked before the model loads.
    check_model_name(args.model)
    check_edit(**request, shape=peek_shape(args.model))
    if args.max_new_tokens < 1:
        raise InvalidInput(f"--max-new-tokens {args.max_new_tokens}: generate at least 1 token")
    from interp.steering import build_edit, compare

    model = load_from_args(args)
    edit = build_edit(model, **request, chat=args.chat)
    before, after = compare(model, args.prompt, edit, args.max_new_tokens, chat=args.chat)
    print(f"edit: {json.dumps(edit.to_dict())[:400]}")
    print(f"\nwithout: {before.text!r}\n   with: {after.text!r}")
    if args.edit_json:
        write_json(args.edit_json, edit.to_dict())
    return 0
