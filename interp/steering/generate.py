"""Greedy generation with an attention edit on: the steering playground's two continuations.

Both run on the kernel engine of `interp.forward` (the edited one with the edit, the other
without), so the two differ by the edit alone, not by a change of attention implementation.
"""

from __future__ import annotations

from interp.forward import Continuation, generate as generate_batch
from interp.models import Model
from kernels import AttentionEdit


def generate(model: Model, prompt: str, edit: AttentionEdit | None = None,
             max_new_tokens: int = 40, chat: bool = False) -> Continuation:
    """Greedy continuation of `prompt` (wrapped in the chat template if `chat`) with `edit` on.

    Edit positions refer to the prompt's tokens as `model.encode` gives them (after the chat
    template, when `chat`); generated tokens are never edited keys.
    """
    return generate_batch(model, [prompt], max_new_tokens=max_new_tokens, edit=edit, chat=chat,
                          engine="kernel")[0]


def compare(model: Model, prompt: str, edit: AttentionEdit, max_new_tokens: int = 40,
            chat: bool = False) -> tuple[Continuation, Continuation]:
    """(without the edit, with the edit): what the steering playground shows side by side."""
    return (generate(model, prompt, None, max_new_tokens, chat),
            generate(model, prompt, edit, max_new_tokens, chat))
