"""Causal checks: do a scan's top heads matter for the behaviour the detector claims?

    result = verify(model, scores, k=5, ablation="mean")
    result["top_k"], result["random_k_mean"], result["ratio"]

The top-k heads of the scan are intervened on, then k random heads (several draws, never one
of the top k), and the behaviour is measured each time next to a clean baseline:

| detector                              | intervention on the heads             | behaviour measured            |
|---------------------------------------|---------------------------------------|-------------------------------|
| induction, previous_token, duplicate_token | ablation (`interp.ablation`)     | loss on the second half of repeated random-token sequences |
| retrieval                             | ablation                              | needle recall (ROUGE-1) of greedy answers |
| sink                                  | the first-token key masked            | next-token loss on natural text |
| streaming                             | the head sees only sinks + recent W   | next-token loss on long natural text |
| safety                                | the scan's ablation (query * eps, ...) | mean first-token refusal log-odds on held-out harmful prompts |

Previous-token heads are the first half of the induction circuit (Olsson et al. 2022), so they
are checked on the same behaviour; duplicate-token heads are checked there too (a weaker claim).

`effect` = how much worse the behaviour got (loss up, recall down) than the baseline;
`ratio` = top-k effect / mean random-k effect (None when random heads did not hurt), and
`claim_holds` says whether the detector's claim held. For induction, retrieval and sink heads the claim
is ratio >> 1. For streaming heads the claim is the opposite — they do not need the far context,
so restricting them should hurt LESS than restricting random heads (ratio < 1); `claim` says
which way each detector's ratio should go. Restricting a handful of heads moves the loss little
either way; the streaming claim shows at k of the order of the streaming-head count (tens).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from interp.ablation import METHODS, ablate_heads, head_means
from interp.errors import InvalidInput
from interp.heads.base import Progress, sub_progress
from interp.models import Model
from interp.names import Head, check_heads, hook_name
from interp.scores import HeadScores
from interp.tasks.base import PromptSet
from interp.tasks.natural_text import natural_text
from interp.tasks.repeated_tokens import repeated_tokens, second_half_mask
from interp.tokens import TokenBatch

INDUCTION_FAMILY = ("induction", "previous_token", "duplicate_token")


# ---- measurements ------------------------------------------------------------------------

@torch.no_grad()
def next_token_loss(model: Model, tokens: TokenBatch, positions: torch.Tensor, batch_size: int = 4) -> float:
    """Mean cross-entropy of predicting token p+1 at every position p where `positions` [n, seq]
    is True (positions must be real tokens with a real successor)."""
    total, count = 0.0, 0
    for start in range(0, tokens.batch_size, batch_size):
        sub = tokens[start: start + batch_size].to(model.device)
        chosen = positions[start: start + batch_size, : sub.seq_len].clone()
        chosen[:, -1] = False                                       # no successor at the end
        logits = model.hf_model(input_ids=sub.input_ids, attention_mask=sub.mask.long()).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        targets = sub.input_ids[:, 1:]
        nll = -logp.gather(-1, targets[..., None]).squeeze(-1).cpu()      # [b, seq-1]
        chosen = chosen[:, :-1]
        total += float(nll[chosen].sum())
        count += int(chosen.sum())
    if count == 0:
        raise InvalidInput("no position to measure the loss on: prompts are too short")
    return total / count


@contextmanager
def mask_keys(model: Model, heads: Iterable[Head], allowed: Callable[[int, int], torch.Tensor]):
    """Within the block, the listed heads attend only where `allowed(n_queries, n_keys)` [q, k]
    is True (plus nothing else), through the bridge's `hook_attn_scores` (pre-softmax scores).

    Rows left with no allowed key keep their original scores (nothing to renormalize onto).
    """
    by_layer: dict[int, list[int]] = {}
    for layer, head in check_heads(model, heads):
        by_layer.setdefault(layer, []).append(head)

    def make_hook(layer_heads: list[int]):
        index = torch.tensor(layer_heads)

        def hook(scores, hook=None):                       # [b, H, q, k]
            n_queries, n_keys = scores.shape[-2], scores.shape[-1]
            query_pos = torch.arange(n_keys - n_queries, n_keys)[:, None]
            causal = torch.arange(n_keys)[None, :] <= query_pos
            keep = allowed(n_queries, n_keys) & causal
            keep = (keep | ~keep.any(-1, keepdim=True)).to(scores.device)   # empty rows: as they were
            scores = scores.clone()
            chosen = scores[:, index]
            scores[:, index] = chosen.masked_fill(~keep, torch.finfo(scores.dtype).min)
            return scores
        return hook

    hooks = [(hook_name("attn_scores", layer), make_hook(hs)) for layer, hs in sorted(by_layer.items())]
    with model.bridge.hooks(fwd_hooks=hooks):
        yield


def without_first_key(n_queries: int, n_keys: int) -> torch.Tensor:
    """[q, k] allowed keys: every key but position 0 (queries are the last n_queries keys)."""
    allowed = torch.ones(n_queries, n_keys, dtype=torch.bool)
    allowed[:, 0] = False
    return allowed


def sinks_and_window(sink_tokens: int, window: int) -> Callable[[int, int], torch.Tensor]:
    """allowed(q, k): the first `sink_tokens` keys and the `window` most recent ones."""
    def allowed(n_queries: int, n_keys: int) -> torch.Tensor:
        q = torch.arange(n_keys - n_queries, n_keys)[:, None]
        k = torch.arange(n_keys)[None, :]
        return (k < sink_tokens) | ((q - k >= 0) & (q - k < window))
    return allowed


@dataclass
class Behaviour:
    """What one detector's heads should matter for: a measurement under an intervention."""

    name: str
    metric: str                    # "loss" (lower is better) or "recall" (higher is better)
    claim: str                     # "top_k_hurts_more" | "top_k_hurts_less"
    measure: Callable[[list[Head]], float]   # heads -> metric with them intervened on
    n_prompts: int
    intervention: str

    def effect(self, value: float, baseline: float) -> float:
        """How much worse than the baseline (positive = worse)."""
        return value - baseline if self.metric == "loss" else baseline - value


def induction_behaviour(model: Model, ablation: str, n_prompts: int, max_tokens: int, seed: int,
                        means_prompts: int = 8, prompts: PromptSet | None = None) -> Behaviour:
    bos = 1 if model.prepend_bos else 0
    half = max((max_tokens - bos) // 2, 4)
    if prompts is None:
        prompts = repeated_tokens(model, n_prompts, half=half, seed=seed + 1000)
    elif not all("half" in m and "offset" in m for m in prompts.metadata):
        raise InvalidInput("induction checks need repeated-token prompts "
                           "(interp.tasks.repeated_tokens.repeated_tokens)")
    else:
        half = prompts.metadata[0]["half"]
    positions = second_half_mask(prompts)
    means = None
    if ablation == "mean":
        # the reference distribution: other random repeated sequences (no shared tokens by design)
        means = head_means(model, repeated_tokens(model, means_prompts, half=half, seed=seed + 2000).tokens)

    def measure(heads):
        with ablate_heads(model, heads, ablation, means):
            return next_token_loss(model, prompts.tokens, positions)
    return Behaviour("repeated-token loss (second half)", "loss", "top_k_hurts_more", measure,
                     len(prompts), f"{ablation} ablation of hook_z")


def retrieval_behaviour(model: Model, scores: HeadScores, ablation: str, n_prompts: int,
                        tests: list | None = None) -> Behaviour:
    from interp.heads.retrieval import RETRIEVAL, build_tests, greedy_decode
    from interp.tasks.needle import NeedleTest, rouge1_recall

    params = RETRIEVAL.make_params({k: tuple(v) if isinstance(v, list) else v for k, v in scores.params.items()})
    if tests is not None:
        if not tests or not all(isinstance(t, NeedleTest) for t in tests):
            raise InvalidInput("retrieval checks take needle tests: a list of interp.tasks.needle.NeedleTest")
    else:
        tests = build_tests(model, params)
        answered = scores.details.get("answered")
        if answered is not None and len(answered) == len(tests) and answered.bool().any():
            # the tests the model could do: recall can only drop from there
            tests = [t for t, ok in zip(tests, answered.bool().tolist()) if ok]
    tests = tests[:n_prompts]
    means = None
    if ablation == "mean":
        means = head_means(model, natural_text(model, 8, 256).tokens)

    def measure(heads):
        recalls = []
        with ablate_heads(model, heads, ablation, means):
            for test in tests:
                tokens = greedy_decode(model, test.input_ids, params.max_new_tokens)
                response = model.tokenizer.decode(tokens, skip_special_tokens=True)
                recalls.append(rouge1_recall(test.needle.answer, response))
        return sum(recalls) / len(recalls)
    return Behaviour("needle recall (ROUGE-1)", "recall", "top_k_hurts_more", measure, len(tests),
                     f"{ablation} ablation of hook_z")


def _text_prompts(model: Model, n_prompts: int, max_tokens: int, bos: bool) -> TokenBatch:
    if bos and model.bos_token_id is not None and not model.prepend_bos:
        base = natural_text(model, n_prompts, max_tokens - 1).tokens.token_lists()
        return TokenBatch.from_lists([[model.bos_token_id] + t for t in base], model.pad_token_id)
    return natural_text(model, n_prompts, max_tokens).tokens


def sink_behaviour(model: Model, scores: HeadScores, n_prompts: int, max_tokens: int,
                   tokens: TokenBatch | None = None) -> Behaviour:
    if tokens is None:
        tokens = _text_prompts(model, n_prompts, max_tokens, scores.params.get("first_token") == "bos")
    positions = tokens.mask.clone()
    positions[:, 0] = False            # query 0 sees only the first token: nothing was masked

    def measure(heads):
        with mask_keys(model, heads, without_first_key):
            return next_token_loss(model, tokens, positions)
    return Behaviour("next-token loss on natural text", "loss", "top_k_hurts_more", measure,
                     tokens.batch_size, "first-token key masked (pre-softmax)")


def streaming_behaviour(model: Model, scores: HeadScores, n_prompts: int, max_tokens: int,
                        tokens: TokenBatch | None = None) -> Behaviour:
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


DEFAULT_SIZES = {  # (n_prompts, max_tokens) per behaviour; small: a check, not a benchmark
    "induction": (8, 128), "sink": (4, 256), "streaming": (2, 512), "retrieval": (5, None),
    "safety": (16, None),
}


def behaviour_for(model: Model, scores: HeadScores, ablation: str, n_prompts: int | None,
                  max_tokens: int | None, seed: int, prompts=None) -> Behaviour:
    name = scores.detector
    if name in INDUCTION_FAMILY:
        n, t = DEFAULT_SIZES["induction"]
        return induction_behaviour(model, ablation, n_prompts or n, max_tokens or t, seed, prompts=prompts)
    if name == "retrieval":
        return retrieval_behaviour(model, scores, ablation, n_prompts or DEFAULT_SIZES["retrieval"][0], prompts)
    if name == "safety":
        return safety_behaviour(model, scores, n_prompts or DEFAULT_SIZES["safety"][0], prompts)
    tokens = None
    if prompts is not None:
        from interp.heads.base import as_prompt_set

        tokens = as_prompt_set(model, prompts, name).tokens
    if name == "sink":
        n, t = DEFAULT_SIZES["sink"]
        return sink_behaviour(model, scores, n_prompts or n, max_tokens or t, tokens)
    if name == "streaming":
        n, t = DEFAULT_SIZES["streaming"]
        return streaming_behaviour(model, scores, n_prompts or n, max_tokens or t, tokens)
    raise InvalidInput(f"no causal check is defined for detector {name!r}; checks exist for "
                       f"{', '.join(INDUCTION_FAMILY + ('retrieval', 'sink', 'streaming', 'safety'))}")


def safety_behaviour(model: Model, scores: HeadScores, n_prompts: int, prompts=None) -> Behaviour:
    """Refusal on held-out harmful chat prompts, heads ablated the way the scan ablated them
    (the first-token metric; `interp safety` adds the generation-based rate and random draws)."""
    from interp.heads.safety import refusal_measure

    measure, n, intervention = refusal_measure(model, scores, n_prompts, prompts)
    # higher log-odds = more refusal, so "worse" (less refusal) is a drop, as for recall
    return Behaviour("refusal of held-out harmful prompts", "refusal_logodds", "top_k_hurts_more",
                     measure, n, intervention)


def random_heads(model: Model, k: int, exclude: list[Head], n_draws: int, seed: int) -> list[list[Head]]:
    """`n_draws` sets of k distinct heads drawn uniformly from the heads not in `exclude`."""
    pool = [(l, h) for l in range(model.n_layers) for h in range(model.n_heads) if (l, h) not in set(exclude)]
    if k > len(pool):
        raise InvalidInput(f"k={k} leaves only {len(pool)} other heads to draw random sets from")
    generator = torch.Generator().manual_seed(seed)
    return [sorted(pool[i] for i in torch.randperm(len(pool), generator=generator)[:k].tolist())
            for _ in range(n_draws)]


def verify(model: Model, scores: HeadScores, k: int = 5, ablation: str = "mean", n_random: int = 5,
           seed: int = 0, n_prompts: int | None = None, max_tokens: int | None = None,
           prompts=None, progress: Progress | None = None) -> dict:
    """Intervene on the top-k heads of `scores` and on `n_random` random k-head sets; measure.

    ablation: "mean" or "zero" (for induction-family and retrieval heads; sink and streaming
        checks mask attention keys instead, see the module doc).
    n_prompts, max_tokens: the size of the behaviour's prompt set (defaults: small).
    prompts: your own prompts instead: a repeated-token PromptSet (induction family), a list
        of NeedleTest (retrieval; the first n_prompts are used), texts / TokenBatch (sink, streaming).
    Returns JSON-able: {"detector", "behaviour", "metric", "claim", "intervention", "k",
    "heads", "baseline", "top_k", "random_k" [per draw], "random_k_mean", "random_heads",
    "top_k_effect", "random_k_effect", "ratio" (None unless random heads hurt), "claim_holds",
    "n_prompts"}.
    """
    if ablation not in METHODS:
        raise InvalidInput(f"ablation must be one of {METHODS}, got {ablation!r}")
    total = model.n_layers * model.n_heads
    if not 1 <= k < total:
        raise InvalidInput(f"k must be between 1 and {total - 1} for {model.name}, got {k}")
    if n_random < 1:
        raise InvalidInput(f"n_random must be >= 1, got {n_random}")
    if tuple(scores.scores.shape) != (model.n_layers, model.n_heads):
        raise InvalidInput(f"scores are {tuple(scores.scores.shape)} but {model.name} has "
                           f"{model.n_layers} x {model.n_heads} heads: scores of another model?")
    report = sub_progress(progress, 0.0, 1.0)
    report(0.0, "preparing prompts")
    behaviour = behaviour_for(model, scores, ablation, n_prompts, max_tokens, seed, prompts)
    top = scores.top_heads(k)
    draws = random_heads(model, k, top, n_random, seed)
    runs = 2 + n_random
    baseline = behaviour.measure([])
    report(1 / runs, "baseline measured")
    top_value = behaviour.measure(top)
    report(2 / runs, f"top-{k} measured")
    random_values = []
    for i, heads in enumerate(draws):
        random_values.append(behaviour.measure(heads))
        report((3 + i) / runs, f"random draw {i + 1}/{n_random}")
    random_mean = sum(random_values) / len(random_values)
    top_effect = behaviour.effect(top_value, baseline)
    random_effect = behaviour.effect(random_mean, baseline)
    # A ratio of two effects only reads as "x times" when random heads did hurt; with both
    # effects negative it would be positive and say nothing. `claim_holds` is the verdict.
    ratio = top_effect / random_effect if random_effect > 0 else None
    if behaviour.claim == "top_k_hurts_more":
        claim_holds = top_effect > 0 and top_effect > random_effect
    else:
        claim_holds = top_effect < random_effect
    return {
        "detector": scores.detector, "behaviour": behaviour.name, "metric": behaviour.metric,
        "claim": behaviour.claim, "intervention": behaviour.intervention, "k": k,
        "ablation": ablation if behaviour.intervention.endswith("hook_z") else None,
        "heads": [list(h) for h in top],
        "baseline": baseline, "top_k": top_value,
        "random_k": random_values, "random_k_mean": random_mean,
        "random_heads": [[list(h) for h in draw] for draw in draws],
        "top_k_effect": top_effect, "random_k_effect": random_effect,
        "ratio": None if ratio is None or not math.isfinite(ratio) else ratio,
        "claim_holds": bool(claim_holds), "n_prompts": behaviour.n_prompts, "seed": seed,
    }
