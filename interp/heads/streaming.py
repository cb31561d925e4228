"""Streaming vs full-context heads (the DuoAttention / RazorAttention split).

DuoAttention (Xiao et al. 2024) and RazorAttention (Tang et al. 2024) observe that most heads
attend only to a few initial "sink" tokens and a recent window (streaming heads: their KV cache
can be cut to sinks + window), while a few need the whole context (retrieval / full-context heads).
The score here is the direct measurement of that property:

    streaming mass of head (l, h) = mean over queries i >= S + W of
                                    sum_{j < S} A[i, j] + sum_{i - W < j <= i} A[i, j]

with S sink tokens (the first S positions; 4 as in StreamingLLM) and a recent window of W keys.
Only queries at least S + W deep count: before that, sinks + window cover every key. A head
whose streaming mass exceeds `threshold` is "streaming"; `info` gives the fraction of streaming
heads for every W in `windows` (the score tensor is for the first W).

The kernel returns A only at the S + W_max keys each query needs (`gather_keys`), so the
pattern is never held.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from interp.ablation import mask_keys
from interp.attention_stats import stream_attention_stats
from interp.errors import InvalidInput
from interp.heads.base import (Detector, Progress, Prompts, as_prompt_set, check_context, param,
                               params_json)
from interp.heads.behaviour import Behaviour, next_token_loss
from interp.models import Model
from interp.scores import HeadScores
from interp.tasks.natural_text import natural_text
from interp.tokens import TokenBatch
from kernels import AttentionStatsRequest


@dataclass(frozen=True)
class StreamingParams:
    n_prompts: int = param(4, "number of natural-text prompts (default prompts only)")
    max_tokens: int = param(1024, "tokens per default prompt (must exceed sink_tokens + max window)")
    windows: tuple[int, ...] = param((64, 256), "recent-window sizes W; the score is for the first",
                                     bounds=(1, 131072))
    sink_tokens: int = param(4, "initial tokens every head may keep (StreamingLLM's 4 sinks)",
                             bounds=(0, 4096))
    threshold: float = param(0.9, "a head is streaming when its sink + window mass exceeds this")
    batch_size: int = param(2, "prompts per forward pass")


def window_keys(length: int, n_positions: int, sink_tokens: int, window: int) -> torch.Tensor:
    """[n_positions, sink_tokens + window] keys of each query: the sinks, then the window.

    Window slots that are sinks already (early queries) or past the prompt are -1, so no key is
    counted twice. Slot t of the window part is key i - t (t = 0 is the query itself).
    """
    i = torch.arange(n_positions)[:, None]
    sinks = torch.arange(sink_tokens)[None, :].expand(n_positions, -1)
    sinks = torch.where(sinks <= i, sinks, -1)
    recent = i - torch.arange(window)[None, :]
    recent = torch.where(recent >= sink_tokens, recent, -1)
    keys = torch.cat([sinks, recent], dim=1)
    keys[length:] = -1
    return keys


def streaming_mass(gathered: torch.Tensor, batch: TokenBatch, sink_tokens: int,
                   windows: tuple[int, ...]) -> torch.Tensor:
    """[b, H, N, S + W_max] -> [b, len(windows), H]: mean sink + window mass per head and W."""
    out = []
    positions = torch.arange(gathered.shape[2], device=gathered.device)
    lengths = batch.lengths.to(gathered.device)
    for w in windows:
        mass = gathered[..., : sink_tokens + w].sum(-1)                         # [b, H, N]
        rows = ((positions[None, :] >= sink_tokens + w) & (positions[None, :] < lengths[:, None]))
        weights = rows[:, None, :].to(mass.dtype)
        out.append((mass * weights).sum(-1) / weights.sum(-1).clamp_min(1))
    return torch.stack(out, dim=1)


class StreamingDetector(Detector):
    name = "streaming"
    description = "streaming heads: attention mass on the sink tokens plus a recent window (DuoAttention)"
    meaning = ("attention mass on the sink tokens plus a recent window; high = the head "
              "loses little from a streaming (sink + window) cache (Xiao et al. 2024, "
              "DuoAttention)")
    Params = StreamingParams
    behaviour = "loss change when these heads see only the sinks and the recent window"
    check_sizes = (2, 512)

    def scan(self, model: Model, prompts: Prompts = None, params: StreamingParams | None = None,
             progress: Progress | None = None) -> HeadScores:
        params = params if isinstance(params, StreamingParams) else self.make_params(params)
        if not params.windows or min(params.windows) < 1 or params.sink_tokens < 0:
            raise InvalidInput(f"windows must be positive sizes and sink_tokens >= 0, got "
                               f"{params.windows}, {params.sink_tokens}")
        prompt_set = (natural_text(model, params.n_prompts, params.max_tokens) if prompts is None
                      else as_prompt_set(model, prompts, self.name))
        check_context(model, prompt_set)
        need = params.sink_tokens + max(params.windows) + 1
        if int(prompt_set.tokens.lengths.min()) < need:
            raise InvalidInput(
                f"streaming heads need prompts longer than sink_tokens + window = {need - 1} tokens "
                f"(shortest given: {int(prompt_set.tokens.lengths.min())}); use longer prompts "
                "(--max-tokens) or smaller windows")
        windows = tuple(params.windows)
        current: dict = {}

        def request(layer: int, sub_batch: TokenBatch) -> AttentionStatsRequest:
            if current.get("batch") is not sub_batch:
                n = sub_batch.seq_len
                keys = torch.stack([window_keys(int(length), n, params.sink_tokens, max(windows))
                                    for length in sub_batch.lengths.tolist()])
                current.update(batch=sub_batch, keys=keys.to(sub_batch.input_ids.device))
            return AttentionStatsRequest(gather_keys=current["keys"])

        mass = stream_attention_stats(
            model, prompt_set.tokens, request,
            reduce=lambda layer, stats, batch: streaming_mass(stats["gathered"], batch,
                                                              params.sink_tokens, windows),
            batch_size=params.batch_size, progress=progress,
        ).permute(1, 2, 0, 3)                                                # [n, W, L, H]
        mean = mass.mean(0)                                                  # [W, L, H]
        info = {
            "windows": list(windows), "sink_tokens": params.sink_tokens, "threshold": params.threshold,
            "streaming_fraction": {str(w): float((mean[i] > params.threshold).float().mean())
                                   for i, w in enumerate(windows)},
            "streaming_heads": {str(w): [[l, h] for l, h in (mean[i] > params.threshold).nonzero().tolist()]
                                for i, w in enumerate(windows)},
            "n_prompts": len(prompt_set), "prompt_set": prompt_set.name,
        }
        details = {f"mass_w{w}": mean[i] for i, w in enumerate(windows)}
        details["per_prompt"] = mass[:, 0]
        return HeadScores(detector=self.name, scores=mean[0], model_id=model.model_id,
                          params=params_json(params), prompt_hash=prompt_set.hash,
                          details=details, info=info)

    def causal_behaviour(self, model: Model, scores: HeadScores, ablation: str, n_prompts: int,
                         max_tokens: int | None, seed: int, prompts=None) -> Behaviour:
        """Next-token loss on long natural text (or `prompts`) when the heads see only the scan's
        sink tokens and its first window (`ablation` does not apply). The claim is the opposite
        of the others': streaming heads do not need the far context, so restricting them hurts
        LESS than restricting random heads; it shows at k of the order of the streaming-head
        count (tens)."""
        tokens = None if prompts is None else as_prompt_set(model, prompts, self.name).tokens
        window = int(scores.params.get("windows", [64])[0])
        sinks = int(scores.params.get("sink_tokens", 4))
        longest = max_tokens if tokens is None else int(tokens.lengths.max())
        if longest <= sinks + window + 1:
            raise InvalidInput(f"streaming verify needs prompts longer than sinks + window = {sinks + window}; "
                               f"got {longest} tokens")
        if tokens is None:
            tokens = natural_text(model, n_prompts, max_tokens).tokens
        positions = tokens.mask.clone()
        positions[:, : sinks + window] = False     # only queries that actually lose far keys
        allowed = sinks_and_window(sinks, window)

        def measure(heads):
            with mask_keys(model, heads, allowed):
                return next_token_loss(model, tokens, positions)
        return Behaviour(f"next-token loss on natural text (window {window}, {sinks} sinks)", "loss",
                         "top_k_hurts_less", measure, tokens.batch_size,
                         f"heads restricted to {sinks} sink tokens + {window} recent keys")

    def summary(self, scores: HeadScores) -> dict:
        info = scores.info
        return {**super().summary(scores), "threshold": info["threshold"],
                "streaming_fraction": info["streaming_fraction"]}

    def summary_lines(self, scores: HeadScores) -> list[str]:
        info = scores.info
        return ["streaming heads (mass > %s): " % info["threshold"] + ", ".join(
            f"W={w}: {100 * f:.1f}%" for w, f in info["streaming_fraction"].items())
        ] + super().summary_lines(scores)


def sinks_and_window(sink_tokens: int, window: int) -> Callable[[int, int], torch.Tensor]:
    """allowed(q, k): the first `sink_tokens` keys and the `window` most recent ones."""
    def allowed(n_queries: int, n_keys: int) -> torch.Tensor:
        q = torch.arange(n_keys - n_queries, n_keys)[:, None]
        k = torch.arange(n_keys)[None, :]
        return (k < sink_tokens) | ((q - k >= 0) & (q - k < window))
    return allowed


STREAMING = StreamingDetector()
