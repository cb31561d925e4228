"""Attention sinks: heads that park their attention on the first token (and on a few later ones).

Definition (Gu et al., "When Attention Sink Emerges in Language Models: An Empirical View",
ICLR 2025, Sec. 3): for a sequence of T tokens, the importance of token k to head (l, h) is

    alpha_k = 1 / (T - k + 1) * sum_{i = k}^{T} A[i, k]          (1-based; the mean over queries i >= k)

and the model-level metric Sink_k^eps = (1 / (L H)) sum_{l, h} 1[alpha_k > eps] with eps = 0.3.
The head score here is alpha_1 (the first token; position 0 below), averaged over prompts;
`info["sink_fraction"]` is Sink_1^eps averaged over prompts.

Sinks past the first token (as the ACT paper, Yu et al. 2024, "Unveiling and Harnessing Hidden
Attention Sinks", found: punctuation, newlines): every key k >= 1 with alpha_k > `later_threshold`
(0.1) in some head, listed with its token text. Only keys with at least `min_queries` later
queries count: alpha_k of a key near the end averages over a handful of queries and is noise.

All of it needs only the mass each key receives (`AttentionStatsRequest.received`), never A.

First token: by default the first token of each prompt as the model tokenizes it (Gemma's <bos>;
SmolLM2 and Qwen prepend nothing, so it is the first word) and `info["first_tokens"]` records which
tokens those were. `first_token="bos"` asks for a BOS sink: the model's BOS token is put first
(an error for a model without one, or for given prompts that do not start with it).
"""

from __future__ import annotations

from collections import defaultdict
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
from interp.tasks.base import PromptSet
from interp.tasks.natural_text import natural_text
from interp.tokens import TokenBatch
from kernels import AttentionStatsRequest


@dataclass(frozen=True)
class SinkParams:
    n_prompts: int = param(16, "number of natural-text prompts (default prompts only)")
    max_tokens: int = param(256, "tokens per default prompt")
    epsilon: float = param(0.3, "a head is a first-token sink when alpha_1 > epsilon (Gu et al.)")
    later_threshold: float = param(0.1, "report later tokens with alpha_k above this (ACT)")
    min_queries: int = param(32, "later sink candidates need at least this many queries after them")
    first_token: str = param("as_is", "'as_is': the prompt's first token; 'bos': require the BOS token first",
                             choices=("as_is", "bos"))
    batch_size: int = param(4, "prompts per forward pass")
    max_listed: int = param(200, "at most this many later-sink entries in info (strongest first)")


def key_alpha(received: torch.Tensor, batch: TokenBatch) -> torch.Tensor:
    """[b, H, N] mass each key receives -> alpha_k: its mean over the queries i >= k.

    Queries i >= k of a prompt of length n number n - k; keys past the prompt get 0.
    """
    positions = torch.arange(received.shape[-1], device=received.device)
    n_queries = (batch.lengths.to(received.device)[:, None] - positions[None, :]).clamp_min(0)
    n_queries = n_queries[:, None, :]
    return torch.where(n_queries > 0, received / n_queries.clamp_min(1), 0.0)


def with_bos(model: Model, prompts: PromptSet | None, default: PromptSet) -> PromptSet:
    """Make sure every prompt starts with the model's BOS token (the `first_token="bos"` mode)."""
    bos = model.bos_token_id
    if bos is None:
        raise InvalidInput(
            f"{model.name} has no BOS token, so there is no BOS sink to measure; use "
            "first_token='as_is' (the sink on each prompt's first token, whatever it is)")
    if prompts is not None:
        bad = [i for i, t in enumerate(prompts.tokens.token_lists()) if t[0] != bos]
        if bad:
            raise InvalidInput(
                f"first_token='bos' but prompts {bad[:5]} do not start with the BOS token "
                f"{model.tokenizer.decode([bos])!r}; prepend it or use first_token='as_is'")
        return prompts
    lists = [t if t[0] == bos else [bos] + t for t in default.tokens.token_lists()]
    return PromptSet(name=default.name + "+bos", tokens=TokenBatch.from_lists(lists, model.pad_token_id),
                     texts=[model.tokenizer.decode(t) for t in lists], metadata=default.metadata)


class SinkDetector(Detector):
    name = "sink"
    description = "attention sinks: mean attention each head gives the first token (Gu et al. alpha_1)"
    meaning = ("alpha_1: mean attention each head gives the first token; above epsilon (0.3) = a "
              "first-token sink (Gu et al. 2024, When Attention Sink Emerges; Xiao et al. 2023, "
              "StreamingLLM)")
    Params = SinkParams
    behaviour = "loss change when the first-token sink is masked in these heads"
    check_sizes = (4, 256)

    def scan(self, model: Model, prompts: Prompts = None, params: SinkParams | None = None,
             progress: Progress | None = None) -> HeadScores:
        params = params if isinstance(params, SinkParams) else self.make_params(params)
        given = None if prompts is None else as_prompt_set(model, prompts, self.name)
        if params.first_token == "bos":
            default = None if given is not None else natural_text(model, params.n_prompts, params.max_tokens - 1)
            prompt_set = with_bos(model, given, default)
        else:
            prompt_set = given if given is not None else natural_text(model, params.n_prompts, params.max_tokens)
        check_context(model, prompt_set)

        alpha = stream_attention_stats(
            model, prompt_set.tokens, AttentionStatsRequest(received=True),
            reduce=lambda layer, stats, batch: key_alpha(stats["received"], batch),
            batch_size=params.batch_size, progress=progress,
        ).permute(1, 0, 2, 3)                                              # [n, L, H, N]
        first = alpha[:, :, :, 0]                                          # [n, L, H]
        info = {
            "epsilon": params.epsilon,
            "sink_fraction": float((first > params.epsilon).float().mean()),
            "first_tokens": sorted({model.tokenizer.decode([t[0]]) for t in prompt_set.tokens.token_lists()}),
            **later_sinks(model, alpha, prompt_set.tokens, params),
            "n_prompts": len(prompt_set), "prompt_set": prompt_set.name,
        }
        return HeadScores(
            detector=self.name, scores=first.mean(0), model_id=model.model_id,
            params=params_json(params), prompt_hash=prompt_set.hash,
            details={"alpha_first": first, "sink_fraction_per_prompt": (first > params.epsilon).float().mean((1, 2))},
            info=info,
        )

    def causal_behaviour(self, model: Model, scores: HeadScores, ablation: str, n_prompts: int,
                         max_tokens: int | None, seed: int, prompts=None) -> Behaviour:
        """Next-token loss on natural text (or `prompts`) with the first-token key masked in the
        heads (pre-softmax; `ablation` does not apply). With first_token="bos" the default
        texts start with the model's BOS token, as the scan's did."""
        if prompts is not None:
            tokens = as_prompt_set(model, prompts, self.name).tokens
        else:
            tokens = _text_prompts(model, n_prompts, max_tokens, scores.params.get("first_token") == "bos")
        positions = tokens.mask.clone()
        positions[:, 0] = False            # query 0 sees only the first token: nothing was masked

        def measure(heads):
            with mask_keys(model, heads, without_first_key):
                return next_token_loss(model, tokens, positions)
        return Behaviour("next-token loss on natural text", "loss", "top_k_hurts_more", measure,
                         tokens.batch_size, "first-token key masked (pre-softmax)")

    def summary(self, scores: HeadScores) -> dict:
        info = scores.info
        return {**super().summary(scores), "epsilon": info["epsilon"],
                "sink_fraction": info["sink_fraction"], "first_tokens": info["first_tokens"],
                "later_sink_tokens": dict(list(info.get("later_sink_tokens", {}).items())[:8])}

    def summary_lines(self, scores: HeadScores) -> list[str]:
        info = scores.info
        lines = [f"Sink_1^{info['epsilon']} (fraction of heads with alpha_1 > {info['epsilon']}): "
                 f"{info['sink_fraction']:.3f}; first tokens: {info['first_tokens'][:5]}"]
        later = list(info.get("later_sink_tokens", {}).items())[:8]
        if later:
            lines.append("later sink tokens: " + ", ".join(f"{t!r} x{r['count']}" for t, r in later))
        return lines + super().summary_lines(scores)


def without_first_key(n_queries: int, n_keys: int) -> torch.Tensor:
    """[q, k] allowed keys: every key but position 0 (queries are the last n_queries keys)."""
    allowed = torch.ones(n_queries, n_keys, dtype=torch.bool)
    allowed[:, 0] = False
    return allowed


def _text_prompts(model: Model, n_prompts: int, max_tokens: int, bos: bool) -> TokenBatch:
    if bos and model.bos_token_id is not None and not model.prepend_bos:
        base = natural_text(model, n_prompts, max_tokens - 1).tokens.token_lists()
        return TokenBatch.from_lists([[model.bos_token_id] + t for t in base], model.pad_token_id)
    return natural_text(model, n_prompts, max_tokens).tokens


def later_sinks(model: Model, alpha: torch.Tensor, tokens: TokenBatch, params: SinkParams) -> dict:
    """Keys k >= 1 with alpha_k > threshold in some head, with their token text.

    alpha: [n, L, H, N]. Returns {"later_sinks": [{prompt, position, token, layer, head, alpha}],
    strongest first, at most `max_listed`; "later_sink_tokens": {token text: {"count": (head,
    occurrence) pairs, "prompts": prompts it sank in, "mean_alpha", "top_heads"}}}.
    """
    n, L, H, N = alpha.shape
    positions = torch.arange(N)
    eligible = (positions[None, :] >= 1) & (tokens.lengths[:, None] - positions[None, :] >= params.min_queries)
    hits = (alpha > params.later_threshold) & eligible[:, None, None, :]
    index = hits.nonzero().tolist()
    values = alpha[hits].tolist()
    ids = tokens.input_ids
    entries = [{"prompt": p, "position": k, "token": model.tokenizer.decode([int(ids[p, k])]),
                "layer": l, "head": h, "alpha": round(v, 4)}
               for (p, l, h, k), v in zip(index, values)]
    by_token: dict[str, dict] = defaultdict(lambda: {"count": 0, "prompts": set(), "alphas": [], "heads": defaultdict(int)})
    for e in entries:
        record = by_token[e["token"]]
        record["count"] += 1
        record["prompts"].add(e["prompt"])
        record["alphas"].append(e["alpha"])
        record["heads"][(e["layer"], e["head"])] += 1
    summary = {
        token: {"count": r["count"], "prompts": len(r["prompts"]),
                "mean_alpha": round(sum(r["alphas"]) / len(r["alphas"]), 4),
                "top_heads": [list(h) for h, _ in sorted(r["heads"].items(), key=lambda kv: -kv[1])[:5]]}
        for token, r in sorted(by_token.items(), key=lambda kv: -kv[1]["count"])
    }
    entries.sort(key=lambda e: -e["alpha"])
    return {"later_sinks": entries[: params.max_listed], "later_sink_tokens": summary,
            "n_later_sinks": len(entries)}


SINK = SinkDetector()
