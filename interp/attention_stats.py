"""Streaming attention statistics: per-head numbers without ever holding an N x N pattern.

The model runs on the kernel engine of `interp.forward` (the workbench's own attention function:
Triton on GPU, the blocked torch reference on CPU). At each layer the kernel returns the
statistics asked for (row LSE, entropy, argmax key, mass on a key set, mass each key receives,
probabilities at chosen keys), the caller's `reduce` shrinks them to what it needs (e.g. one
number per head), and they are dropped before the next layer runs. This is what every head scan
uses, and what lets a scan run at contexts where `run_with_cache` runs out of memory.

    stats = stream_attention_stats(
        model, batch,
        request=AttentionStatsRequest(entropy=True),
        reduce=lambda layer, s, b: masked_mean(s["entropy"], b),    # -> [b, H]
    )                                                               # -> [n_layers, n_prompts, H]
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from interp.forward import cat_padded, run_batched
from interp.models import Model
from interp.tokens import TokenBatch
from kernels import AttentionEdit, AttentionStatsRequest

RequestFor = AttentionStatsRequest | Callable[[int, TokenBatch], AttentionStatsRequest | None]
Reduce = Callable[[int, dict[str, torch.Tensor], TokenBatch], torch.Tensor]


def stream_attention_stats(
    model: Model,
    prompts: TokenBatch | str | list[str],
    request: RequestFor,
    reduce: Reduce,
    batch_size: int = 4,
    edit: AttentionEdit | None = None,
    layers: list[int] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> torch.Tensor:
    """Run the prompts and return `reduce`'s output per layer: [n_layers, n_prompts, ...].

    request: the statistics to compute (the same for every layer), or a function
        (layer, sub_batch) -> request or None (None: that layer computes none).
    reduce:  (layer, stats, sub_batch) -> tensor with the sub-batch first; stats tensors are
        [b, heads, queries(, ...)] or [b, heads, keys] on the model's device. Pad rows of the
        sub-batch hold garbage: mask them with `sub_batch.mask`.
    layers:  the layers to keep (default all); the forward still runs every layer.
    progress: called with (fraction done, message) after each sub-batch.

    Trailing axes that depend on the sub-batch's length (per-position outputs) are right-padded
    with zeros to the longest sub-batch before concatenation.
    """
    batch = prompts if isinstance(prompts, TokenBatch) else model.tokenize(prompts)
    wanted = set(range(model.n_layers) if layers is None else layers)
    per_layer: dict[int, list[torch.Tensor]] = {layer: [] for layer in sorted(wanted)}

    def statistics(sub_batch: TokenBatch, rows) -> dict:
        def request_for(layer: int, *_shape) -> AttentionStatsRequest | None:
            if layer not in wanted:
                return None
            return request(layer, sub_batch) if callable(request) else request

        def on_stats(layer: int, stats: dict[str, torch.Tensor]) -> None:
            per_layer[layer].append(reduce(layer, stats, sub_batch).detach().cpu())
        return {"stats": request_for, "on_stats": on_stats}

    with torch.no_grad():
        # output=None: the decoder stack alone. The statistics need no logits, and the
        # [b, seq, vocab] logits tensor would be the largest allocation of the whole forward.
        run_batched(model, batch, batch_size=batch_size, output=None, edit=edit,
                    per_batch=statistics, progress=progress)
    return torch.stack([cat_padded(per_layer[layer]) for layer in sorted(wanted)])


def masked_query_mean(values: torch.Tensor, batch: TokenBatch, min_position: int = 0) -> torch.Tensor:
    """Mean over real query positions >= min_position: [b, H, q] -> [b, H].

    Queries are the prompt's own positions (prefill), so the batch mask applies directly.
    """
    mask = batch.mask.to(values.device).clone()
    mask[:, :min_position] = False
    weights = mask[:, None, :].to(values.dtype)
    return (values * weights).sum(-1) / weights.sum(-1).clamp_min(1)
