"""HeadScores: the one result type of every head detector.

Every detector (induction, sink, retrieval, safety, ...) returns a `[n_layers, n_heads]` score
tensor with the facts needed to trust and reproduce it, so the store, the CLI's JSON and the
dashboard's heatmap handle all detectors the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class HeadScores:
    """Scores of one detector for every head of one model.

    scores:      [n_layers, n_heads] float32; higher = more of the behaviour.
    detector:    registry name of the detector ("induction", "sink", ...).
    model_id:    `Model.model_id` of the model scanned.
    params:      the detector's parameters (JSON-able), enough to rerun it.
    prompt_hash: `PromptSet.hash` of the prompts it ran on.
    details:     extra tensors kept with the run (e.g. per-prompt scores [n_prompts, L, H]);
                 saved as a safetensors artifact.
    info:        extra JSON-able facts (e.g. sink tokens past the first, with their text).
    verify:      the causal check's result (`verify()`), JSON-able, or None if not run.
    """

    detector: str
    scores: torch.Tensor
    model_id: str
    params: dict = field(default_factory=dict)
    prompt_hash: str = ""
    details: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    verify: dict | None = None

    def __post_init__(self):
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32).detach().cpu()
        if self.scores.ndim != 2:
            raise ValueError(f"HeadScores.scores must be [n_layers, n_heads], got {tuple(self.scores.shape)}")

    @property
    def n_layers(self) -> int:
        return self.scores.shape[0]

    @property
    def n_heads(self) -> int:
        return self.scores.shape[1]

    def top(self, k: int = 10) -> list[dict]:
        """The k highest-scoring heads, best first: [{"layer", "head", "score"}, ...]."""
        flat = self.scores.flatten()
        k = min(k, flat.numel())
        values, indices = torch.topk(flat, k)
        return [
            {"layer": int(i) // self.n_heads, "head": int(i) % self.n_heads, "score": float(v)}
            for v, i in zip(values, indices)
        ]

    def top_heads(self, k: int) -> list[tuple[int, int]]:
        return [(h["layer"], h["head"]) for h in self.top(k)]

    def to_json(self) -> dict:
        """The CLI/JSON form: {"scores": [[...]*H]*L, "params", "top", "verify", ...}."""
        return {
            "scores": self.scores.tolist(),
            "params": self.params,
            "top": self.top(10),
            "verify": self.verify,
            "model_id": self.model_id,
            "prompt_hash": self.prompt_hash,
            "info": self.info,
        }
