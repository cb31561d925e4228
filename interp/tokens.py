"""Batches of prompts as token ids, right-padded.

Right padding is chosen on purpose: under causal attention a real token never attends to a
position after it, so every real position of a padded prompt computes exactly what it would
compute alone. Only the pad rows are garbage, and every reduction masks them with `mask`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenBatch:
    """Token ids of several prompts.

    input_ids: [batch, seq] long, right-padded with `pad_id`.
    lengths:   [batch] long, the number of real tokens of each prompt.
    """

    input_ids: torch.Tensor
    lengths: torch.Tensor
    pad_id: int = 0

    @classmethod
    def from_lists(cls, token_lists: list[list[int]], pad_id: int = 0) -> "TokenBatch":
        if not token_lists or any(len(t) == 0 for t in token_lists):
            from interp.errors import InvalidInput

            raise InvalidInput("every prompt must have at least one token; got an empty prompt")
        width = max(len(t) for t in token_lists)
        ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
        for row, tokens in enumerate(token_lists):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        lengths = torch.tensor([len(t) for t in token_lists], dtype=torch.long)
        return cls(ids, lengths, pad_id)

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    @property
    def mask(self) -> torch.Tensor:
        """[batch, seq] bool, True at real tokens (the HF `attention_mask`, as bool)."""
        positions = torch.arange(self.seq_len, device=self.lengths.device)
        return positions[None, :] < self.lengths[:, None]

    @property
    def final_positions(self) -> torch.Tensor:
        """[batch] long, the index of each prompt's last real token."""
        return self.lengths - 1

    def token_lists(self) -> list[list[int]]:
        return [row[:n].tolist() for row, n in zip(self.input_ids, self.lengths.tolist())]

    def __getitem__(self, index: slice) -> "TokenBatch":
        """A sub-batch (a slice of prompts), trimmed to its own longest prompt."""
        lengths = self.lengths[index]
        width = int(lengths.max())
        return TokenBatch(self.input_ids[index, :width], lengths, self.pad_id)

    def chunks(self, size: int):
        """Sub-batches of at most `size` prompts, in order."""
        for start in range(0, self.batch_size, size):
            yield self[start : start + size]

    def to(self, device) -> "TokenBatch":
        return TokenBatch(self.input_ids.to(device), self.lengths.to(device), self.pad_id)
