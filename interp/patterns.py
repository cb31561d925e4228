"""One layer's attention pattern on one text, and the per-key numbers a reader looks at first.

The N x N pattern is what a person wants to *see* for one head on one prompt (the dashboard's
head page, a notebook cell). Scans never use it: they stream statistics instead
(`interp.attention_stats`). This module is for short, interactive texts, so it caps the length.

    pattern = attention_pattern(model, "When Mary and John went to the store, ...", layer=8)
    attention_patterns(model, text, [3, 8, 18])   # {layer: AttentionPattern}, one forward
    pattern.head(3)                    # [N, N] (query, key)
    received_attention(pattern.head(3))  # [N] alpha_k, Gu et al.'s sink score per key
    top_attended(pattern, head=3, k=5)   # [{"position", "token", "received", "from_last"}, ...]

    # hover data for a pattern view: the same forward also gives every position's next tokens
    pattern = attention_pattern(model, text, layer=8, next_tokens=5)
    query_summaries(pattern, head=3)     # per query: its top keys and the top next tokens
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.errors import InvalidInput
from interp.forward import StopForward, run, unembed
from interp.models import Model
from interp.names import hook_name
from interp.tokens import TokenBatch

# ACT (Yu et al., "Unveiling and Harnessing Hidden Attention Sinks") and the sink detector
# (`interp.heads.sink`, its later_threshold) call a key a sink for a head when its alpha > 0.1.
SINK_THRESHOLD = 0.1
# Keys seen by fewer queries than this are left out of sinks and top keys: their alpha averages
# over too few rows (the last key's alpha is just its own self-attention).
MIN_QUERIES = 4
# A pattern is N x N per head; past a few thousand tokens it is neither viewable nor cheap.
MAX_PATTERN_TOKENS = 2048


# Positions unembedded at once for the next-token table: [chunk, vocab] floats stay small even
# for Qwen's 152k vocabulary (256 x 152k x 4 B = 156 MB at most).
UNEMBED_CHUNK = 256


@dataclass
class NextTokens:
    """The model's top-k next tokens at every position of a text (from the same forward).

    ids:    [N, k] token ids, most likely first.
    probs:  [N, k] float32 probabilities (softmax over the whole vocabulary).
    tokens: N lists of k decoded strings.
    """

    ids: torch.Tensor
    probs: torch.Tensor
    tokens: list[list[str]]


@dataclass
class AttentionPattern:
    """The attention of every head of one layer on one text.

    layer:     the layer index.
    token_ids: N ids (with BOS if the model prepends one).
    tokens:    N decoded strings, one per id.
    pattern:   [n_heads, N, N] float32 on the CPU; pattern[h, q, k] is the attention query
               position q pays to key position k (rows sum to 1, zero above the diagonal).
    next_tokens: the model's top next tokens at each position (`NextTokens`), when asked for.
    """

    layer: int
    token_ids: list[int]
    tokens: list[str]
    pattern: torch.Tensor
    next_tokens: NextTokens | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def head(self, head: int) -> torch.Tensor:
        """[N, N] pattern of one head."""
        if not 0 <= head < self.pattern.shape[0]:
            raise InvalidInput(f"head {head} does not exist: layer {self.layer} has heads "
                               f"0..{self.pattern.shape[0] - 1}")
        return self.pattern[head]


def attention_pattern(model: Model, text: str, layer: int,
                      max_tokens: int = MAX_PATTERN_TOKENS, next_tokens: int = 0) -> AttentionPattern:
    """The layer's attention pattern on `text`, read at TransformerLens's `hook_pattern`.

    next_tokens: k > 0 also keeps the model's top-k next tokens at every position
    (`AttentionPattern.next_tokens`), from the same forward.
    Raises InvalidInput for an empty text, a layer the model lacks, or a text longer than
    `max_tokens` (or the model's context).
    """
    return attention_patterns(model, text, [layer], max_tokens, next_tokens)[int(layer)]


def attention_patterns(model: Model, text: str, layers, max_tokens: int = MAX_PATTERN_TOKENS,
                       next_tokens: int = 0) -> dict[int, AttentionPattern]:
    """{layer: AttentionPattern} for several layers of one text, in one forward pass that stops
    after the last layer asked for (the layers after it cannot change these patterns), or, with
    `next_tokens` = k > 0, runs to the end and keeps the top-k next tokens at every position
    (shared by every returned pattern)."""
    if not text or not text.strip():
        raise InvalidInput("the prompt is empty: type some text to see its attention pattern")
    layers = sorted({int(layer) for layer in layers})
    bad = [layer for layer in layers if not 0 <= layer < model.n_layers]
    if bad or not layers:
        raise InvalidInput(f"layer {bad[0] if bad else '(none)'} does not exist: {model.name} "
                           f"has layers 0..{model.n_layers - 1}")
    ids = model.encode(text)
    limit = min(max_tokens, model.n_ctx)
    if len(ids) > limit:
        raise InvalidInput(f"the prompt is {len(ids)} tokens; patterns are shown for at most "
                           f"{limit} tokens: shorten the text")
    if not 0 <= int(next_tokens) <= 100:
        raise InvalidInput(f"next_tokens={next_tokens}: ask for 0 (none) to 100 next tokens")
    captured: dict[int, torch.Tensor] = {}

    def keeper(layer: int):
        def keep(activation: torch.Tensor, hook=None) -> None:
            captured[layer] = activation.detach()[0].float().cpu()  # [H, N, N]
            if layer == layers[-1] and not next_tokens:
                raise StopForward  # the later layers cannot change these patterns
        return keep

    with torch.no_grad():
        hidden = run(model, TokenBatch.from_lists([ids], model.pad_token_id),
                     output="hidden" if next_tokens else None,
                     hooks=[(hook_name("pattern", layer), keeper(layer)) for layer in layers])
        predictions = _top_next_tokens(model, hidden[0], int(next_tokens)) if next_tokens else None
    tokens = model.to_str_tokens(ids)
    return {layer: AttentionPattern(layer=layer, token_ids=ids, tokens=tokens,
                                    pattern=captured[layer], next_tokens=predictions)
            for layer in layers}


def _top_next_tokens(model: Model, hidden: torch.Tensor, k: int) -> NextTokens:
    """[N, d_model] final-norm hidden states -> the top-k next tokens at every position, with
    the model's own unembedding (`interp.forward.unembed`), a chunk of positions at a time."""
    ids, probs = [], []
    for start in range(0, hidden.shape[0], UNEMBED_CHUNK):
        logits = unembed(model, hidden[start:start + UNEMBED_CHUNK]).float()
        top = torch.topk(logits.softmax(-1), k, dim=-1)
        ids.append(top.indices.cpu())
        probs.append(top.values.cpu())
    ids_all, probs_all = torch.cat(ids), torch.cat(probs)
    decode = model.tokenizer.decode
    return NextTokens(ids=ids_all, probs=probs_all,
                      tokens=[[decode([int(i)]) for i in row] for row in ids_all.tolist()])


def query_summaries(pattern: AttentionPattern, head: int, k_keys: int = 3) -> list[dict]:
    """What a reader hovering over a query row wants: for every query position q of one head,
    the k keys it attends to most (CircuitsVis's token hover) and, when the pattern was computed
    with `next_tokens`, the model's top next tokens at q.

    -> [{"position": q, "token", "top_keys": [{"position", "token", "weight"}, ...] (best first;
    weights are attention probabilities, so they sum to at most 1), "next": [{"token", "prob"},
    ...] or []}] for q = 0..N-1.
    """
    head_pattern = pattern.head(head)
    n = head_pattern.shape[-1]
    k = min(k_keys, n)
    weights, keys = torch.topk(head_pattern, k, dim=-1)          # [N, k] each
    rows = []
    nxt = pattern.next_tokens
    for q in range(n):
        # A query sees only q + 1 keys: the rest of its top-k are zero-weight positions after it.
        seen = min(k, q + 1)
        rows.append({
            "position": q, "token": pattern.tokens[q],
            "top_keys": [{"position": int(keys[q, j]), "token": pattern.tokens[int(keys[q, j])],
                          "weight": float(weights[q, j])} for j in range(seen)],
            "next": [] if nxt is None else
                    [{"token": t, "prob": float(p)} for t, p in zip(nxt.tokens[q], nxt.probs[q])],
        })
    return rows


def received_attention(pattern: torch.Tensor) -> torch.Tensor:
    """[..., N, N] (query, key) -> [..., N]: alpha_k = mean over queries i >= k of A[i, k].

    The per-key sink score of Gu et al., "When Attention Sink Emerges in Language Models"
    (2024): the mean attention key k receives from the queries that can see it under causal
    masking. Key 0 is seen by all N queries, the last key only by itself.
    """
    n = pattern.shape[-1]
    received = pattern.sum(dim=-2)  # [..., N]: queries above the diagonal contribute zeros
    seen_by = torch.arange(n, 0, -1, dtype=pattern.dtype, device=pattern.device)  # N - k
    return received / seen_by


def _seen_enough(n: int, min_queries: int) -> torch.Tensor:
    """[N] bool: keys seen by at least `min_queries` queries (all keys if the text is short)."""
    seen_by = torch.arange(n, 0, -1)
    return seen_by >= min(min_queries, n)


def sink_positions(head_pattern: torch.Tensor, threshold: float = SINK_THRESHOLD,
                   min_queries: int = MIN_QUERIES) -> list[int]:
    """Key positions with alpha_k > threshold for one head's [N, N] pattern.

    The last keys are seen by few queries, so their alpha is noise (the last key's alpha is
    its own self-attention): keys seen by fewer than `min_queries` queries are never sinks.
    """
    alpha = received_attention(head_pattern)
    eligible = _seen_enough(alpha.shape[-1], min_queries)
    return [int(k) for k in torch.nonzero((alpha > threshold) & eligible).flatten()]


def top_attended(pattern: AttentionPattern, head: int, k: int = 10,
                 min_queries: int = MIN_QUERIES) -> list[dict]:
    """The k keys one head attends to most, by alpha (mean attention received), among keys seen
    by at least `min_queries` queries (see `sink_positions`).

    -> [{"position", "token", "received": alpha_k, "from_last": attention from the last
    token}, ...], best first.
    """
    head_pattern = pattern.head(head)
    alpha = received_attention(head_pattern)
    alpha = alpha.masked_fill(~_seen_enough(alpha.shape[-1], min_queries), float("-inf"))
    k = min(k, int(torch.isfinite(alpha).sum()))
    values, positions = torch.topk(alpha, k)
    return [{"position": int(p), "token": pattern.tokens[int(p)], "received": float(v),
             "from_last": float(head_pattern[-1, int(p)])}
            for v, p in zip(values, positions)]
