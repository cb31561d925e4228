"""Greedy generation with an attention edit on, through the workbench's attention kernels."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.models import Model
from interp.native_attention import native_attention
from kernels import AttentionEdit, attention_session


@dataclass
class Generation:
    """One greedy continuation. `edit` is the edit's JSON form (None: unedited)."""

    prompt: str
    text: str
    token_ids: list[int]
    edit: dict | None

    def to_json(self) -> dict:
        return self.__dict__.copy()


@torch.no_grad()
def generate(model: Model, prompt: str, edit: AttentionEdit | None = None,
             max_new_tokens: int = 40, chat: bool = False) -> Generation:
    """Greedy continuation of `prompt` (wrapped in the chat template if `chat`) with `edit` on.

    Edit positions refer to the prompt's tokens as `model.encode` gives them (after the chat
    template, when `chat`); generated tokens are never edited keys.
    """
    text = model.apply_chat_template(prompt) if chat else prompt
    batch = model.tokenize(text).to(model.device)
    with native_attention(model), attention_session(model.hf_model, edit=edit):
        output = model.hf_model.generate(
            batch.input_ids, attention_mask=batch.mask.long(), max_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=model.pad_token_id,
        )
    new_tokens = output[0, batch.seq_len:].tolist()
    return Generation(prompt=prompt, text=model.tokenizer.decode(new_tokens, skip_special_tokens=True),
                      token_ids=new_tokens, edit=None if edit is None else edit.to_dict())


def compare(model: Model, prompt: str, edit: AttentionEdit, max_new_tokens: int = 40,
            chat: bool = False) -> tuple[Generation, Generation]:
    """(without the edit, with the edit): what the steering playground shows side by side."""
    return (generate(model, prompt, None, max_new_tokens, chat),
            generate(model, prompt, edit, max_new_tokens, chat))
