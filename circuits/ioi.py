"""Discover the IOI circuit of a model by Wang et al.'s method ("Interpretability in the Wild",
arXiv:2211.00593, section 3), on any model the workbench loads.

Working backwards from the logits, each level path-patches (x_orig = IOI prompts, x_new = their
ABC counterparts; `interp.patching.path`) from every candidate sender head into the receivers
the previous level found:

1. senders -> logits. Heads whose corruption lowers the logit difference are name movers,
   those that raise it negative name movers; direct logit attribution, copying scores and
   attention END -> IO are recorded as evidence.
2. senders -> the name movers' inputs: S-inhibition heads in the paper.
3. senders -> the level-2 heads' inputs: induction and duplicate-token heads in the paper.
4. senders -> the level-3 heads' inputs: previous-token heads in the paper.

Receivers. `receivers="paper"` (the default) uses exactly the paper's: name-mover queries at
END, then the S-inhibition heads' values at S2, then the induction heads' keys at S1+1; roles at
levels 2-4 are the paper's (S-inhibition; induction vs duplicate token by attention S2 -> S1+1
vs S2 -> S1; previous token). `"all_inputs"` instead patches every input (q, k, v at every
position; name-mover queries at END) of the previous level's heads, for models that route the
signals differently (in SmolLM2, induction head 17.4 also reaches name mover 23.3 through its
keys at S2), and names roles by signature attention (END -> S2 S-inhibition, S2 -> S1+1
induction, S2 -> S1 duplicate token, S1+1 -> S1 previous token; the level's paper role if none
is clear). On SmolLM2 the paper's receivers give the smaller and more faithful circuit
(benchmarks/results/ioi_circuit.md). Key receivers are KV heads under grouped-query attention
(see `interp.patching.path`); every edge records the input (q, k, v) it enters.

Every level screens all senders with `path_attribution` (one backward pass) and runs exact
`path_patch` on the `screen_k` strongest; a head joins when its exact effect is at least
`threshold` (fraction of the clean - corrupted gap) and `relative_threshold` of the level's
strongest, within per-level caps and a total budget (default 10% of the model's heads; when
the levels find more, `trim="faithfulness"` keeps the subset grown greedily to bring the
circuit's logit difference closest to the model's on the discovery prompts, `"effect"` the
strongest path-patching effects). Edge
effects come from `path_attribution` per receiver input (first-order). The circuit is then
evaluated on a separate prompt set (`circuits.evaluate`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from circuits.circuit import Circuit, CircuitEdge, CircuitHead
from circuits.evaluate import evaluate_circuit
from circuits.head_evidence import attention_to_positions, copying_scores, direct_logit_attribution
from interp.errors import InvalidInput
from interp.models import Model
from interp.patching.attribution import path_attribution, path_attribution_by_receiver
from interp.patching.path import PairCache, Receiver, path_patch
from interp.patching.results import PatchResult
from interp.tasks.base import PromptSet
from interp.tasks.ioi import ioi_prompts

@dataclass
class DiscoveryConfig:
    """Knobs of `discover_ioi_circuit` (all saved with the circuit)."""

    n_prompts: int = 32  # discovery prompts (path patching rows = screen_k x n_prompts per stage)
    n_eval_prompts: int = 64  # evaluation prompts (a different seed)
    seed: int = 0
    receivers: str = "paper"  # Wang et al.'s receivers, or "all_inputs" (module doc)
    levels: int = 4  # how many levels back from the logits (1 = name movers only)
    screen_k: int = 16  # senders verified by exact path patching per stage
    threshold: float = 0.02  # min |effect| to join (fraction of the clean - corrupted gap)
    relative_threshold: float = 0.1  # min |effect| relative to the stage's strongest
    max_heads: int | None = None  # default: 10% of the model's heads
    trim: str = "faithfulness"  # over budget: keep heads grown toward F(M) ("faithfulness") or
    # the strongest path-patching effects ("effect")
    caps: dict = field(default_factory=lambda: {
        "name_mover": 6, "negative_name_mover": 3, "level2": 6, "level3": 6, "level4": 4})
    min_attention: float = 0.15  # signature attention needed to name a class by attention
    edge_threshold: float = 0.005  # edges weaker than this (first-order estimate) are dropped
    edges: bool = True  # False: skip the per-receiver edge estimates (faster; heads only)
    n_random: int = 20
    greedy_steps: int = 0
    batch_size: int = 64
    evaluate: bool = True
    criteria: bool = True  # completeness and minimality too (the slow part of the evaluation)


def trim_heads(model: Model, prompts: PromptSet, found: list[CircuitHead], budget: int,
               trim: str = "faithfulness", batch_size: int = 16) -> list[CircuitHead]:
    """At most `budget` of the heads the levels `found`: by "effect", the largest |path-patching
    effect|; by "faithfulness", grown greedily on `prompts` (`_grow_by_faithfulness`)."""
    ordered = sorted(found, key=lambda c: -abs(c.score or 0.0))
    if len(ordered) > budget and trim == "faithfulness":
        by_head = {(c.layer, c.head): c for c in ordered}
        chosen = _grow_by_faithfulness(model, prompts, list(by_head), budget, batch_size)
        ordered = [by_head[h] for h in chosen] + [c for c in ordered if (c.layer, c.head) not in chosen]
    return ordered[:budget]


def _grow_by_faithfulness(model: Model, prompts: PromptSet, candidates: list[tuple[int, int]],
                          budget: int, batch_size: int) -> list[tuple[int, int]]:
    """Greedy forward selection on the discovery prompts: start empty and add, `budget` times,
    the candidate that brings the circuit's logit difference F(C) (every head outside the set
    mean-ablated, `circuits.evaluate`) closest to the model's F(M). Closest, not largest: a
    circuit that beats the model by leaving out its negative name movers is not faithful.
    Unlike a cut by path-patching effect, this keeps the lower levels a chain needs: their
    effects are measured against the level above, not the logits, so they look small."""
    from circuits.evaluate import ablated_metric, spec_of, template_means

    means = template_means(model, prompts)
    everything = spec_of((l, h) for l in range(model.n_layers) for h in range(model.n_heads))
    f_model = float(ablated_metric(model, prompts, [everything], means, batch_size=batch_size)[0])
    kept, left = [], list(candidates)
    while len(kept) < budget and left:
        values = ablated_metric(model, prompts, [spec_of(kept + [c]) for c in left], means,
                                batch_size=batch_size)
        kept.append(left.pop(int((values - f_model).abs().argmin())))
    return kept


def _top_senders(screen: PatchResult, k: int, exclude: set, sign: int = 0) -> list[tuple[int, int]]:
    """The k senders with the largest screened |effect| (sign<0: only helpful, i.e. value<1)."""
    effect = screen.values - 1.0
    if sign < 0:
        effect = torch.where(effect < 0, -effect, torch.zeros_like(effect))
    else:
        effect = effect.abs()
    effect = torch.nan_to_num(effect, nan=-1.0)
    for layer, head in exclude:
        effect[layer, head] = -1.0
    order = torch.argsort(effect.flatten(), descending=True)[:k]
    n_heads = screen.values.shape[1]
    return [(int(i) // n_heads, int(i) % n_heads) for i in order if effect.flatten()[i] > 0]


def _stage(model, prompts, receivers, exclude, config, log, name, pairs, sign=-1):
    """Screen every sender, verify the top ones exactly. -> (exact PatchResult, screen)."""
    start = time.perf_counter()
    screen = path_attribution(model, prompts, receivers, cache=pairs)
    candidates = _top_senders(screen, config.screen_k, exclude, sign)
    if not candidates:
        return None, screen
    exact = path_patch(model, prompts, receivers, senders=candidates, batch_size=config.batch_size,
                       cache=pairs)
    log(f"{name}: screened {int((~screen.values.isnan()).sum())} senders, verified "
        f"{len(candidates)} in {time.perf_counter() - start:.0f}s")
    return exact, screen


def _select(exact: PatchResult, config: DiscoveryConfig, cap: int, sign: int) -> list[tuple[tuple[int, int], float]]:
    """Heads whose exact effect has `sign` and passes both thresholds, strongest first."""
    if exact is None:
        return []
    effect = exact.values - 1.0
    chosen = []
    for index in torch.argsort(torch.nan_to_num(sign * effect, nan=-1e9).flatten(), descending=True):
        layer, head = int(index) // effect.shape[1], int(index) % effect.shape[1]
        value = float(effect[layer, head])
        if value != value or sign * value <= 0:
            break
        chosen.append(((layer, head), value))
    if not chosen:
        return []
    strongest = abs(chosen[0][1])
    keep = [(h, v) for h, v in chosen if abs(v) >= config.threshold
            and abs(v) >= config.relative_threshold * strongest]
    return keep[:cap]


def _edges(model, prompts, senders, receivers_by_head, min_effect, pairs) -> list[CircuitEdge]:
    """First-order path effect (`path_attribution_by_receiver`) of each sender on each receiver
    head's inputs, one input at a time; edges weaker than `min_effect` are dropped."""
    chosen = [(head, r) for head, receivers in receivers_by_head.items() for r in receivers
              if any(s[0] < head[0] for s in senders)]
    if not senders or not chosen:
        return []
    results = path_attribution_by_receiver(model, prompts, [r for _, r in chosen], senders=senders,
                                           cache=pairs)
    edges = []
    for (head, receiver), result in zip(chosen, results):
        for s in senders:
            effect = float(result.values[s]) - 1.0
            if s[0] < head[0] and abs(effect) >= min_effect:
                edges.append(CircuitEdge(sender=s, receiver=head, input=receiver.input,
                                         effect=round(effect, 5)))
    return edges


def _inputs_of(heads, mode: str, level: int) -> dict[tuple[int, int], list[Receiver]]:
    """The receivers of the next stage: the paper's (queries at END of name movers, values at S2
    of S-inhibition heads, keys at S1+1 of induction heads) or every input at every position."""
    if mode == "all_inputs":
        positions = {"q": None, "k": None, "v": None} if level > 1 else {"q": "end", "k": None, "v": None}
        return {h: [Receiver(h[0], h[1], inp, pos) for inp, pos in positions.items()] for h in heads}
    paper = {1: ("q", "end"), 2: ("v", "S2"), 3: ("k", "S1+1")}[level]
    return {h: [Receiver(h[0], h[1], *paper)] for h in heads}


def _role_by_attention(attention, layer: int, head: int, fallback: str, min_attention: float) -> str:
    """The class whose signature attention is strongest (Wang et al. section 3): END -> S2
    S-inhibition, S2 -> S1+1 induction, S2 -> S1 duplicate token, S1+1 -> S1 previous token;
    `fallback` (the stage's role in the paper) if none reaches `min_attention`."""
    signatures = {"s_inhibition": "end->S2", "induction": "S2->S1+1",
                  "duplicate_token": "S2->S1", "previous_token": "S1+1->S1"}
    scores = {role: float(attention[key][layer, head]) for role, key in signatures.items()}
    best = max(scores, key=scores.get)
    return best if scores[best] >= min_attention else fallback


def discover_ioi_circuit(
    model: Model,
    config: DiscoveryConfig | None = None,
    prompts: PromptSet | None = None,
    eval_prompts: PromptSet | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[Circuit, dict[str, PatchResult]]:
    """Find the IOI circuit (see module doc). Returns (circuit, {stage: PatchResult}).

    The circuit carries its evaluation (faithfulness on `eval_prompts`, random baseline,
    completeness, minimality) unless `config.evaluate` is False.
    """
    config = config or DiscoveryConfig()
    if config.receivers not in ("paper", "all_inputs"):
        raise InvalidInput(f"receivers must be 'paper' or 'all_inputs', got {config.receivers!r}")
    if config.trim not in ("faithfulness", "effect"):
        raise InvalidInput(f"trim must be 'faithfulness' or 'effect', got {config.trim!r}")
    budget = config.max_heads or max(1, model.n_total_heads // 10)
    started = time.perf_counter()
    notes: list[str] = []
    last = [0.0]

    def log(message: str, fraction: float | None = None):
        notes.append(message)
        last[0] = last[0] if fraction is None else fraction
        if progress:
            progress(last[0], message)

    prompts = prompts or ioi_prompts(model, n=config.n_prompts, seed=config.seed, corruption="abc")
    if prompts.corrupted is None or not prompts.metadata or "positions" not in prompts.metadata[0]:
        raise InvalidInput("IOI discovery needs IOI prompts with ABC corruption and named positions "
                           "(interp.tasks.ioi.ioi_prompts)")
    results: dict[str, PatchResult] = {}
    heads: dict[tuple[int, int], CircuitHead] = {}
    edges: list[CircuitEdge] = []

    # 1. Name movers and negative name movers: senders -> logits.
    log("stage 1/4: heads -> logits", 0.02)
    pairs = PairCache(model, prompts)  # the clean and ABC runs, shared by every stage
    exact, screen = _stage(model, prompts, "logits", set(), config, log, "logits", pairs, sign=0)
    results["logits"], results["logits_screen"] = exact, screen
    attention = attention_to_positions(model, prompts)
    dla = direct_logit_attribution(model, prompts)
    name_movers = _select(exact, config, config.caps["name_mover"], -1)
    negative = _select(exact, config, config.caps["negative_name_mover"], +1)
    found = [h for h, _ in name_movers + negative]
    names = sorted({m["io"] for m in prompts.metadata} | {m["s"] for m in prompts.metadata})
    copy_pos = copying_scores(model, [" " + n for n in names], found) if found else None
    copy_neg = copying_scores(model, [" " + n for n in names], found, negative=True) if found else None
    for role, selected in (("name_mover", name_movers), ("negative_name_mover", negative)):
        for (layer, head), effect in selected:
            heads[(layer, head)] = CircuitHead(layer, head, role, round(effect, 5))
            edges.append(CircuitEdge((layer, head), None, "resid", round(effect, 5)))
    if not name_movers:
        raise InvalidInput(f"no head of {model.name} passes the name-mover threshold "
                           f"({config.threshold}); the model may not do IOI on these prompts "
                           f"(clean - corrupted logit difference {exact.clean - exact.corrupted:.3f})")

    # 2-4. Each level: senders -> the inputs of the previous level's heads.
    paper = config.receivers == "paper"
    previous = [h for h, _ in name_movers]
    stage_names = {2: "name_mover_inputs", 3: "level3_inputs", 4: "level4_inputs"}
    fallback = {2: "s_inhibition", 3: "induction", 4: "previous_token"}
    for level in (2, 3, 4):
        if not previous or level > config.levels:
            break
        receivers_by_head = _inputs_of(previous, config.receivers, level - 1)
        receivers = [r for rs in receivers_by_head.values() for r in rs]
        log(f"stage {level}/4: heads -> {stage_names[level]} ({len(receivers)} receivers)",
            0.1 + 0.2 * (level - 1))
        exact, results[f"{stage_names[level]}_screen"] = _stage(
            model, prompts, receivers, set(heads), config, log, stage_names[level], pairs)
        results[stage_names[level]] = exact
        found_here = []
        for (layer, head), effect in _select(exact, config, config.caps[f"level{level}"], -1):
            if paper and level == 3:
                induction = attention["S2->S1+1"][layer, head] >= attention["S2->S1"][layer, head]
                role = "induction" if induction else "duplicate_token"
            elif paper:
                role = fallback[level]
            else:
                role = _role_by_attention(attention, layer, head, fallback[level], config.min_attention)
            heads[(layer, head)] = CircuitHead(layer, head, role, round(effect, 5))
            found_here.append((layer, head))
        if config.edges:
            edges += _edges(model, prompts, found_here, receivers_by_head, config.edge_threshold,
                            pairs)
        # The paper's next receivers: S-inhibition heads' values, then induction heads' keys.
        if paper and level == 2:
            previous = [h for h in found_here if heads[h].role == "s_inhibition"]
        elif paper and level == 3:
            previous = [h for h in found_here if heads[h].role == "induction"]
        else:
            previous = found_here

    # Budget: if the stages found more heads than allowed, keep `budget` of them (see `trim`).
    if len(heads) > budget:
        log(f"budget {budget}: choosing {budget} of {len(heads)} heads by {config.trim}")
    kept = trim_heads(model, prompts, list(heads.values()), budget, config.trim, config.batch_size)
    dropped = [f"{c.layer}.{c.head}" for c in heads.values() if c not in kept]
    if dropped:
        log(f"budget {budget}: dropped {dropped}")
    kept_set = {(c.layer, c.head) for c in kept}
    edges = [e for e in edges if e.sender in kept_set and (e.receiver is None or e.receiver in kept_set)]

    evidence = {}
    for c in kept:
        key = f"{c.layer}.{c.head}"
        evidence[key] = {"dla": round(float(dla[c.layer, c.head]), 4),
                         **{rel: round(float(v[c.layer, c.head]), 4) for rel, v in attention.items()}}
        if copy_pos is not None and (c.layer, c.head) in found:
            evidence[key]["copying"] = float(copy_pos[c.layer, c.head])
            evidence[key]["negative_copying"] = float(copy_neg[c.layer, c.head])
    circuit = Circuit(
        model=model.name, model_id=model.model_id, task="ioi",
        heads=sorted(kept, key=lambda c: (c.layer, c.head)), edges=edges,
        n_heads_total=model.n_total_heads, prompt_hash=prompts.hash,
        params={**{k: v for k, v in asdict(config).items() if k != "caps"}, "caps": config.caps,
                "budget": budget},
        evaluation={"evidence": evidence, "notes": notes,
                    "discovery_seconds": round(time.perf_counter() - started, 1),
                    "clean_logit_diff": results["logits"].clean,
                    "corrupted_logit_diff": results["logits"].corrupted},
    )
    if config.evaluate:
        log("evaluating", 0.85)
        eval_prompts = eval_prompts or ioi_prompts(model, n=config.n_eval_prompts,
                                                   seed=config.seed + 1000, corruption="abc")
        evaluate_circuit(model, eval_prompts, circuit, n_random=config.n_random, seed=config.seed,
                         greedy_steps=config.greedy_steps, batch_size=config.batch_size,
                         with_completeness=config.criteria, with_minimality=config.criteria)
    circuit.evaluation["total_seconds"] = round(time.perf_counter() - started, 1)
    log("done", 1.0)
    return circuit, {k: v for k, v in results.items() if v is not None}
