"""The safety heads' causal check: refusal on held-out harmful prompts with the top-k heads
ablated vs k random heads, and what happens to harmless replies.

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
from interp.models import Model
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


def causal_check(model: Model, scores: HeadScores, harmful: PromptSet, harmless: PromptSet,
                 tokens: RefusalTokens, ks=(1, 3), n_random: int = 2, seed: int = 0,
                 method: str | None = None, eps: float | None = None, max_new_tokens: int = 24,
                 batch_size: int = 8, progress=None) -> dict:
    """Refusal (both metrics) on held-out harmful prompts with the top-k safety heads ablated vs
    k random heads, and the harmless prompts' replies: refusal rate, perplexity of the reply
    under the unablated model, and agreement with the unablated reply.
    """
    method = method or scores.params.get("method", "query_scale")
    eps = scores.params.get("eps", 1e-5) if eps is None else eps
    z_mean = scores.details.get("z_mean")
    top = scores.top_heads(max(ks))
    rng = random.Random(seed)
    others = [(x, h) for x in range(model.n_layers) for h in range(model.n_heads)
              if (x, h) not in top]
    plan = [("baseline", [])]
    for k in ks:
        plan.append((f"top{k}", top[:k]))
        plan += [(f"random{k}_{i}", rng.sample(others, k)) for i in range(n_random)]
    conditions: dict[str, dict] = {}
    for i, (name, heads) in enumerate(plan):
        if progress is not None:
            progress(i / len(plan), f"causal check: {name}")
        conditions[name] = _condition(model, heads, method, eps, z_mean, harmful, harmless, tokens,
                                      max_new_tokens, batch_size, conditions.get("baseline"))
    base = conditions["baseline"]["harmful"]
    summary = {}
    for k in ks:
        top_k = conditions[f"top{k}"]
        randoms = [conditions[f"random{k}_{i}"] for i in range(n_random)]
        row = {"heads": top_k["heads"], "random_heads": [r["heads"] for r in randoms]}
        for metric in ("logodds", "generation"):
            key = f"refusal_rate_{metric}"
            row[f"{key}_top"] = top_k["harmful"][key]
            row[f"{key}_random"] = _mean([r["harmful"][key] for r in randoms])
            row[f"multiplier_{metric}_top"] = compliance_multiplier(base[key], top_k["harmful"][key])
            row[f"multiplier_{metric}_random"] = compliance_multiplier(
                base[key], row[f"{key}_random"]) if randoms else None
        for key in ("harmful_flip_rate_logodds", "harmful_flip_rate_generation",
                    "harmless_perplexity_under_unablated", "harmless_same_as_baseline",
                    "harmless_prefix_kept", "harmless_refusal_rate_generation"):
            row[f"{key}_top"] = top_k.get(key)
            row[f"{key}_random"] = _mean([r.get(key) for r in randoms])
        summary[f"top{k}"] = row
    clean = {name: {k: v for k, v in c.items() if not k.startswith("_")}
             for name, c in conditions.items()}
    return {"method": method, "eps": eps, "n_harmful": len(harmful), "n_harmless": len(harmless),
            "max_new_tokens": max_new_tokens, "baseline": clean["baseline"], "summary": summary,
            "conditions": clean}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(values) / len(values) if values else None

