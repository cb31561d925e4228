"""Causal checks: do a scan's top heads matter for the behaviour the detector claims?

    result = verify(model, scores, k=5, ablation="mean")
    result["top_k"], result["random_k_mean"], result["ratio"]

The top-k heads of the scan are intervened on, then k random heads (several draws, never one
of the top k), and the behaviour is measured each time next to a clean baseline. What is
intervened on and measured is the detector's own (`Detector.causal_behaviour`, in each
detector's module; `interp scan --list` and `Detector.describe()` say it in words): ablation
of hook_z and the loss on repeated tokens for the induction family, needle recall for
retrieval, the first-token key masked for sinks, sinks + window only for streaming heads, the
scan's own ablation and the refusal log-odds for safety heads.

`effect` = how much worse the behaviour got (loss up, recall down) than the baseline;
`ratio` = top-k effect / mean random-k effect (None when random heads did not hurt), and
`claim_holds` says whether the detector's claim held: for most detectors the claim is
ratio >> 1 ("top_k_hurts_more"); for streaming heads it is the opposite, restricting them
should hurt LESS than restricting random heads ("top_k_hurts_less").
"""

from __future__ import annotations

import math

import torch

from interp.ablation import METHODS
from interp.errors import InvalidInput
from interp.heads.base import Progress, sub_progress
from interp.heads.behaviour import Behaviour
from interp.heads.registry import DETECTORS
from interp.models import Model
from interp.names import Head
from interp.scores import HeadScores


def behaviour_for(model: Model, scores: HeadScores, ablation: str, n_prompts: int | None,
                  max_tokens: int | None, seed: int, prompts=None) -> Behaviour:
    """The causal behaviour of the detector that made `scores`, on its default-size prompts
    (`Detector.check_sizes`) unless n_prompts / max_tokens / prompts say otherwise."""
    detector = DETECTORS.get(scores.detector)
    if detector is None or detector.check_sizes is None:
        checked = [name for name, d in DETECTORS.items() if d.check_sizes is not None]
        raise InvalidInput(f"no causal check is defined for detector {scores.detector!r}; checks "
                           f"exist for {', '.join(checked)}")
    default_prompts, default_tokens = detector.check_sizes
    return detector.causal_behaviour(model, scores, ablation, n_prompts or default_prompts,
                                     max_tokens or default_tokens, seed, prompts)


def random_heads(model: Model, k: int, exclude: list[Head], n_draws: int, seed: int) -> list[list[Head]]:
    """`n_draws` sets of k distinct heads drawn uniformly from the heads not in `exclude`."""
    pool = [(l, h) for l in range(model.n_layers) for h in range(model.n_heads) if (l, h) not in set(exclude)]
    if k > len(pool):
        raise InvalidInput(f"k={k} leaves only {len(pool)} other heads to draw random sets from")
    generator = torch.Generator().manual_seed(seed)
    return [sorted(pool[i] for i in torch.randperm(len(pool), generator=generator)[:k].tolist())
            for _ in range(n_draws)]


# The causal check's sizes, as forms and the CLI may give them: (lo, hi), both included.
VERIFY_BOUNDS = {"k": (1, 4096), "n_random": (1, 100), "n_prompts": (1, 4096),
                 "max_tokens": (2, 131072)}


def check_verify_options(k: int | None, ablation: str = "mean", n_random: int = 5,
                         n_prompts: int | None = None, max_tokens: int | None = None) -> None:
    """Refuse causal-check sizes outside `VERIFY_BOUNDS` or an unknown ablation, naming the
    bound; cheap, so callers run it before any model loads (None: not given / default)."""
    if ablation not in METHODS:
        raise InvalidInput(f"ablation must be one of {METHODS}, got {ablation!r}")
    for name, value in (("k", k), ("n_random", n_random), ("n_prompts", n_prompts),
                        ("max_tokens", max_tokens)):
        if value is None:
            continue
        lo, hi = VERIFY_BOUNDS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise InvalidInput(f"causal check {name} must be a whole number in [{lo}, {hi}], "
                               f"got {value!r}")


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
    check_verify_options(k, ablation, n_random, n_prompts, max_tokens)
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
