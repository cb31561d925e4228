"""Building attention edits from what a user means: "highlight this phrase", "scale these heads"."""

from __future__ import annotations

from interp.errors import InvalidInput
from interp.models import Model
from kernels import AttentionEdit, HeadScale, pasta

Head = tuple[int, int]


def check_heads(model: Model, heads) -> tuple[Head, ...]:
    heads = tuple((int(layer), int(head)) for layer, head in heads)
    bad = [h for h in heads if not (0 <= h[0] < model.n_layers and 0 <= h[1] < model.n_heads)]
    if bad:
        raise InvalidInput(f"heads {bad} do not exist in {model.name} "
                           f"({model.n_layers} layers x {model.n_heads} heads, counted from 0)")
    if not heads:
        raise InvalidInput("no heads given: name at least one (layer, head)")
    return heads


def token_spans(model: Model, text: str, phrase: str) -> list[tuple[int, int]]:
    """Half-open token spans of every occurrence of `phrase` in `text` (as `model.encode` tokenizes).

    A token belongs to a span when its characters overlap the phrase's characters.
    """
    if not phrase or phrase not in text:
        raise InvalidInput(f"the phrase {phrase!r} does not occur in the prompt; highlight "
                           "text copied from the prompt")
    encoding = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offset = len(model.encode(text)) - len(encoding.input_ids)  # a prepended BOS shifts positions
    spans, start = [], text.find(phrase)
    while start != -1:
        end = start + len(phrase)
        inside = [i for i, (a, b) in enumerate(encoding.offset_mapping) if a < end and b > start]
        spans.append((inside[0] + offset, inside[-1] + 1 + offset))
        start = text.find(phrase, start + 1)
    return spans


def pasta_highlight(model: Model, text: str, phrases: str | list[str], heads,
                    alpha: float = 0.01) -> AttentionEdit:
    """PASTA (Zhang et al., "Tell Your Model Where to Attend", ICLR 2024): on `heads`, scale the
    attention to every token outside the highlighted phrases by `alpha` and renormalize."""
    phrases = [phrases] if isinstance(phrases, str) else phrases
    spans = tuple(span for phrase in phrases for span in token_spans(model, text, phrase))
    return AttentionEdit((pasta(check_heads(model, heads), spans, alpha),))


def scale_heads(model: Model, heads, scale: float) -> AttentionEdit:
    """Multiply the heads' outputs by `scale` (0 ablates them)."""
    return AttentionEdit((HeadScale(check_heads(model, heads), float(scale)),))
