"""ACT: find the attention sinks of a prompt and calibrate them.

Yu et al., "Unveiling and Harnessing Hidden Attention Sinks: Enhancing Large Language Models
without Training through Attention Calibration" (ICML 2024). A token k is a sink of head h when
the attention it receives, averaged over the queries that can see it, exceeds `ratio` times the
uniform share 1/N of an N-token prompt. ACT leaves the first token's sink alone (the model needs
it) and, on the chosen heads, scales the attention to the other sinks by `beta`, giving the
removed mass back to the remaining keys in proportion (`kernels.SinkCalibration`, one pass).
"""

from __future__ import annotations

import torch

from interp.attention_stats import stream_attention_stats
from interp.errors import InvalidInput
from interp.models import Model
from interp.steering.edits import check_heads
from kernels import AttentionEdit, AttentionStatsRequest, SinkCalibration


def find_sinks(model: Model, text: str, ratio: float = 5.0, include_first: bool = False,
               chat: bool = False) -> dict[tuple[int, int], list[int]]:
    """{(layer, head): [sink positions]} for one prompt, per the ACT definition above."""
    if ratio <= 1:
        raise InvalidInput("ratio must be > 1: a sink receives more than the uniform share")
    prompt = model.apply_chat_template(text) if chat else text
    batch = model.tokenize(prompt)
    n = batch.seq_len
    visible = torch.arange(n, 0, -1, dtype=torch.float32)  # queries that can see key k: n - k

    def mean_received(layer, stats, sub_batch):
        return stats["received"].float() / visible.to(stats["received"].device)  # [1, H, n]

    alpha = stream_attention_stats(model, batch, AttentionStatsRequest(received=True),
                                   mean_received, batch_size=1)[:, 0]  # [L, H, n]
    first = 0 if include_first else 1
    sinks = {}
    for layer, head in zip(*torch.nonzero((alpha[:, :, first:] > ratio / n).any(-1), as_tuple=True)):
        positions = (torch.nonzero(alpha[layer, head, first:] > ratio / n).flatten() + first).tolist()
        sinks[(int(layer), int(head))] = positions
    return sinks


def act_calibration(model: Model, text: str, beta: float = 0.4, ratio: float = 5.0,
                    heads=None, chat: bool = False) -> AttentionEdit:
    """The ACT edit for `text`: each chosen head's non-first sinks scaled by `beta`.

    heads: the heads to calibrate (ACT chooses them on a small dev set); default: every head
    that has a sink past the first token.
    """
    if not 0 <= beta <= 1:
        raise InvalidInput("beta must be in [0, 1] (ACT uses 0.4)")
    sinks = find_sinks(model, text, ratio=ratio, chat=chat)
    chosen = set(check_heads(model, heads)) if heads is not None else set(sinks)
    # The kernel calibrates one sink set per layer (a [batch, keys] mask), so a layer's chosen
    # heads share the union of their sinks; within a layer these are mostly the same tokens.
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for head in sorted(chosen & set(sinks)):
        by_layer.setdefault(head[0], []).append(head)
    parts = tuple(
        SinkCalibration(heads=tuple(layer_heads), beta=beta,
                        sink_positions=tuple(sorted({p for h in layer_heads for p in sinks[h]})))
        for layer_heads in by_layer.values()
    )
    return AttentionEdit(parts)
