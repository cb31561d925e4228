"""What a detector's heads should matter for: a measurement under an intervention on heads.

Each detector builds its own `Behaviour` (`Detector.causal_behaviour`); `interp.heads.verify`
measures it with the top-k heads and with random heads intervened on, whatever the detector.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from interp.errors import InvalidInput
from interp.forward import run
from interp.models import Model
from interp.names import Head
from interp.tokens import TokenBatch


@dataclass
class Behaviour:
    """What one detector's heads should matter for: a measurement under an intervention."""

    name: str
    metric: str                    # "loss" (lower is better); anything else: higher is better
    claim: str                     # "top_k_hurts_more" | "top_k_hurts_less"
    measure: Callable[[list[Head]], float]   # heads -> metric with them intervened on
    n_prompts: int
    intervention: str

    def effect(self, value: float, baseline: float) -> float:
        """How much worse than the baseline (positive = worse)."""
        return value - baseline if self.metric == "loss" else baseline - value


@torch.no_grad()
def next_token_loss(model: Model, tokens: TokenBatch, positions: torch.Tensor, batch_size: int = 4) -> float:
    """Mean cross-entropy of predicting token p+1 at every position p where `positions` [n, seq]
    is True (positions must be real tokens with a real successor)."""
    total, count = 0.0, 0
    for start in range(0, tokens.batch_size, batch_size):
        sub = tokens[start: start + batch_size].to(model.device)
        chosen = positions[start: start + batch_size, : sub.seq_len].clone()
        chosen[:, -1] = False                                       # no successor at the end
        logits = run(model, sub, output="logits")
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        targets = sub.input_ids[:, 1:]
        nll = -logp.gather(-1, targets[..., None]).squeeze(-1).cpu()      # [b, seq-1]
        chosen = chosen[:, :-1]
        total += float(nll[chosen].sum())
        count += int(chosen.sum())
    if count == 0:
        raise InvalidInput("no position to measure the loss on: prompts are too short")
    return total / count
