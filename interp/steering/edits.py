"""Building attention edits from what a user means: "highlight this phrase", "scale these heads".

    edit = build_edit(model, "pasta", prompt, "12.3, 14.1", 0.01, ["the key phrase"])

`build_edit` builds every kind the CLI (`interp steer`) and the dashboard's Steering page offer
(`interp.edit_kinds.EDIT_KINDS`: scale heads, PASTA, ACT); both call it. `check_heads` (the
heads an edit may name) comes from `interp.edit_kinds`, with the checks that need no model.
"""

from __future__ import annotations

from collections.abc import Sequence

from interp.edit_kinds import check_edit, check_heads, check_phrase
from interp.models import Model
from kernels import AttentionEdit, HeadScale, pasta


def build_edit(model: Model, kind: str, prompt: str, heads=None, strength: float | None = None,
               phrases: str | Sequence[str] = (), chat: bool = False) -> AttentionEdit:
    """The edit of `kind` (see EDIT_KINDS) for `prompt` on `model`: what `interp steer` and the
    dashboard's Steering page both run. Arguments as `check_edit`; `chat` wraps the prompt in
    the model's chat template (edit positions then refer to the templated prompt)."""
    heads, strength, phrases = check_edit(kind, prompt, heads, strength, phrases, shape=model)
    if kind == "act":
        from interp.steering.act import act_calibration

        return act_calibration(model, prompt, beta=strength, heads=heads, chat=chat)
    if kind == "pasta":
        text = model.apply_chat_template(prompt) if chat else prompt
        return pasta_highlight(model, text, phrases, heads, alpha=strength)
    return scale_heads(model, heads, strength)


def token_spans(model: Model, text: str, phrase: str) -> list[tuple[int, int]]:
    """Half-open token spans of every occurrence of `phrase` in `text` (as `model.encode` tokenizes).

    A token belongs to a span when its characters overlap the phrase's characters.
    """
    check_phrase(text, phrase)
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
