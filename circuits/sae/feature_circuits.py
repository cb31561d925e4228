"""Sparse feature circuits: which SAE features carry a task, and how they feed each other.

Marks et al., "Sparse Feature Circuits: Discovering and Editing Interpretable Causal Graphs in
Language Models" (ICLR 2025); procedure as in saprmarks/feature-circuits (attribution.py,
circuit.py), written anew for TransformerLens hooks.

At every point that has an SAE the activation is split exactly, x = decode(f(x)) + err(x): the
SAE's features and its error term, each a node. (Positions an SAE does not read, see
`SAEConfig.exclude_first_position`, keep no features; their whole vector is error.) The metric m
is the mean logit difference (answer - wrong answer) at the last position; "patching" a node
gives it its value on the corrupted prompt.

- Node effects, summed over positions, averaged over prompts (change of m when the node is
  patched; negative = the node helps):
  * "atp": grad_x m . W_dec[i] * (f_i^corr - f_i^clean) at the clean run; error nodes
    grad_x m . (err^corr - err^clean). Gradients pass through each SAE unchanged (the error
    term absorbs the difference), so grad_x is the model's own gradient.
  * "ig" (the paper's nodes): the same with grad_x averaged over `steps` points on the straight
    line from clean to corrupted at that SAE point alone (the line in x is the line in (f, err):
    the decoder is affine).
- Edges between consecutive SAE points U -> D (Marks et al.'s jvp): with f_U and err_U as leaves,
  edge(u -> d) = sum over positions of d(grad_d m * d)/du * (u^corr - u^clean), averaged over
  prompts, for every kept downstream node d and every upstream node u. Edges into the logits are
  the last point's node effects. For residual-stream points every path from U to D runs through
  D, so these edges are complete; with attention/MLP-output points they are direct edges only.
- Head scores (so this method compares head by head with the others): each head's attribution
  to the kept nodes of the first SAE point its output reaches, i.e. grad_z(sum_d grad_d m * d)
  . (z^corr - z^clean); heads after the last point are scored against m itself.
- Faithfulness: circuits of the top k nodes by |effect| (features and error nodes ranked
  together); every node outside is patched to its corrupted value at every point at once,
  f(k) = (m(C_k) - m(empty)) / (m(model) - m(empty)), on prompts disjoint from discovery, at the
  edge-attribution issue's k-percent grid of all nodes, beside random circuits of the same size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from circuits.sae.points import (
    ActivationPoint, activation_point, all_z, final_logit_diff, read, run_model, sort_points, write,
)
from circuits.sae.sae import SparseAutoencoder
from interp.errors import InvalidInput
from interp.models import Model
from interp.names import hook_name
from interp.patching.runner import check_pairs
from interp.tasks.base import PromptSet
from interp.tokens import TokenBatch
from circuits.faithfulness import curve_areas  # noqa: F401  (shared with edge circuits; re-exported)

K_PERCENTS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
ERROR = -1  # the feature index of an SAE's error node


@dataclass(frozen=True)
class SAEAt:
    """An SAE at the point it reads."""

    point: ActivationPoint
    sae: SparseAutoencoder

    @property
    def label(self) -> str:
        return self.point.label()


def attach(model: Model, saes: Sequence) -> list[SAEAt]:
    """SAEs at their points, in forward order. Each item: a `TrainedSAE`, an `SAEAt`, a
    `SparseAutoencoder` (its cfg names the hook) or a (hook, sae) / (hook, head, sae) tuple."""
    out = []
    for item in saes:
        if isinstance(item, SAEAt):
            out.append(item)
            continue
        if hasattr(item, "sae") and hasattr(item, "report"):  # TrainedSAE
            sae, hook, head = item.sae, item.sae.cfg.hook_name, item.sae.cfg.hook_head_index
        elif isinstance(item, SparseAutoencoder):
            sae, hook, head = item, item.cfg.hook_name, item.cfg.hook_head_index
        elif isinstance(item, tuple) and len(item) in (2, 3):
            hook, sae = item[0], item[-1]
            head = item[1] if len(item) == 3 else sae.cfg.hook_head_index
        else:
            raise InvalidInput(f"cannot read an SAE from {type(item).__name__}; give TrainedSAE, "
                               "SparseAutoencoder or (hook, sae)")
        point = activation_point(model, hook, head)
        sae.check_width(point.d_in, f"{point.label()} of {model.name}")
        out.append(SAEAt(point, sae))
    if not out:
        raise InvalidInput("a feature circuit needs at least one SAE")
    labels = [s.label for s in out]
    if len(set(labels)) != len(labels):
        raise InvalidInput(f"two SAEs read the same point: {labels}")
    order = sort_points(model, [s.point for s in out])
    return sorted(out, key=lambda s: order.index(s.point))


def split(at: SAEAt, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """v [b, pos, (H,) d_in] -> (features [b, pos, (H,) d_sae], error [b, pos, (H,) d_in]),
    v = decode(features) + error exactly."""
    f = at.sae.encode(v)
    if at.sae.cfg.exclude_first_position:
        f = torch.cat([torch.zeros_like(f[:, :1]), f[:, 1:]], dim=1)
    return f, v - at.sae.decode(f)


def _sum_positions(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[b, pos, ..., d] -> [b, d]: summed over real positions (and heads)."""
    x = x * mask.view(*mask.shape, *([1] * (x.ndim - 2))).to(x.dtype)
    return x.flatten(1, -2).sum(1)


@dataclass
class _Chunk:
    """One batch of prompt pairs with clean and corrupted values at every SAE point."""

    clean: TokenBatch
    corrupted: TokenBatch
    answers: torch.Tensor
    wrong: torch.Tensor
    v_clean: dict[str, torch.Tensor]
    v_corr: dict[str, torch.Tensor]

    @property
    def mask(self) -> torch.Tensor:
        return self.clean.mask


def _collect_all(model: Model, ids: torch.Tensor, sites: list[SAEAt]) -> dict[str, torch.Tensor]:
    got = {}

    def keeper(at):
        def hook(activation, hook=None):
            got[at.label] = read(model, at.point, activation.detach()).float()
        return hook

    with torch.no_grad():
        run_model(model, ids, [(s.point.bridge_hook, keeper(s)) for s in sites],
                  stop_after=sites[-1].point.bridge_hook)
    return got


def _chunks(model: Model, prompts: PromptSet, sites: list[SAEAt], batch_size: int) -> list[_Chunk]:
    out = []
    for start in range(0, len(prompts), batch_size):
        sub = prompts.subset(slice(start, start + batch_size))
        out.append(_Chunk(sub.tokens, sub.corrupted, sub.answers, sub.wrong_answers,
                          _collect_all(model, sub.tokens.input_ids, sites),
                          _collect_all(model, sub.corrupted.input_ids, sites)))
    return out


def _check_prompts(prompts: PromptSet, what: str) -> None:
    if prompts.corrupted is None or prompts.answers is None or prompts.wrong_answers is None:
        raise InvalidInput(f"{what} prompts need answers, wrong answers and corrupted counterparts")
    check_pairs(prompts.tokens, prompts.corrupted, prompts.texts)


def _gradients_at(model: Model, chunk: _Chunk, sites: list[SAEAt],
                  replace: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """grad of sum_b m_b w.r.t. the vectors at every SAE point, on the clean prompts (with the
    vectors at points in `replace` set to the given values [b, pos, ...])."""
    leaves = {}

    def hook_for(at):
        def hook(activation, hook=None):
            old = read(model, at.point, activation)
            if replace and at.label in replace:
                leaf = replace[at.label].to(old.dtype).detach().requires_grad_(True)
                new = leaf  # this point takes the given value
            else:
                leaf = torch.zeros_like(old).requires_grad_(True)
                new = old + leaf  # same value; d m / d leaf = d m / d v, and upstream still flows
            leaves[at.label] = leaf
            return write(model, at.point, activation, old, new)
        return hook

    with torch.enable_grad():
        logits = run_model(model, chunk.clean.input_ids, [(s.point.bridge_hook, hook_for(s)) for s in sites])
        metric = final_logit_diff(logits, chunk.clean, chunk.answers, chunk.wrong).sum()
        grads = torch.autograd.grad(metric, [leaves[s.label] for s in sites], allow_unused=True)
    model.bridge.zero_grad(set_to_none=True)
    return {s.label: (torch.zeros_like(leaves[s.label]) if g is None else g).float().detach()
            for s, g in zip(sites, grads)}


def node_effects(model: Model, chunks: list[_Chunk], sites: list[SAEAt], method: str = "ig",
                 steps: int = 10, progress: Callable | None = None) -> dict[str, torch.Tensor]:
    """{point label: [d_sae + 1]} effect of patching each feature (and, last, the error node)
    on m, summed over positions, averaged over prompts."""
    if method not in ("atp", "ig"):
        raise InvalidInput(f"method must be 'atp' or 'ig', got {method!r}")
    n = sum(c.clean.batch_size for c in chunks)
    effects = {s.label: torch.zeros(s.sae.d_sae + 1) for s in sites}
    for index, chunk in enumerate(chunks):
        parts = {}
        for s in sites:
            f_c, e_c = split(s, chunk.v_clean[s.label])
            f_p, e_p = split(s, chunk.v_corr[s.label])
            parts[s.label] = (f_p - f_c, e_p - e_c)
        if method == "atp":
            grads = {label: [g] for label, g in _gradients_at(model, chunk, sites).items()}
        else:
            grads = {s.label: [] for s in sites}
            for s in sites:
                for step in range(steps):
                    alpha = step / steps
                    mixed = (1 - alpha) * chunk.v_clean[s.label] + alpha * chunk.v_corr[s.label]
                    grads[s.label].append(_gradients_at(model, chunk, sites, {s.label: mixed})[s.label])
        for s in sites:
            grad = torch.stack(grads[s.label]).mean(0)  # [b, pos, (H,) d_in]
            d_f, d_e = parts[s.label]
            grad_f = grad @ s.sae.W_dec.detach().T  # d m / d f
            effects[s.label][:-1] += _sum_positions(grad_f * d_f, chunk.mask).sum(0)
            effects[s.label][-1] += float(_sum_positions(grad * d_e, chunk.mask).sum().detach())
        if progress:
            progress((index + 1) / len(chunks), f"node effects {index + 1}/{len(chunks)}")
    return {label: e / n for label, e in effects.items()}


def feature_edges(model: Model, chunks: list[_Chunk], sites: list[SAEAt],
                  kept: dict[str, list[int]]) -> tuple[list[dict], torch.Tensor]:
    """Edges between kept nodes of consecutive SAE points, and head scores; see module doc.

    kept: {point label: [feature indices, ERROR for the error node]}.
    Returns ([{"src", "dst", "score"}], head_scores [n_layers, n_heads]).
    """
    n = sum(c.clean.batch_size for c in chunks)
    edge_totals: dict[tuple[str, str], float] = {}
    head_scores = torch.zeros(model.n_layers, model.n_heads)
    first_point_of_head = _head_targets(model, sites)
    for chunk in chunks:
        grads = _gradients_at(model, chunk, sites)  # clean-run d m / d v at each point
        leaves, z_leaves, z_delta = {}, {}, {}
        z_corr = all_z(model, chunk.corrupted.input_ids)
        outputs = {}

        def site_hook(at):
            def hook(activation, hook=None):
                old = read(model, at.point, activation)
                if at.label in leaves:  # a second hook on the same activation: nothing to do
                    return None
                f, err = split(at, old.detach())
                f_leaf, e_leaf = f.requires_grad_(True), err.requires_grad_(True)
                leaves[at.label] = (f_leaf, e_leaf)
                # Downstream nodes: this point's features and error as functions of the graph.
                f_now, e_now = split(at, old)
                outputs[at.label] = (f_now, e_now)
                new = at.sae.decode(f_leaf) + e_leaf
                return write(model, at.point, activation, old, new)
            return hook

        def z_hook(layer):
            def hook(z, hook=None):
                leaf = torch.zeros_like(z).requires_grad_(True)  # d / d leaf = d / d z; graph kept
                z_leaves[layer] = leaf
                z_delta[layer] = z_corr[layer][:, :z.shape[1]] - z.detach()
                return z + leaf
            return hook

        hooks = [(hook_name("z", layer), z_hook(layer)) for layer in range(model.n_layers)]
        hooks += [(s.point.bridge_hook, site_hook(s)) for s in sites]
        with torch.enable_grad():
            logits = run_model(model, chunk.clean.input_ids, hooks)
            metric = final_logit_diff(logits, chunk.clean, chunk.answers, chunk.wrong).sum()
            scalars = {}
            for s in sites:
                f_now, e_now = outputs[s.label]
                grad_f = grads[s.label] @ s.sae.W_dec.detach().T
                for node in kept.get(s.label, []):
                    if node == ERROR:
                        value = _sum_positions(grads[s.label] * e_now, chunk.mask).sum()
                    else:
                        value = _sum_positions(grad_f[..., node:node + 1] * f_now[..., node:node + 1],
                                               chunk.mask).sum()
                    scalars[(s.label, node)] = value
            for index, s in enumerate(sites):
                # Heads reporting to this point: attribution to its kept nodes.
                layers = [layer for layer, target in first_point_of_head.items() if target == index]
                total = sum((v for (label, _), v in scalars.items() if label == s.label),
                            start=torch.zeros(()))
                if layers and total.requires_grad:
                    z_grads = torch.autograd.grad(total, [z_leaves[l] for l in layers],
                                                  retain_graph=True, allow_unused=True)
                    for layer, g in zip(layers, z_grads):
                        head_scores[layer] += _per_head(g, z_delta[layer], chunk.mask)
                if index == 0:
                    continue
                up = sites[index - 1]
                f_leaf, e_leaf = leaves[up.label]
                d_f, d_e = _deltas(up, chunk)
                for node in kept.get(s.label, []):
                    value = scalars[(s.label, node)]
                    if not value.requires_grad:
                        continue
                    g_f, g_e = torch.autograd.grad(value, [f_leaf, e_leaf], retain_graph=True,
                                                   allow_unused=True)
                    for src in kept.get(up.label, []):
                        if src == ERROR:
                            score = 0.0 if g_e is None else float(_sum_positions(g_e * d_e, chunk.mask).sum())
                        else:
                            score = 0.0 if g_f is None else float(_sum_positions(
                                g_f[..., src:src + 1] * d_f[..., src:src + 1], chunk.mask).sum())
                        key = (node_id(up, src), node_id(s, node))
                        edge_totals[key] = edge_totals.get(key, 0.0) + score
            # Heads after the last point report to the metric.
            layers = [layer for layer, target in first_point_of_head.items() if target is None]
            if layers:
                z_grads = torch.autograd.grad(metric, [z_leaves[l] for l in layers], allow_unused=True)
                for layer, g in zip(layers, z_grads):
                    head_scores[layer] += _per_head(g, z_delta[layer], chunk.mask)
        model.bridge.zero_grad(set_to_none=True)
    edges = [{"src": src, "dst": dst, "score": total / n} for (src, dst), total in edge_totals.items()]
    return edges, head_scores / n


def _per_head(grad: torch.Tensor | None, delta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[b, pos, H, d_head] gradient and z difference -> [H]: grad . delta over real positions,
    summed over prompts (zero where no gradient reached)."""
    if grad is None:
        return torch.zeros(delta.shape[2])
    product = grad * delta * mask[:, :, None, None].to(grad.dtype)
    return product.sum(dim=(0, 1, 3)).detach().float().cpu()


def _deltas(at: SAEAt, chunk: _Chunk) -> tuple[torch.Tensor, torch.Tensor]:
    f_c, e_c = split(at, chunk.v_clean[at.label])
    f_p, e_p = split(at, chunk.v_corr[at.label])
    return (f_p - f_c).detach(), (e_p - e_c).detach()


def _head_targets(model: Model, sites: list[SAEAt]) -> dict[int, int | None]:
    """{layer: index of the first SAE point its heads' outputs reach, or None (the metric)}."""
    targets = {}
    for layer in range(model.n_layers):
        targets[layer] = None
        for index, s in enumerate(sites):
            before = s.point.kind == "resid" and s.point.hook.endswith("hook_resid_pre")
            if s.point.layer > layer or (s.point.layer == layer and not before):
                targets[layer] = index
                break
    return targets


def node_id(at: SAEAt, feature: int) -> str:
    return f"{at.label}/{'error' if feature == ERROR else f'f{feature}'}"


@torch.no_grad()
def circuit_metric(model: Model, chunks: list[_Chunk], sites: list[SAEAt],
                   kept: dict[str, tuple[torch.Tensor, bool]] | None) -> float:
    """Mean m with every node outside `kept` patched to its corrupted value at every SAE point
    at once. kept: {label: (feature mask [d_sae] bool, keep error)}; None = the whole model."""
    total, n = 0.0, 0
    for chunk in chunks:
        if kept is None:
            logits = run_model(model, chunk.clean.input_ids)
        else:
            def hook_for(at):
                mask, keep_error = kept[at.label]
                f_p, e_p = split(at, chunk.v_corr[at.label])

                def hook(activation, hook=None):
                    old = read(model, at.point, activation)
                    f, err = split(at, old.float())
                    width = old.shape[1]
                    f_new = torch.where(mask, f, f_p[:, :width])
                    e_new = err if keep_error else e_p[:, :width]
                    return write(model, at.point, activation, old, (at.sae.decode(f_new) + e_new).to(old.dtype))
                return hook

            logits = run_model(model, chunk.clean.input_ids, [(s.point.bridge_hook, hook_for(s)) for s in sites])
        total += float(final_logit_diff(logits, chunk.clean, chunk.answers, chunk.wrong).sum())
        n += chunk.clean.batch_size
    return total / n


def _kept_masks(sites: list[SAEAt], chosen: list[tuple[int, int]]) -> dict[str, tuple[torch.Tensor, bool]]:
    """[(site index, feature or ERROR)] -> {label: (feature mask, keep error)}."""
    masks = {s.label: [torch.zeros(s.sae.d_sae, dtype=torch.bool), False] for s in sites}
    for index, feature in chosen:
        label = sites[index].label
        if feature == ERROR:
            masks[label][1] = True
        else:
            masks[label][0][feature] = True
    return {label: (m, e) for label, (m, e) in masks.items()}


def ranked_nodes(sites: list[SAEAt], effects: dict[str, torch.Tensor]) -> list[tuple[int, int, float]]:
    """Every node (site index, feature or ERROR, effect), strongest |effect| first."""
    nodes = []
    for index, s in enumerate(sites):
        e = effects[s.label]
        nodes += [(index, f, float(e[f])) for f in range(s.sae.d_sae)]
        nodes.append((index, ERROR, float(e[-1])))
    return sorted(nodes, key=lambda t: -abs(t[2]))


def faithfulness_curve(model: Model, chunks: list[_Chunk], sites: list[SAEAt],
                       ranked: list[tuple[int, int, float]], k_percents=K_PERCENTS,
                       n_random: int = 3, seed: int = 0) -> dict:
    """f(k) for the top-k nodes and for random circuits of the same sizes (module doc)."""
    m_model = circuit_metric(model, chunks, sites, None)
    m_empty = circuit_metric(model, chunks, sites, _kept_masks(sites, []))
    gap = m_model - m_empty
    if abs(gap) < 1e-6:
        raise InvalidInput("the corrupted prompts give the same metric as the clean ones; "
                           "faithfulness is undefined")
    total = len(ranked)
    generator = torch.Generator().manual_seed(seed)
    curve, random_curve = [], []
    for p in k_percents:
        k = max(1, round(p / 100 * total))
        chosen = [(i, f) for i, f, _ in ranked[:k]]
        value = (circuit_metric(model, chunks, sites, _kept_masks(sites, chosen)) - m_empty) / gap
        curve.append({"k_percent": p, "k": k, "faithfulness": value})
        randoms = []
        for _ in range(n_random):
            pick = torch.randperm(total, generator=generator)[:k].tolist()
            chosen = [(ranked[j][0], ranked[j][1]) for j in pick]
            randoms.append((circuit_metric(model, chunks, sites, _kept_masks(sites, chosen)) - m_empty) / gap)
        random_curve.append({"k_percent": p, "k": k, "faithfulness": sum(randoms) / len(randoms)})
    cpr, cmd = curve_areas(curve)
    random_cpr, random_cmd = curve_areas(random_curve)
    return {"faithfulness_curve": curve, "random_curve": random_curve, "cpr": cpr, "cmd": cmd,
            "random_cpr": random_cpr, "random_cmd": random_cmd, "m_model": m_model,
            "m_empty": m_empty, "n_nodes": total}


@dataclass
class FeatureCircuit:
    """A sparse feature circuit (see module doc); `to_json` gives the issue-13 fields."""

    nodes: list[dict]
    edges: list[dict]
    head_scores: torch.Tensor
    evaluation: dict
    info: dict = field(default_factory=dict)


def discover_feature_circuit(
    model: Model,
    prompts: PromptSet,
    eval_prompts: PromptSet,
    saes: Sequence,
    method: str = "ig",
    steps: int = 10,
    nodes_per_point: int = 10,
    batch_size: int = 16,
    n_random: int = 3,
    k_percents=K_PERCENTS,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
) -> FeatureCircuit:
    """Node effects on `prompts`, edges between the `nodes_per_point` strongest nodes of
    consecutive points, head scores, and the faithfulness curve on `eval_prompts`."""
    _check_prompts(prompts, "discovery")
    _check_prompts(eval_prompts, "evaluation")
    sites = attach(model, saes)
    started = time.perf_counter()
    say = progress or (lambda fraction, message: None)
    say(0.0, "clean and corrupted activations")
    chunks = _chunks(model, prompts, sites, batch_size)
    effects = node_effects(model, chunks, sites, method, steps,
                           lambda f, m: say(0.05 + 0.45 * f, m))
    ranked = ranked_nodes(sites, effects)
    kept = {}
    for index, s in enumerate(sites):
        mine = [t for t in ranked if t[0] == index][:nodes_per_point]
        kept[s.label] = [f for _, f, _ in mine]
    say(0.5, "edges")
    edges, head_scores = feature_edges(model, chunks, sites, kept)
    last = sites[-1]
    edges += [{"src": node_id(last, f), "dst": "logits", "score": float(effects[last.label][f])}
              for f in kept[last.label]]
    discovery_seconds = time.perf_counter() - started
    say(0.7, "faithfulness")
    eval_chunks = _chunks(model, eval_prompts, sites, batch_size)
    evaluation = faithfulness_curve(model, eval_chunks, sites, ranked, k_percents, n_random, seed)
    nodes = []
    for index, s in enumerate(sites):
        for f in kept[s.label]:
            nodes.append({"id": node_id(s, f), "kind": "sae_error" if f == ERROR else "sae_feature",
                          "hook": s.point.hook, "head": s.point.head, "layer": s.point.layer,
                          "feature": None if f == ERROR else f,
                          "score": float(effects[s.label][f])})
    say(1.0, "done")
    info = {"method": method, "steps": steps if method == "ig" else None,
            "nodes_per_point": nodes_per_point, "points": [s.label for s in sites],
            "n_discover": len(prompts), "n_eval": len(eval_prompts),
            "clean_minus_corrupted_discovery": None,
            "discovery_seconds": round(discovery_seconds, 1),
            "seconds": round(time.perf_counter() - started, 1)}
    return FeatureCircuit(nodes=nodes, edges=edges, head_scores=head_scores,
                          evaluation=evaluation, info=info)
