"""How good is a circuit? Faithfulness, completeness, minimality, and random circuits to compare.

Wang et al. 2022, section 4. A circuit C is a set of attention heads; "running C" means running
the model with every head NOT in C mean-ablated, and F(C) is the mean logit difference
(IO - S) over the prompts then. MLPs, embeddings and the unembedding always stay (as in the
paper). The mean of a head is position-aware and taken over the ABC distribution with the same
template (the paper's "mean over p_ABC", appendix A): for each prompt, its template's ABC
prompts' hook_z averaged position by position. `interp.ablation` offers position-free
zero/mean ablation for steering; the circuit's criteria need these template means.

- faithfulness  F(C) / F(M): the fraction of the full model's logit difference the circuit keeps
  (paper: 87% for GPT-2 small's 26 heads).
- completeness  for subsets K of C: |F(C \\ K) - F(M \\ K)| (the paper's incompleteness score),
  over K = empty, each role class, random halves and a greedy search; small = complete.
- minimality    for each head v in C: |F(C \\ (K u {v})) - F(C \\ K)| with K = empty and K =
  the other heads of v's class (the paper's choice); large = v is needed.
- random_baseline  faithfulness of random head sets of the same size.

Every F is one row per (head set, prompt) in batched forwards (`interp.patching.runner`).
Scores are reported relative to F(M) so they read as fractions.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Iterable, Sequence

import torch

from circuits.circuit import ROLE_POSITIONS, Circuit
from interp.errors import InvalidInput
from interp.models import Model
from interp.names import check_heads, hook_name
from interp.patching.activation import final_logits_and_cache
from interp.patching.components import has_named_positions, position_table
from interp.patching.metrics import MetricTargets, resolve_metric
from interp.patching.runner import expand_rows, run_rows
from interp.tasks.base import PromptSet

KEEP_EVERYWHERE = -1
ABLATE = -2

HeadSpec = dict[tuple[int, int], str | None]  # kept head -> the named position it is kept at (None = all)


class TemplateMeans:
    """Position-aware hook_z means per prompt group, over reference prompts.

    z: [n_groups, n_layers, seq, n_heads, d_head]; group_of: [n_prompts] the group of each
    evaluated prompt. Groups are (template, length): prompts of a group line up token by token.
    """

    def __init__(self, z: torch.Tensor, group_of: torch.Tensor):
        self.z = z
        self.group_of = group_of


def template_means(model: Model, prompts: PromptSet, reference=None, batch_size: int = 32) -> TemplateMeans:
    """Means of every head's z over `reference` (default: the prompts' own corrupted, i.e. ABC,
    counterparts), grouped by template and length, for ablating `prompts`."""
    reference = prompts.corrupted if reference is None else reference
    if reference is None:
        raise InvalidInput("mean ablation needs reference prompts (the ABC distribution); the "
                           "prompt set has no corrupted prompts")
    if reference.batch_size != len(prompts):
        raise InvalidInput("reference prompts must pair one to one with the prompts (same templates)")
    keys = [(m.get("template"), int(n)) for m, n in zip(prompts.metadata or [{}] * len(prompts),
                                                         prompts.tokens.lengths)]
    groups = sorted(set(keys), key=str)
    group_of = torch.tensor([groups.index(k) for k in keys])
    names = [hook_name("z", layer) for layer in range(model.n_layers)]
    _, cache = final_logits_and_cache(model, reference, names, batch_size=batch_size)
    z = torch.stack([cache[name] for name in names], dim=1)  # [n, L, seq, H, d]
    means = torch.zeros((len(groups),) + tuple(z.shape[1:]), dtype=z.dtype, device=z.device)
    for g in range(len(groups)):
        means[g] = z[group_of == g].mean(dim=0)
    return TemplateMeans(means, group_of)


def _keep_table(model: Model, specs: Sequence[HeadSpec], position_names: list) -> torch.Tensor:
    """[n_specs, L, H] long: ABLATE, KEEP_EVERYWHERE, or the column of the position kept."""
    table = torch.full((len(specs), model.n_layers, model.n_heads), ABLATE, dtype=torch.long)
    for index, spec in enumerate(specs):
        check_heads(model, spec.keys())
        for (layer, head), position in spec.items():
            if position is None:
                table[index, layer, head] = KEEP_EVERYWHERE
            else:
                if position not in position_names:
                    raise InvalidInput(f"position {position!r} is not named in the prompts' metadata")
                table[index, layer, head] = position_names.index(position)
    return table


def ablated_metric(
    model: Model,
    prompts: PromptSet,
    specs: Sequence[HeadSpec],
    means: TemplateMeans,
    metric: str | Callable = "logit_diff",
    batch_size: int = 64,
    progress=None,
) -> torch.Tensor:
    """[n_specs] mean metric with every head outside each spec mean-ablated (see module doc)."""
    _, metric_fn = resolve_metric(metric)
    named = has_named_positions(prompts)
    position_names, table = position_table(prompts, "named") if named else ([], None)
    keep = _keep_table(model, specs, position_names).to(model.device)
    spec_index, prompt_index = expand_rows(len(specs), len(prompts))
    targets = MetricTargets(prompts.answers, prompts.wrong_answers)
    z_means = means.z

    def hooks_for(rows: torch.Tensor, width: int):
        spec = spec_index[rows].to(model.device)
        prompt = prompt_index[rows]
        group = means.group_of[prompt].to(model.device)
        positions = torch.arange(width, device=model.device)
        hooks = []
        for layer in range(model.n_layers):
            rule = keep[spec, layer]  # [b, H]
            if bool((rule == KEEP_EVERYWHERE).all()):
                continue
            kept = (rule == KEEP_EVERYWHERE)[:, None, :].expand(-1, width, -1).clone()  # [b, pos, H]
            at_position = rule >= 0
            if at_position.any():
                token = table[prompt].to(model.device)  # [b, n_named]
                column = rule.clamp(min=0)
                kept_token = torch.gather(token, 1, column)  # [b, H]
                kept |= at_position[:, None, :] & (positions[None, :, None] == kept_token[:, None, :])

            def hook(z, hook=None, layer=layer, kept=kept):
                mean = z_means[group, layer, :width].to(z.dtype)
                return torch.where(kept[..., None], z, mean)
            hooks.append((hook_name("z", layer), hook))
        return hooks

    def reduce(logits, rows):
        return metric_fn(logits, targets.rows(prompt_index[rows]))

    per_row = run_rows(model, prompts.tokens, prompt_index, hooks_for, reduce,
                       batch_size=batch_size, progress=progress)
    return per_row.reshape(len(specs), len(prompts)).mean(dim=1)


def spec_of(heads: Iterable[tuple[int, int]], circuit: Circuit | None = None,
            positions: str = "all") -> HeadSpec:
    """Heads -> HeadSpec: kept at every position, or (positions="role") only where their role
    works (ROLE_POSITIONS; needs the circuit for the roles)."""
    if positions == "all":
        return {(l, h): None for l, h in heads}
    if positions != "role" or circuit is None:
        raise InvalidInput("positions must be 'all', or 'role' together with a circuit")
    return {(l, h): ROLE_POSITIONS[circuit.role_of(l, h)] for l, h in heads}


def faithfulness(model: Model, prompts: PromptSet, circuit: Circuit, means: TemplateMeans | None = None,
                 positions: str = "all", batch_size: int = 64) -> dict:
    """{"faithfulness": F(C)/F(M), "F_circuit", "F_model", "F_empty"} (logit differences)."""
    means = means or template_means(model, prompts)
    everything = {(l, h): None for l in range(model.n_layers) for h in range(model.n_heads)}
    values = ablated_metric(model, prompts, [spec_of(circuit.head_set, circuit, positions),
                                             everything, {}], means, batch_size=batch_size)
    f_circuit, f_model, f_empty = (float(v) for v in values)
    return {"faithfulness": f_circuit / f_model, "F_circuit": f_circuit, "F_model": f_model,
            "F_empty": f_empty, "positions": positions}


def random_circuits(model: Model, size: int, n: int, seed: int = 0) -> list[list[tuple[int, int]]]:
    all_heads = [(l, h) for l in range(model.n_layers) for h in range(model.n_heads)]
    rng = random.Random(seed)
    return [sorted(rng.sample(all_heads, size)) for _ in range(n)]


def random_baseline(model: Model, prompts: PromptSet, size: int, n: int = 20, seed: int = 0,
                    means: TemplateMeans | None = None, f_model: float | None = None,
                    batch_size: int = 64) -> dict:
    """Faithfulness of `n` random head sets of `size` heads: {"mean", "std", "n", "values"}."""
    means = means or template_means(model, prompts)
    specs = [spec_of(heads) for heads in random_circuits(model, size, n, seed)]
    if f_model is None:
        specs.append({(l, h): None for l in range(model.n_layers) for h in range(model.n_heads)})
    values = ablated_metric(model, prompts, specs, means, batch_size=batch_size)
    if f_model is None:
        f_model, values = float(values[-1]), values[:-1]
    fractions = [float(v) / f_model for v in values]
    return {"mean": statistics.fmean(fractions),
            "std": statistics.pstdev(fractions) if len(fractions) > 1 else 0.0,
            "max": max(fractions), "n": n, "size": size, "values": fractions}


def completeness(model: Model, prompts: PromptSet, circuit: Circuit, means: TemplateMeans | None = None,
                 n_random: int = 5, greedy_steps: int = 0, seed: int = 0, batch_size: int = 64) -> dict:
    """Incompleteness |F(C \\ K) - F(M \\ K)| / F(M) for K = empty, each class, random halves,
    and (greedy_steps > 0) the paper's greedy search for the K that maximizes it.

    Returns {"by_K": {name: {"K": [...], "F_C_minus_K", "F_M_minus_K", "incompleteness"}},
             "max_incompleteness", "mean_incompleteness"}.
    """
    means = means or template_means(model, prompts)
    all_heads = {(l, h) for l in range(model.n_layers) for h in range(model.n_heads)}
    members = sorted(circuit.head_set)
    rng = random.Random(seed)
    candidates: dict[str, list[tuple[int, int]]] = {"empty": []}
    for role, heads in circuit.by_role().items():
        candidates[f"class:{role}"] = sorted(heads)
    for index in range(n_random):
        candidates[f"random_half:{index}"] = sorted(rng.sample(members, max(1, len(members) // 2)))

    def evaluate(named: dict[str, list]) -> dict:
        specs = []
        for k in named.values():
            specs.append(spec_of(circuit.head_set - set(k)))
            specs.append(spec_of(all_heads - set(k)))
        specs.append(spec_of(all_heads))
        values = ablated_metric(model, prompts, specs, means, batch_size=batch_size).tolist()
        f_model = values[-1]
        out = {}
        for index, (name, k) in enumerate(named.items()):
            c, m = values[2 * index], values[2 * index + 1]
            out[name] = {"K": [list(x) for x in k], "F_C_minus_K": c, "F_M_minus_K": m,
                         "incompleteness": abs(c - m) / f_model}
        return out

    results = evaluate(candidates)
    chosen: list[tuple[int, int]] = []
    for step in range(greedy_steps):
        options = {f"greedy:{step}:{v}": chosen + [v] for v in members if v not in chosen}
        if not options:
            break
        scored = evaluate(options)
        best = max(scored, key=lambda name: scored[name]["incompleteness"])
        chosen = [tuple(x) for x in scored[best]["K"]]
        results[f"greedy:{step + 1}"] = scored[best]
    scores = [r["incompleteness"] for r in results.values()]
    return {"by_K": results, "max_incompleteness": max(scores),
            "mean_incompleteness": statistics.fmean(scores)}


def minimality(model: Model, prompts: PromptSet, circuit: Circuit, means: TemplateMeans | None = None,
               batch_size: int = 64) -> dict:
    """Per head v: max over K in {empty, other heads of v's class} of
    |F(C \\ (K u {v})) - F(C \\ K)| / F(M). Returns {"by_head": {"L.H": {...}}, "min", "mean",
    "fraction_above_1pct"}."""
    means = means or template_means(model, prompts)
    all_heads = {(l, h) for l in range(model.n_layers) for h in range(model.n_heads)}
    members = sorted(circuit.head_set)
    by_role = circuit.by_role()
    specs = [spec_of(all_heads), spec_of(circuit.head_set)]
    layout = []
    for v in members:
        same_class = [u for u in by_role[circuit.role_of(*v)] if u != v]
        specs.append(spec_of(circuit.head_set - {v}))
        row = {"without_v": len(specs) - 1}
        if same_class:
            specs.append(spec_of(circuit.head_set - set(same_class)))
            specs.append(spec_of(circuit.head_set - set(same_class) - {v}))
            row["without_K"], row["without_K_and_v"] = len(specs) - 2, len(specs) - 1
        layout.append((v, same_class, row))
    values = ablated_metric(model, prompts, specs, means, batch_size=batch_size).tolist()
    f_model, f_circuit = values[0], values[1]
    by_head = {}
    for v, same_class, row in layout:
        scores = {"K=empty": abs(f_circuit - values[row["without_v"]]) / f_model}
        if same_class:
            scores["K=class"] = abs(values[row["without_K"]] - values[row["without_K_and_v"]]) / f_model
        by_head[f"{v[0]}.{v[1]}"] = {"role": circuit.role_of(*v), **scores,
                                     "minimality": max(scores.values())}
    mins = [h["minimality"] for h in by_head.values()]
    return {"by_head": by_head, "min": min(mins), "mean": statistics.fmean(mins),
            "fraction_above_1pct": sum(m > 0.01 for m in mins) / len(mins)}


def evaluate_circuit(model: Model, prompts: PromptSet, circuit: Circuit, n_random: int = 20,
                     seed: int = 0, greedy_steps: int = 0, batch_size: int = 64,
                     with_completeness: bool = True, with_minimality: bool = True) -> Circuit:
    """Fill `circuit.faithfulness`, `.random_baseline` and `.evaluation` (all criteria)."""
    means = template_means(model, prompts)
    faithful = faithfulness(model, prompts, circuit, means, "all", batch_size)
    evaluation = {"faithfulness_all_positions": faithful, "n_eval_prompts": len(prompts)}
    if has_named_positions(prompts):
        evaluation["faithfulness_role_positions"] = faithfulness(model, prompts, circuit, means,
                                                                 "role", batch_size)
    baseline = random_baseline(model, prompts, len(circuit), n_random, seed, means,
                               faithful["F_model"], batch_size)
    if with_completeness:
        evaluation["completeness"] = completeness(model, prompts, circuit, means,
                                                  greedy_steps=greedy_steps, seed=seed,
                                                  batch_size=batch_size)
    if with_minimality:
        evaluation["minimality"] = minimality(model, prompts, circuit, means, batch_size)
    circuit.faithfulness = faithful["faithfulness"]
    circuit.random_baseline = {k: baseline[k] for k in ("mean", "std", "max", "n", "size")}
    circuit.evaluation = {**circuit.evaluation, **evaluation,
                          "random_baseline_values": baseline["values"]}
    return circuit
