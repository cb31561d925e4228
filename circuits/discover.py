"""Circuit discovery for any task, one table of methods, one JSON result.

    from circuits.discover import discover
    result = discover(model, "greater-than", "eap-ig")       # or "ioi", or "my_task.jsonl"
    result["cmd"], result["faithfulness_curve"], result["edges"][:5]

Every method returns the same JSON (issue 13's contract):
    {"method", "task", "model", "nodes", "edges": [{"src", "dst", "score"}], "heads",
     "head_scores": [{"layer", "head", "score"}], "faithfulness_curve": [{"k_percent",
     "faithfulness"}], "cpr", "cmd", "random_cmd", "n_discover", "n_eval", "seconds"}
plus method-specific fields (random_curve, random_cpr, circuit_percent, ...). Faithfulness is
always measured on evaluation prompts disjoint from the discovery prompts (`circuits.tasks`).

| method       | finds                                  | faithfulness curve over         | tasks |
|--------------|----------------------------------------|---------------------------------|-------|
| path         | IOI heads with roles (Wang et al.)      | edges, ranked by node (below)  | ioi   |
| eap          | edge scores (Syed et al.)              | edges (MIB)                     | any   |
| eap-ig       | edge scores (Hanna et al.)             | edges (MIB)                     | any   |
| sae-heads    | head codes (O'Neill & Bui)             | heads (`circuits.sae.discover`) | any   |
| sae-features | SAE feature circuit (Marks et al.)     | features                        | ioi   |

"The circuit" reported in nodes/edges/heads of an edge method is its top `circuit_percent`% of
edges (default 1%); the curve covers every size. The path method's curve ranks the graph's
edges by their endpoints: an edge's score is the smaller of its two nodes' scores, where the
path circuit's heads score 1 + their path-patching effect, other heads their effect (< 1), and
the embeddings, MLPs and logits 2 (Wang et al. keep them whole); so its top edges are the ones
inside the path circuit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from interp.errors import InvalidInput

if TYPE_CHECKING:
    from circuits.circuit import Circuit

# torch and the discovery modules are imported where used: the CLI reads METHODS to build its
# options without importing torch.

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Method:
    name: str
    run: Callable[..., tuple]  # (model, spec: TaskSpec, options, progress) -> (JSON, Circuit, artifacts)
    help: str
    tasks: tuple[str, ...] | None = None  # built-in tasks it supports; None = any task


def _heads_json(scores) -> list[dict]:
    return [{"layer": layer, "head": head, "score": round(float(scores[layer, head]), 6)}
            for layer in range(scores.shape[0]) for head in range(scores.shape[1])]


def _curve_json(model, spec, graph, scores, evaluate, options, say: Progress) -> dict:
    from circuits.faithfulness import K_PERCENTS, CircuitRunner, faithfulness_curve

    runner = CircuitRunner(model, evaluate, batch_size=options.get("batch_size", 16))
    curve = faithfulness_curve(runner, scores, options.get("k_percents", K_PERCENTS),
                               n_random=options.get("n_random", 1), seed=options.get("seed", 0),
                               progress=lambda f, m: say(0.5 + 0.45 * f, m))
    return curve


def _edge_method(name: str):
    def run(model, spec, options: dict, say: Progress) -> tuple:
        from circuits.eap import edge_scores
        from circuits.graph import parse_head
        from circuits.tasks import task_split

        started = time.perf_counter()
        discover_task, evaluate = task_split(model, spec, options.get("n_discover", 32),
                                             options.get("n_eval", 32), options.get("seed", 0))
        found = edge_scores(model, discover_task, name, steps=options.get("steps", 5),
                            batch_size=options.get("grad_batch_size", 8),
                            progress=lambda f, m: say(0.05 + 0.45 * f, m))
        graph = found.graph
        discovery_seconds = time.perf_counter() - started
        say(0.5, "faithfulness on evaluation prompts")
        curve = _curve_json(model, spec, graph, found.scores, evaluate, options, say)
        percent = options.get("circuit_percent", 1.0)
        keep = graph.top_edges(found.scores, max(1, round(percent / 100 * graph.n_edges)))
        head_scores = found.head_scores
        nodes = graph.circuit_nodes(keep)
        # the circuit's heads: those that send something along a kept edge
        senders = {graph.upstream[i] for i in keep.any(1).nonzero().squeeze(1).tolist()}
        heads = [parse_head(n) for n in graph.upstream if n in senders and parse_head(n) is not None]
        out = {
            "method": name, "task": spec.name, "model": model.name, "model_id": model.model_id,
            "nodes": nodes, "edges": graph.edge_list(found.scores, keep),
            "heads": [{"layer": l, "head": h, "score": round(float(head_scores[l, h]), 6)} for l, h in heads],
            "head_scores": _heads_json(head_scores),
            **curve, "circuit_percent": percent,
            "n_discover": len(discover_task), "n_eval": len(evaluate),
            "discovery_seconds": round(discovery_seconds, 2),
            "params": {"steps": options.get("steps", 5) if name == "eap-ig" else None,
                       "n_random": options.get("n_random", 1), "seed": options.get("seed", 0)},
        }
        return out, result_circuit(out), {"edge_scores": {"scores": found.scores}}
    return run


def path_edge_scores(graph, circuit_heads: set, head_effects):
    """[n_upstream, n_inputs]: the path method's edge ranking (module doc), from the graph
    (`circuits.graph.Graph`), the circuit's heads and every head's effect [n_layers, n_heads]."""
    import torch

    from circuits.graph import parse_head
    node = torch.full((graph.n_upstream,), 2.0)
    effects = head_effects / max(float(head_effects.max()), 1e-9) * 0.999
    for layer in range(graph.n_layers):
        for head in range(graph.n_heads):
            value = float(effects[layer, head])
            node[graph.head_index(layer, head)] = value + (1.0 if (layer, head) in circuit_heads else 0.0)
    # a downstream input's node score: its owner head(s) (a K/V input: the best of its group)
    owner = torch.full((graph.n_inputs,), 2.0)
    for j in range(graph.n_inputs):
        heads = [parse_head(n) for n in graph.input_owners(j)]
        if heads[0] is not None:
            owner[j] = max(float(node[graph.head_index(*h)]) for h in heads)
    return torch.minimum(node[:, None], owner[None, :]) * graph.allowed


def _path(model, spec, options: dict, say: Progress) -> tuple:
    import torch

    from circuits.graph import Graph
    from circuits.ioi import DiscoveryConfig, discover_ioi_circuit
    from circuits.tasks import task_split

    started = time.perf_counter()
    n_discover, n_eval = options.get("n_discover", 32), options.get("n_eval", 32)
    discover_task, evaluate = task_split(model, spec, n_discover, n_eval, options.get("seed", 0))
    config = DiscoveryConfig(n_prompts=n_discover, n_eval_prompts=n_eval, seed=options.get("seed", 0),
                             **{"criteria": False, **options.get("path_config", {})})
    circuit, stages = discover_ioi_circuit(model, config, prompts=discover_task.prompts,
                                           eval_prompts=evaluate.prompts,
                                           progress=lambda f, m: say(0.5 * f, m))
    discovery_seconds = time.perf_counter() - started
    effects = torch.zeros(model.n_layers, model.n_heads)
    for result in stages.values():
        values = result.values
        if values.ndim >= 2 and tuple(values.shape[:2]) == (model.n_layers, model.n_heads):
            effects = torch.maximum(effects, torch.nan_to_num(values.abs()).reshape(
                model.n_layers, model.n_heads, -1).amax(-1))
    out = {"method": "path", "task": spec.name, "model": model.name, "model_id": model.model_id,
           **circuit.to_json(), "head_scores": _heads_json(effects),
           "n_discover": len(discover_task), "n_eval": len(evaluate)}
    out["edges"] = [e.to_json() for e in circuit.all_edges()]
    out["path_edges"] = circuit.to_json()["edges"]
    artifacts = {f"stage-{name}": {"values": r.values, "raw": r.raw} for name, r in stages.items()}
    circuit.evaluation["stages"] = {name: r.to_json() for name, r in stages.items()}
    try:
        from circuits.graph_hooks import check_supported

        check_supported(model)
    except InvalidInput as error:  # no edge graph for this model: the head circuit only
        out.update({"faithfulness_curve": [], "cpr": None, "cmd": None, "random_cmd": None,
                    "curve_note": str(error)})
        return out, circuit, artifacts
    graph = Graph.from_model(model)
    scores = path_edge_scores(graph, circuit.head_set, effects)
    say(0.5, "edge faithfulness on evaluation prompts")
    out.update(_curve_json(model, spec, graph, scores, evaluate, options, say))
    out["nodes"] = ["input"] + [f"a{l}.h{h}" for l, h in sorted(circuit.head_set)] + \
        [f"m{l}" for l in range(model.n_layers)] + ["logits"]
    out["discovery_seconds"] = round(discovery_seconds, 2)
    circuit.evaluation.update({k: out[k] for k in ("faithfulness_curve", "random_curve", "cpr", "cmd",
                                                   "random_cpr", "random_cmd")})
    return out, circuit, artifacts


def _sae_heads(model, spec, options: dict, say: Progress) -> tuple:
    from circuits.sae.discover import sae_heads

    out = sae_heads(model, "ioi" if spec.name == "ioi" else spec,
                    n_prompts=options.get("n_discover", 100),
                    n_eval=options.get("n_eval", 64), store=options.get("store"),
                    seed=options.get("seed", 0), progress=say)
    return out, result_circuit(out), {}


def _sae_features(model, spec, options: dict, say: Progress) -> tuple:
    from circuits.sae.discover import sae_features
    from circuits.sae.io import latest_stored_saes

    store = options.get("store")
    saes = latest_stored_saes(store, model.model_id) if store is not None else None
    if not saes:
        raise InvalidInput(f"no SAEs of {model.name} in the store; train them first "
                           "(`interp sae train ...`, issue 14) or use --method eap-ig")
    out = sae_features(model, saes, "ioi", n_prompts=options.get("n_discover", 32),
                       n_eval=options.get("n_eval", 32), store=store,
                       seed=options.get("seed", 0), progress=say)
    return out, result_circuit(out), {}


METHODS: dict[str, Method] = {
    "path": Method("path", _path, "Wang et al.'s path patching (IOI)", ("ioi",)),
    "eap": Method("eap", _edge_method("eap"), "edge attribution patching (Syed et al.)"),
    "eap-ig": Method("eap-ig", _edge_method("eap-ig"),
                     "edge attribution patching with integrated gradients (Hanna et al.)"),
    "sae-heads": Method("sae-heads", _sae_heads, "SAE head codes (O'Neill & Bui)", None),
    "sae-features": Method("sae-features", _sae_features,
                           "sparse feature circuits (Marks et al.) with stored SAEs, IOI", ("ioi",)),
}


def check_method(method: str, task: str):
    """The checked task (`circuits.tasks.TaskSpec`) for `method`, no model needed: clear errors
    for an unknown method, a task it does not support, or a bad task file."""
    from circuits.tasks import check_task

    if method not in METHODS:
        raise InvalidInput(f"unknown method {method!r}; use one of {sorted(METHODS)}")
    supported = METHODS[method].tasks
    if supported is not None and task not in supported:
        raise InvalidInput(f"method {method!r} works on {', '.join(supported)} only, not "
                           f"{task!r}; use --method eap or eap-ig for other tasks")
    return check_task(task)


def discover(model, task, method: str = "eap-ig", progress: Progress | None = None,
             **options) -> dict:
    """The JSON result of `discover_circuit` (below)."""
    return discover_circuit(model, task, method, progress, **options)[0]


def discover_circuit(model, task, method: str = "eap-ig",
                     progress: Progress | None = None, **options) -> tuple[dict, object, dict]:
    """Discover and evaluate `task`'s circuit with `method` (module doc). Returns (the JSON dict,
    a `circuits.circuit.Circuit` to store, {artifact name: {tensor name: tensor}}).

    options: n_discover, n_eval (prompts; disjoint), seed, steps (EAP-IG), k_percents,
    n_random (random circuits per size), circuit_percent (the reported circuit's share of
    edges), batch_size (evaluation), grad_batch_size (attribution), store (SAE methods,
    path reference), path_config (extra DiscoveryConfig fields).
    """
    from circuits.tasks import TaskSpec

    spec = task if isinstance(task, TaskSpec) else check_method(method, task)
    say = progress or (lambda fraction, message: None)
    started = time.perf_counter()
    out, circuit, artifacts = METHODS[method].run(model, spec, options, say)
    out["seconds"] = round(time.perf_counter() - started, 2)
    circuit.evaluation["seconds"] = out["seconds"]
    say(1.0, "done")
    return out, circuit, artifacts


def result_circuit(result: dict):
    """A `circuits.circuit.Circuit` of a discovery result (edge methods), to store."""
    from circuits.circuit import Circuit, CircuitHead, Edge

    return Circuit(
        model=result["model"], model_id=result.get("model_id", ""), task=result["task"],
        heads=[CircuitHead(h["layer"], h["head"], h.get("role"), h.get("score")) for h in result["heads"]
               if "layer" in h],
        n_heads_total=len(result["head_scores"]), method=result["method"],
        nodes=[n if isinstance(n, str) else n.get("id", str(n)) for n in result["nodes"]],
        graph_edges=[Edge.from_json(e) for e in result["edges"]],
        node_info={n["id"]: {k: v for k, v in n.items() if k != "id"}
                   for n in result["nodes"] if isinstance(n, dict) and "id" in n},
        faithfulness=None, params=result.get("params", {}),
        evaluation={k: result.get(k) for k in ("faithfulness_curve", "random_curve", "cpr", "cmd",
                                                "random_cpr", "random_cmd", "n_discover", "n_eval",
                                                "seconds", "circuit_percent") if k in result},
    )


# Sizes a front end may ask for: enough for a real circuit, small enough that a CPU finishes.
LIMITS = {"n_discover": (1, 256), "n_eval": (1, 256), "steps": (1, 32),
          "circuit_percent": (0.1, 20.0)}


def check_options(**options) -> dict:
    """Sizes (LIMITS' keys; None = leave to the default) as numbers inside LIMITS, or an
    InvalidInput naming the bound. Other options pass through unchanged."""
    out = {}
    for name, value in options.items():
        if value is None or value == "":
            continue
        if name in LIMITS:
            low, high = LIMITS[name]
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise InvalidInput(f"{name} must be a number from {low} to {high}, got {value!r}") from None
            if isinstance(low, int) and not number.is_integer():
                raise InvalidInput(f"{name} must be a whole number from {low} to {high}, got {value!r}")
            if not low <= number <= high:
                raise InvalidInput(f"{name} must be from {low} to {high}, got {value!r}")
            value = int(number) if isinstance(low, int) else number
        out[name] = value
    return out


def discover_to_store(model, store, task, method: str = "eap-ig",
                      progress: Progress | None = None, **options) -> tuple[str, dict, Circuit]:
    """`discover_circuit` inside a "circuit" run of `store` (progress and cancel through the run,
    the discovery's artifacts kept with it; the run's result is `Circuit.to_json()`): what
    `interp circuit` and the dashboard's discovery job run.
    Returns (run id, the JSON dict, the circuit). task: a name, a .jsonl path or a checked
    TaskSpec."""
    from circuits.tasks import TaskSpec

    spec = task if isinstance(task, TaskSpec) else check_method(method, task)
    params = {"task": spec.name, "method": method,
              **{k: v for k, v in options.items() if k != "store"}}

    with store.run("circuit", model.model_id, params) as record:
        def say(fraction: float, message: str) -> None:
            record.progress(fraction, message)  # raises RunCancelled once a cancel is asked
            if progress is not None:
                progress(fraction, message)

        data, circuit, artifacts = discover_circuit(model, spec, method, progress=say,
                                                    store=store, **options)
        for name, tensors in artifacts.items():
            record.add_artifact(name, tensors)
        record.set_result(circuit.to_json())
    return record.id, data, circuit
