"""Names every module shares: attention heads and TransformerLens hook names.

    from interp.names import Head, check_heads, hook_name, parse_heads
    heads = check_heads(model, parse_heads("20.1,21.3"))     # [(20, 1), (21, 3)]
    hook_name("z", 20)                                       # "blocks.20.attn.hook_z"

A head is `(layer, head)`, both counted from 0, in every API, file and JSON of the workbench
(`"L.H"` on the command line and in the dashboard). This module imports neither torch nor
transformer-lens at import time, so front ends can check arguments before anything slow loads.
"""

from __future__ import annotations

from collections.abc import Iterable

from interp.errors import InvalidInput

Head = tuple[int, int]
"""(layer, head), both 0-based."""


def format_head(head: Head) -> str:
    """(20, 1) -> "20.1", the form the CLI and the dashboard read and print."""
    return f"{head[0]}.{head[1]}"


def parse_heads(text: str) -> list[Head]:
    """"20.1,21.3" (commas or spaces between heads) -> [(20, 1), (21, 3)], in the order given.

    Only the syntax is checked here; `check_heads` checks the heads exist in a model.
    """
    items = [item for item in str(text).replace(",", " ").split() if item]
    if not items:
        raise InvalidInput("no heads given: write heads as LAYER.HEAD, comma-separated, "
                           "e.g. 20.1,21.3")
    heads = []
    for item in items:
        parts = item.split(".")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise InvalidInput(f"head {item!r} is not LAYER.HEAD: write heads as two whole "
                               "numbers counted from 0, comma-separated, e.g. 20.1,21.3")
        heads.append((int(parts[0]), int(parts[1])))
    return heads


def check_heads(model, heads: Iterable, *, allow_empty: bool = True) -> list[Head]:
    """Validate (layer, head) pairs against `model` (anything with `n_layers`, `n_heads` and
    `name`); returns them as sorted, unique int pairs, or raises `InvalidInput` naming the bad
    head and the model's shape.

    allow_empty: False when an empty set makes no sense (an edit must name at least one head).
    """
    out = set()
    for pair in heads:
        try:
            layer, head = pair
            if isinstance(layer, bool) or isinstance(head, bool) or \
                    int(layer) != layer or int(head) != head:
                raise ValueError
            layer, head = int(layer), int(head)
        except (TypeError, ValueError):
            raise InvalidInput(f"a head is a (layer, head) pair of whole numbers, got {pair!r}") from None
        if not (0 <= layer < model.n_layers and 0 <= head < model.n_heads):
            raise InvalidInput(f"head {(layer, head)} does not exist in {model.name} "
                               f"({model.n_layers} layers x {model.n_heads} heads, counted from 0)")
        out.add((layer, head))
    if not out and not allow_empty:
        raise InvalidInput("no heads given: name at least one (layer, head)")
    return sorted(out)


def hook_name(name: str, layer: int | None = None, layer_type: str | None = None) -> str:
    """A TransformerLens hook name, as `transformer_lens.utilities.get_act_name` builds it:

        hook_name("z", 3)             -> "blocks.3.attn.hook_z"
        hook_name("resid_pre", 3)     -> "blocks.3.hook_resid_pre"
        hook_name("in", 3, "ln2")     -> "blocks.3.ln2.hook_in"
        hook_name("embed")            -> "hook_embed"
    """
    from transformer_lens.utilities import get_act_name   # lazy: keeps this module torch-free

    return get_act_name(name, layer, layer_type)


def layer_of(hook: str) -> int | None:
    """The block index of a hook name ("blocks.12.attn.hook_z" -> 12); None outside blocks."""
    parts = hook.split(".")
    if parts[0] == "blocks" and len(parts) > 1 and parts[1].isdigit():
        return int(parts[1])
    return None
