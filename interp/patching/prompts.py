"""Clean/corrupted prompt pairs for patching, checked: equal token lengths, single-token answers.

IOI prompts come ready from `interp.tasks.ioi.ioi_prompts`; `patching_prompts` builds a
PromptSet from your own texts:

    prompts = patching_prompts(model,
        clean=["The Eiffel Tower is in the city of"], corrupted=["The Colosseum is in the city of"],
        answers=[" Paris"], wrong_answers=[" Rome"])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.errors import InvalidInput
from interp.models import Model
from interp.patching.runner import check_pairs
from interp.tasks.base import PromptSet


def patching_prompts(
    model: Model,
    clean: Sequence[str],
    corrupted: Sequence[str],
    answers: Sequence[str] | None = None,
    wrong_answers: Sequence[str] | None = None,
    name: str = "custom",
) -> PromptSet:
    """A PromptSet of clean prompts, their corrupted counterparts and single-token answers.

    Raises InvalidInput naming the prompt when a pair differs in token length or an answer is
    not exactly one token (with the tokens it splits into).
    """
    clean, corrupted = list(clean), list(corrupted)
    if not clean:
        raise InvalidInput("no prompts given")
    if len(clean) != len(corrupted):
        raise InvalidInput(f"{len(clean)} clean prompts but {len(corrupted)} corrupted ones; give "
                           "one corrupted prompt per clean prompt")
    answer_ids = _answer_ids(model, answers, len(clean), "answers")
    wrong_ids = _answer_ids(model, wrong_answers, len(clean), "wrong_answers")
    prompts = PromptSet(name=name, tokens=model.tokenize(clean), texts=clean,
                        answers=answer_ids, wrong_answers=wrong_ids,
                        corrupted=model.tokenize(corrupted),
                        metadata=[{"corrupted_text": c} for c in corrupted])
    check_pairs(prompts.tokens, prompts.corrupted, clean)
    return prompts


def _answer_ids(model: Model, words: Sequence[str] | None, n: int, field: str):
    if words is None:
        return None
    words = list(words)
    if len(words) != n:
        raise InvalidInput(f"{len(words)} {field} for {n} prompts; give one per prompt")
    ids = []
    for index, word in enumerate(words):
        tokens = model.tokenizer(word, add_special_tokens=False).input_ids
        if len(tokens) != 1:
            raise InvalidInput(
                f"{field}[{index}] = {word!r} is {len(tokens)} tokens for {model.name} "
                f"({model.to_str_tokens(tokens)}); patching metrics compare single next tokens. "
                "Use a single-token answer (often the leading-space form, e.g. ' Paris')"
            )
        ids.append(tokens[0])
    return torch.tensor(ids)


def validate(prompts: PromptSet, need_answers: bool = False) -> None:
    """Checks every patcher runs first: a corrupted counterpart of equal lengths, 1-D answers."""
    if prompts.corrupted is None:
        raise InvalidInput(f"prompt set {prompts.name!r} has no corrupted prompts; patching needs "
                           "clean/corrupted pairs (see interp.patching.patching_prompts)")
    check_pairs(prompts.tokens, prompts.corrupted, prompts.texts)
    for field in ("answers", "wrong_answers"):
        ids = getattr(prompts, field)
        if ids is None:
            if need_answers:
                raise InvalidInput(f"prompt set {prompts.name!r} has no {field}; the metric needs them")
            continue
        if ids.ndim != 1 or ids.shape[0] != len(prompts):
            raise InvalidInput(
                f"prompt set {prompts.name!r}: {field} must be one token id per prompt, shape "
                f"[{len(prompts)}], got {tuple(ids.shape)}. Multi-token answers are not supported: "
                "score the first token or choose single-token answers"
            )
