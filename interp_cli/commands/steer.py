"""Generate with and without an attention edit and print both.

  interp steer --prompt "..." --scale 0 --heads 20.0,20.1     ablate heads
  interp steer --prompt "..." --pasta "the key phrase" --heads 12.3,14.1 [--alpha 0.01]
  interp steer --prompt "..." --act [--beta 0.4] [--heads ...]  ACT sink calibration
The edit is printed as JSON (save it with --edit-json PATH to reuse it)."""

from __future__ import annotations

import json

from interp_cli.commands.common import add_model_arguments, load_from_args, write_json
from interp.errors import InvalidInput

HELP = "generate with and without an attention edit (ablate/scale heads, PASTA, ACT)"


def parse_heads(text: str | None) -> list[tuple[int, int]] | None:
    """"20.1,21.3" -> [(20, 1), (21, 3)]."""
    if not text:
        return None
    try:
        return [tuple(int(x) for x in item.split(".")) for item in text.split(",")]
    except ValueError:
        raise InvalidInput(f"--heads {text!r}: write heads as LAYER.HEAD, comma-separated, "
                           "e.g. 20.1,21.3") from None


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--heads", help="LAYER.HEAD,... (e.g. 20.1,21.3)")
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--scale", type=float, help="multiply the heads' outputs (0 = ablate)")
    kind.add_argument("--pasta", metavar="PHRASE", action="append",
                      help="highlight PHRASE (repeatable) on --heads")
    kind.add_argument("--act", action="store_true", help="ACT calibration of the prompt's sinks")
    parser.add_argument("--alpha", type=float, default=0.01, help="PASTA scaling (default 0.01)")
    parser.add_argument("--beta", type=float, default=0.4, help="ACT scaling (default 0.4)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    parser.add_argument("--edit-json", help="also write the edit as JSON to this path")


def run(args) -> int:
    from interp.steering import act_calibration, compare, pasta_highlight, scale_heads

    heads = parse_heads(args.heads)
    model = load_from_args(args)
    text = model.apply_chat_template(args.prompt) if args.chat else args.prompt
    if args.act:
        edit = act_calibration(model, args.prompt, beta=args.beta, heads=heads, chat=args.chat)
    elif heads is None:
        raise InvalidInput("--scale and --pasta need --heads LAYER.HEAD,...")
    elif args.pasta:
        edit = pasta_highlight(model, text, args.pasta, heads, alpha=args.alpha)
    else:
        edit = scale_heads(model, heads, args.scale)
    before, after = compare(model, args.prompt, edit, args.max_new_tokens, chat=args.chat)
    print(f"edit: {json.dumps(edit.to_dict())[:400]}")
    print(f"\nwithout: {before.text!r}\n   with: {after.text!r}")
    if args.edit_json:
        write_json(args.edit_json, edit.to_dict())
    return 0
