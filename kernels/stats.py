"""Which attention statistics a call should return, and what each one means.

All statistics describe the distribution the model actually used, i.e. AFTER edits (key biases
and ACT), and are float32 whatever the input dtype. Shapes, with B batch, H query heads, Nq
queries, Nk keys, T gathered keys per query:

    lse       [B, H, Nq]     log-normalizer of the edited scores: p_j = exp(s'_j - lse), where
                             s' is the score after scale, softcap and key bias, and for ACT sink
                             keys also the per-row calibration bias. -inf for a row with no key.
    entropy   [B, H, Nq]     -sum_j p_j log p_j (natural log); 0 for a row with no key.
    argmax    [B, H, Nq]     int64 key index of the largest p_j; -1 for a row with no key.
    key_mass  [B, H, Nq]     sum of p_j over the keys in `key_mask`.
    received  [B, H, Nk]     sum over valid queries of p_ij: the mass each key receives. A query is
                             valid when its own position is a real token (key_padding_mask).
    gathered  [B, H, Nq, T]  p at the key indices `gather_keys[b, i, t]`; 0 where the index is -1.
    sinks     [B, H, Nk]     bool: the ACT sink keys the call calibrated on each head (found in
                             the call, or given by the edit); False on heads without ACT.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

ROW_STATS = ("lse", "entropy", "argmax", "key_mass")


@dataclass
class AttentionStatsRequest:
    """Statistics to compute alongside the attention output.

    key_mask:    [B, Nk] bool, the key set for `key_mass`.
    gather_keys: [B, Nq, T] int64 key indices (-1 = none) for `gathered`.
    """

    lse: bool = False
    entropy: bool = False
    argmax: bool = False
    key_mask: torch.Tensor | None = None
    received: bool = False
    gather_keys: torch.Tensor | None = None
    sinks: bool = False

    @property
    def key_mass(self) -> bool:
        return self.key_mask is not None

    @property
    def any(self) -> bool:
        return (self.lse or self.entropy or self.argmax or self.received
                or self.key_mask is not None or self.gather_keys is not None or self.sinks)

    @property
    def names(self) -> tuple[str, ...]:
        """The keys of the returned statistics dict."""
        flags = {"lse": self.lse, "entropy": self.entropy, "argmax": self.argmax,
                 "key_mass": self.key_mass, "received": self.received,
                 "gathered": self.gather_keys is not None, "sinks": self.sinks}
        return tuple(k for k, v in flags.items() if v)

    def check(self, batch: int, n_queries: int, n_keys: int) -> None:
        if self.key_mask is not None and tuple(self.key_mask.shape) != (batch, n_keys):
            raise ValueError(f"key_mask must be [B, Nk] = {(batch, n_keys)}, "
                             f"got {tuple(self.key_mask.shape)}")
        if self.gather_keys is not None:
            g = self.gather_keys
            if g.dim() != 3 or tuple(g.shape[:2]) != (batch, n_queries):
                raise ValueError(f"gather_keys must be [B, Nq, T] with B, Nq = {(batch, n_queries)}, "
                                 f"got {tuple(g.shape)}")
