"""Library entry points of SAE-based circuit discovery, for the CLI, the dashboard and notebooks.

    sae_heads(model, task="ioi")                      # O'Neill & Bui head codes -> JSON dict
    sae_features(model, saes, task="ioi")             # Marks et al. feature circuit -> JSON dict

Both return the JSON of the edge-attribution issue: {"method", "task", "model", "nodes",
"edges": [{"src", "dst", "score"}], "heads", "head_scores": [{"layer", "head", "score"}],
"faithfulness_curve": [{"k_percent", "faithfulness"}], "cpr", "cmd", "random_cmd",
"n_discover", "n_eval", "seconds"}; on IOI they add "roc_auc" and "average_precision" of the
head scores against the path-patching circuit of the same model (`reference_heads`).

Faithfulness of a head ranking (sae-heads) is measured like the feature circuits': the top k% of
heads keep their clean output, every other head's z takes its value on the corrupted prompt, on
evaluation prompts disjoint from discovery; f(k) = (m(C_k) - m(empty)) / (m(model) - m(empty)).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import torch

from circuits.sae.feature_circuits import K_PERCENTS, curve_areas, discover_feature_circuit
from circuits.sae.head_codes import head_codes, ioi_negatives, task_examples
from circuits.sae.points import all_z, final_logit_diff, run_model
from interp.errors import InvalidInput
from interp.models import Model
from interp.names import Head, check_heads, format_head, hook_name
from interp.tasks.base import PromptSet

Progress = Callable[[float, str], None]


def task_prompts(model: Model, task: str | PromptSet, n: int, seed: int) -> tuple[PromptSet, str]:
    """(prompts with answers and corrupted counterparts, task name). "ioi" is built here; other
    tasks (greater-than, a JSONL file) come from the edge-attribution work's loaders, or pass a
    PromptSet."""
    if isinstance(task, PromptSet):
        return task, task.name
    if task == "ioi":
        from interp.tasks.ioi import ioi_prompts

        return ioi_prompts(model, n=n, seed=seed, corruption="abc"), "ioi"
    raise InvalidInput(f"task {task!r}: only 'ioi' is built in here; pass a PromptSet with "
                       "answers, wrong answers and corrupted prompts for other tasks")


def rank_against(scores: torch.Tensor, reference: Iterable[Head]) -> dict:
    """ROC-AUC and average precision of head scores [L, H] (higher = more in the circuit)
    against a reference head set."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    truth = torch.zeros_like(scores, dtype=torch.bool)
    for layer, head in reference:
        truth[layer, head] = True
    if truth.all() or not truth.any():
        raise InvalidInput("the reference circuit must contain some heads but not all")
    y, s = truth.flatten().numpy(), torch.nan_to_num(scores.float()).flatten().numpy()
    return {"roc_auc": float(roc_auc_score(y, s)), "average_precision": float(average_precision_score(y, s)),
            "n_reference": int(truth.sum()), "chance_average_precision": float(truth.float().mean())}


def reference_heads(model: Model, store=None, progress: Progress | None = None) -> tuple[list[Head], str]:
    """The path-patching IOI circuit of `model`: the newest in `store`, else discovered now
    (Wang et al.'s method, `circuits.ioi`, without its slow evaluation) and saved to `store`."""
    from circuits.circuit import Circuit

    if store is not None:
        stored = Circuit.latest(store, model.model_id, "ioi")
        if stored is not None:
            return sorted(stored.head_set), "store"
    from circuits.ioi import DiscoveryConfig, discover_ioi_circuit

    circuit, _ = discover_ioi_circuit(model, DiscoveryConfig(evaluate=False), progress=progress)
    if store is not None:
        circuit.save(store)
    return sorted(circuit.head_set), "discovered"


def _heads_json(scores: torch.Tensor) -> list[dict]:
    return [{"layer": layer, "head": head, "score": float(scores[layer, head])}
            for layer in range(scores.shape[0]) for head in range(scores.shape[1])]


@torch.no_grad()
def head_circuit_metric(model: Model, prompts: PromptSet, kept: set[Head], batch_size: int = 16,
                        z_corrupted: list[dict[int, torch.Tensor]] | None = None) -> float:
    """Mean logit difference with every head outside `kept` given its z on the corrupted prompt."""
    total = 0.0
    for index, start in enumerate(range(0, len(prompts), batch_size)):
        sub = prompts.subset(slice(start, start + batch_size))
        corrupted = z_corrupted[index] if z_corrupted else all_z(model, sub.corrupted.input_ids)

        def patch(layer):
            keep = torch.tensor([(layer, h) in kept for h in range(model.n_heads)])

            def hook(z, hook=None):
                return torch.where(keep[None, None, :, None].to(z.device), z, corrupted[layer].to(z.dtype))
            return hook

        logits = run_model(model, sub.tokens.input_ids,
                           [(hook_name("z", layer), patch(layer)) for layer in range(model.n_layers)])
        total += float(final_logit_diff(logits.float(), sub.tokens, sub.answers, sub.wrong_answers).sum())
    return total / len(prompts)


def head_faithfulness_curve(model: Model, prompts: PromptSet, scores: torch.Tensor,
                            k_percents=K_PERCENTS, n_random: int = 3, seed: int = 0,
                            batch_size: int = 16) -> dict:
    """f(k) of the top-k% heads by `scores` [L, H], and of random head sets (module doc)."""
    z_corrupted = [all_z(model, prompts.subset(slice(s, s + batch_size)).corrupted.input_ids)
                   for s in range(0, len(prompts), batch_size)]
    every = {(l, h) for l in range(model.n_layers) for h in range(model.n_heads)}
    m_model = head_circuit_metric(model, prompts, every, batch_size, z_corrupted)
    m_empty = head_circuit_metric(model, prompts, set(), batch_size, z_corrupted)
    gap = m_model - m_empty
    if abs(gap) < 1e-6:
        raise InvalidInput("clean and corrupted prompts give the same metric; faithfulness is undefined")
    order = torch.argsort(torch.nan_to_num(scores.float()).flatten(), descending=True).tolist()
    heads = [(i // model.n_heads, i % model.n_heads) for i in order]
    generator = torch.Generator().manual_seed(seed)
    curve, random_curve = [], []
    for p in k_percents:
        k = max(1, round(p / 100 * len(heads)))
        value = (head_circuit_metric(model, prompts, set(heads[:k]), batch_size, z_corrupted) - m_empty) / gap
        curve.append({"k_percent": p, "k": k, "faithfulness": value})
        randoms = [(head_circuit_metric(model, prompts, {heads[j] for j in torch.randperm(len(heads), generator=generator)[:k].tolist()},
                                        batch_size, z_corrupted) - m_empty) / gap for _ in range(n_random)]
        random_curve.append({"k_percent": p, "k": k, "faithfulness": sum(randoms) / n_random})
    cpr, cmd = curve_areas(curve)
    random_cpr, random_cmd = curve_areas(random_curve)
    return {"faithfulness_curve": curve, "random_curve": random_curve, "cpr": cpr, "cmd": cmd,
            "random_cpr": random_cpr, "random_cmd": random_cmd, "m_model": m_model, "m_empty": m_empty}


def sae_heads(
    model: Model,
    task: str | PromptSet = "ioi",
    n_prompts: int = 100,
    n_sae_examples: int = 10,
    features: int = 300,
    l1_coefficient: float = 1.0,
    steps: int = 200,
    negatives: str = "s1",
    circuit_share: float = 0.1,
    n_eval: int = 64,
    faithfulness: bool = True,
    reference: Sequence[Head] | str | None = "path",
    store=None,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict:
    """Head codes (O'Neill & Bui; `circuits.sae.head_codes`) -> the issue-13 JSON (module doc).

    task:          "ioi", another task of `circuits.tasks` (a name such as "greater-than", a
                   .jsonl path, a TaskSpec: discovery and evaluation prompts come from its
                   disjoint `task_split`), or a PromptSet (then faithfulness=False).
    negatives:     IOI only: "s1" (the paper's), "s2" or "abc"; other tasks use their
                   corrupted prompts (greater-than: the "01" start year, where the model
                   cannot know the answer).
    circuit_share: the share of heads, by node score, listed as the circuit's "heads".
    reference:     IOI only: "path" (the path-patching circuit, from `store` or discovered),
                   a list of heads, or None (no roc_auc).
    """
    say = progress or (lambda fraction, message: None)
    started = time.perf_counter()
    if faithfulness and isinstance(task, PromptSet):
        raise InvalidInput("with a PromptSet task, pass faithfulness=False or use a named task "
                           "(evaluation prompts must be drawn apart from discovery)")
    eval_prompts = None
    if isinstance(task, PromptSet) or task == "ioi":
        prompts, task_name = task_prompts(model, task, n_prompts, seed)
    else:  # greater-than, a task file: the edge-attribution work's disjoint split
        from circuits.tasks import task_split

        discover_task, eval_task = task_split(model, task, n_discover=n_prompts, n_eval=n_eval,
                                              seed=seed)
        prompts, eval_prompts, task_name = discover_task.prompts, eval_task.prompts, discover_task.name
    negative_tokens = (ioi_negatives(model, prompts, negatives, seed) if task_name == "ioi"
                       else prompts.corrupted)
    if negative_tokens is None:
        raise InvalidInput("head codes need negatives: prompts with corrupted counterparts")
    say(0.05, "head outputs of positives and negatives")
    examples = task_examples(model, prompts, negative_tokens)
    say(0.4, "training the shared SAE")
    result = head_codes(examples, min(n_sae_examples, examples.vectors.shape[0]), features,
                        l1_coefficient, steps, seed)
    discovery_seconds = time.perf_counter() - started
    scores = result.node
    n_circuit = max(1, round(circuit_share * model.n_total_heads))
    order = torch.argsort(scores.flatten(), descending=True)[:n_circuit].tolist()
    circuit = sorted((i // model.n_heads, i % model.n_heads) for i in order)
    out = {
        "method": "sae-heads", "task": task_name, "model": model.name, "model_id": model.model_id,
        "nodes": [{"id": format_head(h), "kind": "head", "layer": h[0], "head": h[1],
                   "score": float(scores[h])} for h in circuit],
        "edges": [{"src": format_head(a), "dst": format_head(b), "score": s}
                  for a, b, s in result.top_edges(50)],
        "heads": [{"layer": l, "head": h, "score": float(scores[l, h])} for l, h in circuit],
        "head_scores": _heads_json(scores),
        "edge_head_scores": _heads_json(result.edge_heads),
        "n_discover": examples.info["n_positive"] + examples.info["n_negative"],
        "params": {**result.info, "negatives": negatives if task_name == "ioi" else "corrupted",
                   "circuit_share": circuit_share},
        "discovery_seconds": round(discovery_seconds, 2),
    }
    if faithfulness:
        say(0.6, "faithfulness on evaluation prompts")
        if eval_prompts is None:
            eval_prompts, _ = task_prompts(model, task, n_eval, seed + 1000)
        out.update(head_faithfulness_curve(model, eval_prompts, scores, seed=seed))
        out["n_eval"] = len(eval_prompts)
    if task_name == "ioi" and reference is not None:
        say(0.9, "comparing with the path-patching circuit")
        heads, source = (reference_heads(model, store, progress) if reference == "path"
                         else (check_heads(model, reference, allow_empty=False), "given"))
        out.update(rank_against(scores, heads))
        out["edge_variant"] = rank_against(result.edge_heads, heads)
        out["reference"] = {"heads": [format_head(h) for h in heads], "source": source}
    out["seconds"] = round(time.perf_counter() - started, 2)
    say(1.0, "done")
    return out


def sae_features(
    model: Model,
    saes: Sequence,
    task: str | PromptSet = "ioi",
    n_prompts: int = 32,
    n_eval: int = 32,
    method: str = "ig",
    steps: int = 10,
    nodes_per_point: int = 10,
    k_percents=K_PERCENTS,
    n_random: int = 3,
    contexts: bool = True,
    context_windows: int = 32,
    corpus=None,
    reference: Sequence[Head] | str | None = "path",
    store=None,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict:
    """A sparse feature circuit (Marks et al.; `circuits.sae.feature_circuits`) at the points of
    `saes` -> the issue-13 JSON; each feature node carries its top-activating contexts."""
    say = progress or (lambda fraction, message: None)
    started = time.perf_counter()
    if isinstance(task, PromptSet):
        raise InvalidInput("sae_features needs a named task so that evaluation prompts are drawn "
                           "apart from discovery; call discover_feature_circuit for your own sets")
    prompts, task_name = task_prompts(model, task, n_prompts, seed)
    eval_prompts, _ = task_prompts(model, task, n_eval, seed + 1000)
    found = discover_feature_circuit(model, prompts, eval_prompts, saes, method=method, steps=steps,
                                     nodes_per_point=nodes_per_point, n_random=n_random,
                                     k_percents=k_percents, seed=seed,
                                     progress=lambda f, m: say(0.85 * f, m))
    if contexts:
        from circuits.sae.contexts import top_contexts
        from circuits.sae.feature_circuits import attach

        say(0.85, "top-activating contexts")
        for site in attach(model, saes):
            wanted = [n["feature"] for n in found.nodes if n["hook"] == site.point.hook
                      and n["head"] == site.point.head and n["feature"] is not None]
            if wanted:
                tops = top_contexts(model, site.sae, wanted, corpus, n_windows=context_windows)
                for node in found.nodes:
                    if node["hook"] == site.point.hook and node["feature"] in tops:
                        node.update(tops[node["feature"]])
    ev = found.evaluation
    out = {
        "method": "sae-features", "task": task_name, "model": model.name, "model_id": model.model_id,
        "nodes": found.nodes, "edges": found.edges,
        "heads": [], "head_scores": _heads_json(found.head_scores),
        "faithfulness_curve": [{"k_percent": p["k_percent"], "k": p["k"], "faithfulness": p["faithfulness"]}
                               for p in ev["faithfulness_curve"]],
        "random_curve": ev["random_curve"], "cpr": ev["cpr"], "cmd": ev["cmd"],
        "random_cmd": ev["random_cmd"], "random_cpr": ev["random_cpr"], "n_nodes": ev["n_nodes"],
        "n_discover": len(prompts), "n_eval": len(eval_prompts), "params": found.info,
    }
    if task_name == "ioi" and reference is not None:
        heads, source = (reference_heads(model, store, progress) if reference == "path"
                         else (check_heads(model, reference, allow_empty=False), "given"))
        # A head helps when patching it lowers m: rank by the negated attribution.
        out.update(rank_against(-found.head_scores, heads))
        out["reference"] = {"heads": [format_head(h) for h in heads], "source": source}
    out["seconds"] = round(time.perf_counter() - started, 2)
    say(1.0, "done")
    return out
