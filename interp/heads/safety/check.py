"""The safety heads' causal check: refusal on held-out harmful prompts with the top-k heads of
each head set (Ships, the refusal log-odds score, Sahara's set) ablated vs k random heads
(several draws, a 95% interval), and what happens to harmless replies.

Both refusal metrics of `interp.refusal` (first-token log-odds and generated replies) are
measured for each condition (baseline, top-k, `n_random` random k-head sets per k); harmless
replies are compared with the unablated ones (refusal rate, perplexity under the unablated
model, exact and prefix agreement). The compliance multiplier is the paper's "16x" figure
(Zhou et al. 2024, arXiv:2410.13708).
"""

from __future__ import annotations

import math
import random

import torch

from interp.ablation import ablate_heads
from interp.forward import run
from interp.heads.safety.rankings import RANKINGS, top_heads
from interp.models import Model
from interp.names import Head, check_heads
from interp.refusal import RefusalTokens, greedy_generate, is_refusal, measure_refusal
from interp.scores import HeadScores
from interp.tasks.base import PromptSet
from interp.tokens import TokenBatch


@torch.no_grad()
def continuation_nll(model: Model, prompts: PromptSet, continuations: list[list[int]]) -> torch.Tensor:
    """[n] mean negative log-likelihood per token of each continuation under the model as it is
    now (call outside any ablation for the unablated model's judgement); NaN if empty."""
    lists = [p + c for p, c in zip(prompts.tokens.token_lists(), continuations)]
    batch = TokenBatch.from_lists(lists, model.pad_token_id).to(model.device)
    logits = run(model, batch, output="logits").float()
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
    targets = batch.input_ids[:, 1:]
    token_lp = logprobs.gather(-1, targets[..., None])[..., 0].cpu()
    out = torch.full((len(lists),), float("nan"))
    for row, (prompt_len, cont) in enumerate(zip(prompts.tokens.lengths.tolist(), continuations)):
        if cont:
            out[row] = -token_lp[row, prompt_len - 1: prompt_len - 1 + len(cont)].mean()
    return out


def _agreement(base: list[list[int]], other: list[list[int]]) -> tuple[float, float]:
    """(exact-match rate, mean fraction of the base reply reproduced before the first change)."""
    exact, prefix = [], []
    for a, b in zip(base, other):
        exact.append(float(a == b))
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        prefix.append(same / max(len(a), 1))
    return sum(exact) / len(exact), sum(prefix) / len(prefix)


def _condition(model, heads, method, eps, z_mean, harmful, harmless, tokens, max_new_tokens,
               batch_size, baseline=None) -> dict:
    with ablate_heads(model, heads, method, means=z_mean, eps=eps):
        harmful_report = measure_refusal(model, harmful, tokens, max_new_tokens, batch_size)
        harmless_gen = greedy_generate(model, harmless, max_new_tokens, batch_size)
    nll = continuation_nll(model, harmless, harmless_gen.token_ids)
    result = {
        "heads": [list(h) for h in heads],
        "harmful": harmful_report.summary(),
        "harmless_refusal_rate_generation": sum(map(is_refusal, harmless_gen.texts)) / len(harmless),
        "harmless_perplexity_under_unablated": float(torch.exp(torch.nanmean(nll))),
        "_harmful_report": harmful_report,
        "_harmless_ids": harmless_gen.token_ids,
        "_harmless_texts": harmless_gen.texts,
    }
    if baseline is not None:
        exact, prefix = _agreement(baseline["_harmless_ids"], harmless_gen.token_ids)
        result["harmless_same_as_baseline"] = exact
        result["harmless_prefix_kept"] = prefix
        base_refused = baseline["_harmful_report"].refused_by_generation
        if base_refused.any():
            flips = (~harmful_report.refused_by_generation & base_refused).sum()
            result["harmful_flip_rate_generation"] = float(flips / base_refused.sum())
        base_refused = baseline["_harmful_report"].refused_by_logodds
        if base_refused.any():
            flips = (~harmful_report.refused_by_logodds & base_refused).sum()
            result["harmful_flip_rate_logodds"] = float(flips / base_refused.sum())
    return result


def compliance_multiplier(baseline_refusal: float, ablated_refusal: float) -> float | None:
    """How many times more harmful prompts are answered when ablated (the paper's "16x").
    None when the baseline answers none (the ratio is unbounded; report counts instead)."""
    base = 1.0 - baseline_refusal
    return None if base <= 0 else (1.0 - ablated_refusal) / base


# two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal's)
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def mean_interval(values: list[float]) -> tuple[float, float] | None:
    """95% t-interval of the mean of independent draws of a rate (here: random head sets),
    clipped to [0, 1]; None for < 2 draws."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = (_T95[n - 2] if n - 1 <= len(_T95) else 1.96) * sd / math.sqrt(n)
    return (max(0.0, mean - half), min(1.0, mean + half))   # rates: clipped to [0, 1]


def wilson_interval(rate: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a rate measured on n prompts (binomial sampling error)."""
    if n == 0:
        return (0.0, 1.0)
    z = 1.96
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def default_head_sets(scores: HeadScores, k: int) -> dict[str, list[Head]]:
    """{name: ranked heads} to check: the top-k of every ranking the scan stored ("ships",
    "refusal_logodds"; a scan stored before both were kept: its scores under its own name) and
    Sahara's greedy set, in the order it was chosen."""
    rankings = {name: scores.details[name] for name in RANKINGS
                if isinstance(scores.details.get(name), torch.Tensor)}
    if not rankings:
        rankings = {scores.params.get("rank_by", "ships"): scores.scores}
    sets = {name: top_heads(score, k) for name, score in rankings.items()}
    sahara = (scores.info.get("sahara") or {}).get("heads")
    if sahara:
        sets["sahara"] = [tuple(h) for h in sahara]
    return sets


def causal_check(model: Model, scores: HeadScores, harmful: PromptSet, harmless: PromptSet,
                 tokens: RefusalTokens, ks=(1, 3, 5), n_random: int | dict = 3, seed: int = 0,
                 method: str | None = None, eps: float | None = None, max_new_tokens: int = 24,
                 batch_size: int = 8, progress=None,
                 head_sets: dict[str, list[Head]] | None = None,
                 baseline: dict | None = None) -> dict:
    """Refusal (both metrics) on held-out harmful prompts with the top-k heads of each head set
    ablated vs `n_random` random k-head sets, and the harmless prompts' replies: refusal rate,
    perplexity of the reply under the unablated model, agreement with the unablated reply.

    head_sets: {name: heads, best first}; default `default_head_sets` (Ships, the refusal
        log-odds score, Sahara's set). A set shorter than k is checked at k only if it has k.
    n_random: random k-head sets per k (an int, or {k: draws} to spend more draws on one k).
    The random draws for each k are shared by every head set (drawn from heads in none of
    them), so the sets are compared with the same random baseline.

    baseline: the "_baseline" of an earlier call on the same prompts (the unablated model does
        not depend on the method or the head sets), so a series of checks generates it once.

    Returns the conditions and `summary[set name][f"top{k}"]`: per metric ("generation",
    "logodds") the top-k rate with its 95% Wilson interval over prompts, the random draws, their
    mean and its 95% t-interval, and `lowers_refusal_<metric>`: the top-k rate is below the
    baseline AND below the random interval (below every draw when there are < 2 draws);
    `verdicts` says in words, for each set and k, whether ablating it lowers refusal.
    """
    method = method or scores.params.get("method", "query_scale")
    eps = scores.params.get("eps", 1e-5) if eps is None else eps
    z_mean = scores.details.get("z_mean")
    head_sets = default_head_sets(scores, max(ks)) if head_sets is None else \
        {name: check_heads(model, heads) for name, heads in head_sets.items()}
    draws = {k: int(n_random[k] if isinstance(n_random, dict) else n_random) for k in ks}
    rng = random.Random(seed)
    checked = {h for heads in head_sets.values() for h in heads}
    others = [(x, h) for x in range(model.n_layers) for h in range(model.n_heads)
              if (x, h) not in checked]
    plan: dict[str, list[Head]] = {"baseline": []}
    same: dict[frozenset, str] = {}          # a head set already planned (e.g. equal top-1s)
    for name, heads in head_sets.items():
        for k in ks:
            if k <= len(heads):
                key = frozenset(heads[:k])
                same.setdefault(key, f"{name}_top{k}")
                plan.setdefault(same[key], list(heads[:k]))
    for k in ks:
        for i in range(draws[k]):
            plan[f"random{k}_{i}"] = rng.sample(others, k)
    conditions: dict[str, dict] = {} if baseline is None else {"baseline": baseline}
    for i, (name, heads) in enumerate(plan.items()):
        if name in conditions:
            continue
        if progress is not None:
            progress(i / len(plan), f"causal check: {name}")
        conditions[name] = _condition(model, heads, method, eps, z_mean, harmful, harmless, tokens,
                                      max_new_tokens, batch_size, conditions.get("baseline"))
    base = conditions["baseline"]["harmful"]
    summary: dict[str, dict] = {}
    verdicts = []
    for name, heads in head_sets.items():
        for k in ks:
            if k > len(heads):
                continue
            top_k = conditions[same[frozenset(heads[:k])]]
            randoms = [conditions[f"random{k}_{i}"] for i in range(draws[k])]
            row = _summary_row(top_k, randoms, base, len(harmful))
            summary.setdefault(name, {})[f"top{k}"] = row
            row["verdict"] = _verdict(name, k, row, method)
            verdicts.append(row["verdict"])
    clean = {name: {k: v for k, v in c.items() if not k.startswith("_")}
             for name, c in conditions.items()}
    return {"method": method, "eps": eps, "n_harmful": len(harmful), "n_harmless": len(harmless),
            "max_new_tokens": max_new_tokens, "ks": list(ks), "n_random": draws,
            "head_sets": {name: [list(h) for h in heads] for name, heads in head_sets.items()},
            "baseline": clean["baseline"], "summary": summary, "verdicts": verdicts,
            "conditions": clean, "_baseline": conditions["baseline"]}


def _summary_row(top_k: dict, randoms: list[dict], base: dict, n: int) -> dict:
    row = {"heads": top_k["heads"], "random_heads": [r["heads"] for r in randoms]}
    for metric in ("generation", "logodds"):
        key = f"refusal_rate_{metric}"
        draws = [r["harmful"][key] for r in randoms]
        top_rate = top_k["harmful"][key]
        interval = mean_interval(draws)
        row[f"{key}_baseline"] = base[key]
        row[f"{key}_top"] = top_rate
        row[f"{key}_top_interval"] = list(wilson_interval(top_rate, n))
        row[f"{key}_random"] = _mean(draws)
        row[f"{key}_random_draws"] = draws
        row[f"{key}_random_interval"] = None if interval is None else list(interval)
        row[f"{key}_random_max_change"] = max((abs(d - base[key]) for d in draws), default=None)
        below_random = top_rate < (interval[0] if interval is not None else
                                   min(draws, default=float("inf")))
        row[f"lowers_refusal_{metric}"] = bool(top_rate < base[key] and below_random)
        row[f"halves_refusal_{metric}"] = bool(top_rate <= base[key] / 2 and base[key] > 0)
        row[f"multiplier_{metric}_top"] = compliance_multiplier(base[key], top_rate)
        row[f"multiplier_{metric}_random"] = compliance_multiplier(
            base[key], row[f"{key}_random"]) if draws else None
    for key in ("harmful_flip_rate_logodds", "harmful_flip_rate_generation",
                "harmless_perplexity_under_unablated", "harmless_same_as_baseline",
                "harmless_prefix_kept", "harmless_refusal_rate_generation"):
        row[f"{key}_top"] = top_k.get(key)
        row[f"{key}_random"] = _mean([r.get(key) for r in randoms])
    return row


def _verdict(name: str, k: int, row: dict, method: str) -> str:
    """One sentence: does ablating this top-k set lower refusal, by generation (the replies)
    and by the first-token log-odds, compared with the baseline and the random k-head sets?"""
    parts = []
    for metric in ("generation", "logodds"):
        key = f"refusal_rate_{metric}"
        interval = row[f"{key}_random_interval"]
        random = "-" if row[f"{key}_random"] is None else f"{row[f'{key}_random']:.2f}"
        if interval is not None:
            random += f" [95% {interval[0]:.2f}, {interval[1]:.2f}]"
        outcome = ("LOWERS refusal more than random heads" if row[f"lowers_refusal_{metric}"]
                   else "does NOT lower refusal (vs baseline and random heads)")
        parts.append(f"{metric} refusal {row[f'{key}_top']:.2f} vs baseline "
                     f"{row[f'{key}_baseline']:.2f}, random {random}: {outcome}")
    heads = " ".join(f"L{l}H{h}" for l, h in row["heads"])
    return f"top-{k} {name} ({heads}), {method}: " + "; ".join(parts)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(values) / len(values) if values else None
