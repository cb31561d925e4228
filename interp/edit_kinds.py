"""The attention edits the front ends offer, and every check on them that needs no model.

    EDIT_KINDS["pasta"]   # EditKind(name="pasta", label=..., strength="alpha", default=0.01, ...)
    check_edit("pasta", prompt, "12.3, 14.1", 0.01, ["the key phrase"], shape=peek_shape(name))

`interp steer` and the dashboard's Steering page read this one table (kinds, labels, the name and
default of each kind's number) and call `check_edit` before a model loads; then
`interp.steering.edits.build_edit` builds the edit. This module imports no torch (the
`interp.steering` package does), so bad input is refused at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from interp.errors import InvalidInput
from interp.names import Head, parse_heads


@dataclass(frozen=True)
class EditKind:
    """One kind of attention edit, as the front ends offer it.

    strength: what the edit's one number is called (its CLI option is --{strength}, except
        --scale which also chooses the kind); default: its usual value (the papers').
    """

    name: str
    label: str
    strength: str
    default: float
    needs_heads: bool
    needs_phrases: bool = False
    # (lo, hi) the number must lie in, both included: a form or CLI value outside is refused
    # before anything runs (a scale of 1e308 overflows the attention to inf/nan).
    bounds: tuple[float, float] = (-100.0, 100.0)


EDIT_KINDS: dict[str, EditKind] = {
    "scale": EditKind("scale", "scale heads (0 = ablate)", "scale", 0.0, needs_heads=True,
                      bounds=(-100.0, 100.0)),
    # Zhang et al. (PASTA) scale the attention outside the phrase by alpha = 0.01.
    "pasta": EditKind("pasta", "PASTA: highlight a phrase", "alpha", 0.01, needs_heads=True,
                      needs_phrases=True, bounds=(0.0, 100.0)),
    # Yu et al. (ACT) scale the sinks by beta = 0.4 on heads chosen by a search (interp
    # calibrate) or named by the user; never every head with a sink.
    "act": EditKind("act", "ACT: calibrate attention sinks", "beta", 0.4, needs_heads=True,
                    bounds=(0.0, 1.0)),
}


# `interp steer --pasta PHRASE --heads auto`: the heads a stored PASTA profile chose
# (`interp.steering.pasta_profile`); the CLI resolves it to heads before `check_edit`.
AUTO_HEADS = "auto"


def is_auto_heads(heads) -> bool:
    return isinstance(heads, str) and heads.strip().lower() == AUTO_HEADS


def parse_edit_heads(heads) -> list[Head]:
    """An edit's heads as typed ("18.6, 17.3", semicolons also separate) or given as pairs;
    None or blank text -> [] (refused by `check_edit`: every edit kind names its heads)."""
    if heads is None or (isinstance(heads, str) and not heads.strip()):
        return []
    if is_auto_heads(heads):
        raise InvalidInput("heads 'auto' means the model's profiled PASTA heads: resolve them "
                           "first (`interp steer MODEL --pasta PHRASE --heads auto` does; "
                           "`interp pasta MODEL` profiles them), or name heads as LAYER.HEAD")
    if isinstance(heads, str):
        return parse_heads(heads.replace(";", ","))
    return [tuple(pair) for pair in heads]


def check_edit(kind: str, prompt: str, heads=None, strength: float | None = None,
               phrases: str | Sequence[str] = (), shape=None) -> tuple[list[Head], float, list[str]]:
    """Check an edit request without the model -> (heads, strength, phrases), normalized.

    shape: anything with `n_layers`, `n_heads` and `name` (a loaded model, or the
    `interp.model_paths.peek_shape` of one not loaded yet); None skips the heads' range check,
    which `build_edit` then does with the model.
    """
    if kind not in EDIT_KINDS:
        raise InvalidInput(f"unknown edit {kind!r}; choose one of {', '.join(EDIT_KINDS)}")
    spec = EDIT_KINDS[kind]
    if not (prompt or "").strip():
        raise InvalidInput("the prompt is empty: type the text to continue")
    heads = parse_edit_heads(heads)
    if spec.needs_heads and not heads:
        raise InvalidInput(f"the {kind} edit needs heads: name at least one as LAYER.HEAD, "
                           "comma-separated, e.g. 20.1,21.3")
    if heads and shape is not None:
        heads = list(check_heads(shape, heads))
    strength = check_strength(kind, strength)
    phrases = [phrases] if isinstance(phrases, str) else list(phrases or ())
    phrases = [p for p in phrases if p and p.strip()]
    if spec.needs_phrases:
        if not phrases:
            raise InvalidInput("PASTA needs a phrase to highlight, copied from the prompt")
        for phrase in phrases:
            check_phrase(prompt, phrase)
    return heads, strength, phrases


def check_strength(kind: str, strength: float | None) -> float:
    """The edit's one number (scale, PASTA alpha, ACT beta) checked for `kind` -> float."""
    spec = EDIT_KINDS[kind]
    if strength is None:
        raise InvalidInput(f"type a number for the {spec.strength} (usually {spec.default})")
    strength = float(strength)
    if not math.isfinite(strength):
        raise InvalidInput(f"the {spec.strength} must be a finite number, got {strength}")
    if kind == "pasta" and not strength > 0:
        raise InvalidInput("PASTA alpha must be > 0 (the paper uses 0.01)")
    if kind == "act" and not 0 <= strength <= 1:
        raise InvalidInput("beta must be in [0, 1] (ACT uses 0.4)")
    lo, hi = spec.bounds
    if not lo <= strength <= hi:
        raise InvalidInput(f"the {spec.strength} must lie in [{lo:g}, {hi:g}], got {strength:g} "
                           f"(usually {spec.default})")
    return strength


def check_phrase(text: str, phrase: str) -> None:
    """A phrase to highlight must occur in the text, as typed."""
    if not phrase or phrase not in text:
        raise InvalidInput(f"the phrase {phrase!r} does not occur in the prompt; highlight "
                           "text copied from the prompt")


def check_heads(model, heads) -> tuple[Head, ...]:
    """(layer, head) pairs an edit may name on `model` (anything with `n_layers`, `n_heads`,
    `name`: a loaded model or `interp.model_paths.peek_shape`'s), or InvalidInput."""
    heads = tuple((int(layer), int(head)) for layer, head in heads)
    bad = [h for h in heads if not (0 <= h[0] < model.n_layers and 0 <= h[1] < model.n_heads)]
    if bad:
        raise InvalidInput(f"heads {bad} do not exist in {model.name} "
                           f"({model.n_layers} layers x {model.n_heads} heads, counted from 0)")
    if not heads:
        raise InvalidInput("no heads given: name at least one (layer, head)")
    return heads
