"""Next-token predictions: the simplest question a user asks a model."""

from __future__ import annotations

import torch

from interp.forward import run
from interp.models import Model


@torch.no_grad()
def next_token_logits(model: Model, prompts: str | list[str]) -> torch.Tensor:
    """[n_prompts, vocab] logits at each prompt's last real token."""
    return run(model, model.tokenize(prompts)).float().cpu()


def next_token_table(model: Model, prompt: str, k: int = 5) -> list[dict]:
    """The k most likely next tokens: [{"token", "id", "prob", "logit"}, ...]."""
    logits = next_token_logits(model, prompt)[0]
    probs = logits.softmax(-1)
    top = torch.topk(probs, k)
    return [{"token": model.tokenizer.decode([int(i)]), "id": int(i), "prob": float(p),
             "logit": float(logits[i])} for p, i in zip(top.values, top.indices)]
