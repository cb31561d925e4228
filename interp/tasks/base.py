"""PromptSet: the prompts a detector or patcher runs on, as token ids, with answers.

A task module (ioi, needle, harmful/harmless, repeated tokens) builds one; detectors and patchers
consume it and record its `hash` with their results, so a stored number always says exactly
which prompts it came from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import torch

from interp.tokens import TokenBatch


@dataclass
class PromptSet:
    """Prompts with optional answers and a corrupted counterpart.

    tokens:        the clean prompts, right-padded.
    answers:       [n_prompts] long, the correct next token (e.g. " Mary"), or None.
    wrong_answers: [n_prompts] long, the competing token (e.g. " John"), or None.
    corrupted:     the corrupted prompts (same token lengths, prompt for prompt), or None.
    texts:         the prompt strings, for display.
    metadata:      one dict per prompt (template, names, positions of interest, ...).
    """

    name: str
    tokens: TokenBatch
    texts: list[str] = field(default_factory=list)
    answers: torch.Tensor | None = None
    wrong_answers: torch.Tensor | None = None
    corrupted: TokenBatch | None = None
    metadata: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return self.tokens.batch_size

    @property
    def hash(self) -> str:
        """16 hex chars over everything that affects a result: tokens, answers, corruption."""
        digest = hashlib.sha256(self.name.encode())
        for batch in (self.tokens, self.corrupted):
            if batch is not None:
                digest.update(json.dumps(batch.token_lists()).encode())
        for answers in (self.answers, self.wrong_answers):
            if answers is not None:
                digest.update(json.dumps(answers.tolist()).encode())
        return digest.hexdigest()[:16]

    def subset(self, index: slice) -> "PromptSet":
        """Prompts `index` (a slice), with their answers, corruption and metadata."""
        return PromptSet(
            name=self.name,
            tokens=self.tokens[index],
            texts=self.texts[index],
            answers=None if self.answers is None else self.answers[index],
            wrong_answers=None if self.wrong_answers is None else self.wrong_answers[index],
            corrupted=None if self.corrupted is None else self.corrupted[index],
            metadata=self.metadata[index],
        )
