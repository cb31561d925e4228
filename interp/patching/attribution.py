"""Attribution patching: a first-order estimate of activation patching from one backward pass.

Nanda, "Attribution Patching: Activation Patching At Industrial Scale" (2023); Syed et al.,
"Attribution Patching Outperforms Automated Circuit Discovery" (2023). The metric after
patching activation A from the source run into the target run is approximated by

    M(target with A := A_source) ~= M(target) + sum( dM/dA |_target * (A_source - A_target) )

summed over the patched cell's elements (positions, d_head or d_model). Denoising: target =
corrupted run, source = clean; noising the reverse. Cost: one forward of the source and one
forward + backward of the target, for every cell at once — against one forward row per cell and
prompt for activation patching. Same components, positions and normalization (0 = corrupted,
1 = clean) as `activation_patch`, so the two results compare cell for cell
(`attribution_vs_activation` reports their correlation).

Gradients are read with the bridge's backward hooks (TransformerLens `bwd_hooks`, which receive
dM/d(hook output)).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from interp.errors import InvalidInput
from interp.forward import StopForward, run
from interp.models import Model
from interp.names import hook_name
from interp.patching.activation import activation_patch, final_logits_and_cache, metric_targets, prepare_sweep
from interp.patching.metrics import normalize, resolve_metric
from interp.patching.prompts import validate
from interp.patching.results import PatchResult, sweep_result
from interp.tasks.base import PromptSet


def attribution_patch(
    model: Model,
    prompts: PromptSet,
    component: str = "heads",
    metric: str | Callable = "logit_diff",
    direction: str = "denoise",
    positions="default",
    layers=None,
    batch_size: int = 16,
    progress: Callable[[float, str], None] | None = None,
) -> PatchResult:
    """Gradient x activation-difference estimate of `activation_patch` with the same arguments.

    Returns a PatchResult (method "attribution") with the same axes and normalization.
    """
    start = time.perf_counter()
    sweep = prepare_sweep(model, prompts, component, metric, direction, positions, layers)
    comp, metric_name, metric_fn, layers = sweep.comp, sweep.metric_name, sweep.metric_fn, sweep.layers
    positions, labels_pos, table, names = sweep.positions, sweep.labels_pos, sweep.table, sweep.names
    source_tokens, target_tokens = sweep.source_tokens, sweep.target_tokens
    source_logits, source_cache = final_logits_and_cache(model, source_tokens, names)
    if progress:
        progress(0.3, "source run cached")

    n = len(prompts)
    n_units = comp.n_units(model)
    per_unit = comp.unit_axis is not None
    # [layer, prompt, unit, position-or-1] contributions, filled chunk by chunk.
    n_pos = 1 if table is None else table.shape[1]
    contributions = torch.zeros(len(layers), n, n_units, n_pos)
    target_logits_parts = []
    clean_logits_full = source_logits if direction == "denoise" else None
    target_metric_total = 0.0
    offset = 0
    chunks = list(target_tokens.chunks(batch_size))
    for chunk_number, sub in enumerate(chunks):
        rows = torch.arange(offset, offset + sub.batch_size)
        activations, grads = {}, {}

        def keep(name):
            def hook(activation, hook=None):
                activations[name] = activation.detach()
            return hook

        def keep_grad(name):
            def hook(gradient, hook=None):
                grads[name] = gradient.detach()
            return hook

        with torch.enable_grad():
            logits = run(model, sub, hooks=[(name, keep(name)) for name in names],
                         bwd_hooks=[(name, keep_grad(name)) for name in names]).float()
            targets = metric_targets(prompts, clean_logits_full).rows(rows)
            if clean_logits_full is None:  # noising: the target run is the clean run
                targets.clean_logits = logits.detach()
            values = metric_fn(logits, targets)
            # d(mean over all prompts)/dA: each chunk contributes sum / n.
            (values.sum() / n).backward()
        target_metric_total += float(values.detach().sum())
        target_logits_parts.append(logits.detach())
        for index, name in enumerate(names):
            width = activations[name].shape[1]
            delta = source_cache[name][rows, :width].to(activations[name].dtype) - activations[name]
            product = (grads[name] * delta).float().cpu()  # [b, pos, units?, d]
            if per_unit:
                product = product.sum(-1)  # [b, pos, units]
            else:
                product = product.sum(-1, keepdim=True)  # [b, pos, 1]
            if table is None:
                contributions[index, rows, :, 0] = product.sum(1)
            else:
                token = table[rows]  # [b, n_pos]
                gathered = torch.gather(product, 1, token[:, :, None].expand(-1, -1, product.shape[2]))
                contributions[index, rows] = gathered.transpose(1, 2)  # [b, units, n_pos]
        model.bridge.zero_grad(set_to_none=True)
        offset += sub.batch_size
        if progress:
            progress(0.3 + 0.7 * (chunk_number + 1) / len(chunks), "gradients")

    target_logits = torch.cat(target_logits_parts)
    clean_logits, corrupted_logits = ((source_logits, target_logits) if direction == "denoise"
                                      else (target_logits, source_logits))
    targets = metric_targets(prompts, clean_logits)
    clean_value = float(metric_fn(clean_logits, targets).mean())
    corrupted_value = float(metric_fn(corrupted_logits, targets).mean())
    target_value = target_metric_total / n

    raw = target_value + contributions.sum(dim=1)  # [layer, unit, pos]
    return sweep_result(
        raw, layers, comp.unit_axis if per_unit else None, n_units, labels_pos,
        metric=metric_name, clean=clean_value, corrupted=corrupted_value, method="attribution",
        component=comp.name, direction=direction, model_id=model.model_id,
        prompt_hash=prompts.hash, seconds=time.perf_counter() - start,
        params={"n_prompts": n, "positions": positions if positions is None or isinstance(positions, str)
                else list(positions), "layers": layers, "batch_size": batch_size},
    )


def correlation(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Pearson and Spearman correlation of two same-shaped tensors (NaN cells dropped)."""
    a, b = a.flatten().double(), b.flatten().double()
    keep = ~(a.isnan() | b.isnan())
    a, b = a[keep], b[keep]

    def pearson(x, y):
        x, y = x - x.mean(), y - y.mean()
        denominator = (x.norm() * y.norm()).item()
        return float((x @ y).item() / denominator) if denominator > 0 else float("nan")

    def ranks(x):
        return torch.argsort(torch.argsort(x)).double()

    return {"pearson": pearson(a, b), "spearman": pearson(ranks(a), ranks(b)), "n_cells": int(keep.sum())}


def attribution_vs_activation(
    model: Model,
    prompts: PromptSet,
    component: str = "heads",
    metric: str | Callable = "logit_diff",
    direction: str = "denoise",
    positions="default",
    layers=None,
    batch_size: int = 64,
) -> dict:
    """Run both patchers on the same cells; report their agreement and their cost.

    Returns {"pearson", "spearman", "n_cells", "activation_seconds", "attribution_seconds",
    "speedup", "activation": PatchResult, "attribution": PatchResult}.
    """
    exact = activation_patch(model, prompts, component, metric, direction, positions, layers,
                             batch_size=batch_size)
    estimate = attribution_patch(model, prompts, component, metric, direction, positions, layers)
    return {
        **correlation(exact.values, estimate.values),
        "activation_seconds": exact.seconds,
        "attribution_seconds": estimate.seconds,
        "speedup": exact.seconds / max(estimate.seconds, 1e-9),
        "activation": exact,
        "attribution": estimate,
    }


def path_attribution(
    model: Model,
    prompts: PromptSet,
    receivers="logits",
    senders=None,
    metric: str | Callable = "logit_diff",
    batch_size: int = 16,
    cache=None,
) -> PatchResult:
    """First-order estimate of `path_patch` for every sender head at once (see
    `_path_attribution`); one PatchResult for the receivers together. `cache`: a
    `interp.patching.path.PairCache` of these prompts to reuse."""
    return _path_attribution(model, prompts, receivers, senders, metric, batch_size, False, cache)[0]


def path_attribution_by_receiver(
    model: Model,
    prompts: PromptSet,
    receivers,
    senders=None,
    metric: str | Callable = "logit_diff",
    batch_size: int = 16,
    cache=None,
) -> list[PatchResult]:
    """`path_attribution` for each receiver on its own (the edges sender -> receiver), sharing
    the forward passes: one backward pass per receiver. Returns one PatchResult per receiver."""
    if receivers == "logits":
        raise InvalidInput("path_attribution_by_receiver needs head receivers; use path_attribution "
                           "for 'logits'")
    return _path_attribution(model, prompts, receivers, senders, metric, batch_size, True, cache)


def _path_attribution(model, prompts, receivers, senders, metric, batch_size, split,
                      cache=None) -> list[PatchResult]:
    """First-order estimate of `path_patch` for every sender head at once.

    The linearization of Wang et al.'s path patching, in the spirit of edge attribution
    patching (Syed et al. 2023): the effect of sender h on the receivers is estimated as
    sum( dM/dz_h |_path * (z_h(x_new) - z_h(x_orig)) ), where the gradient runs only along the
    paths path patching keeps: from h's output through the residual stream and the (recomputed)
    MLPs into the receivers' inputs, with every attention head's output frozen (its z made a
    leaf of the graph, cut from its own inputs). For head receivers the gradient at a receiver
    input is the full downstream dM/d(input) from a normal backward pass, restricted to the
    receiver's head (value receivers: pattern_h^T @ dM/dz_h, exact per query head) and
    positions. Cost: a corrupted forward, and one or two clean forward+backward passes.

    Same arguments and result layout as `path_patch` (method "path_attribution"); with
    `split`, one result per receiver (the forward passes shared, one backward per receiver).
    """
    from interp.patching.path import _check_receivers, _receiver_positions, check_senders, pair_cache

    start = time.perf_counter()
    validate(prompts)
    receivers = _check_receivers(model, receivers)
    metric_name, metric_fn = resolve_metric(metric)
    to_logits = receivers == "logits"
    last_layer = model.n_layers if to_logits else max(r.layer for r in receivers)
    senders = check_senders(model, senders, last_layer)
    sender_layers = sorted({l for l, _ in senders})
    group = model.n_heads // model.n_kv_heads
    positions = None if to_logits else _receiver_positions(prompts, receivers)
    n = len(prompts)

    pairs = pair_cache(model, prompts, cache)
    corrupted_logits, corrupted_cache = pairs.corrupted_logits, pairs.corrupted
    groups = [[i] for i in range(len(receivers))] if split else [None]
    scores = torch.zeros(len(groups), model.n_layers, model.n_heads)
    clean_parts = []
    offset = 0
    for sub in prompts.tokens.chunks(batch_size):
        rows = torch.arange(offset, offset + sub.batch_size)
        offset += sub.batch_size
        targets = metric_targets(prompts, None).rows(rows)
        cotangents = None
        if not to_logits:
            clean_logits, cotangents = _receiver_cotangents(
                model, sub, rows, receivers, positions, group, metric_fn, targets, n)
            clean_parts.append(clean_logits)
        leaves, captured = {}, {}

        def make_leaf(name):
            def hook(z, hook=None):
                leaf = z.detach().requires_grad_(True)
                leaves[name] = leaf
                return leaf
            return hook

        def capture(name):
            def hook(activation, hook=None):
                captured[name] = activation  # returned: see _receiver_cotangents
                return activation
            return hook

        hooks = [(hook_name("z", l), make_leaf(hook_name("z", l))) for l in range(last_layer)]
        if not to_logits:
            for key in {name for per_receiver in cotangents for name, _ in per_receiver}:
                hooks.append((key, capture(key)))

            def stop(z, hook=None):
                raise StopForward
            hooks.append((hook_name("z", last_layer), stop))
        sender_names = [hook_name("z", l) for l in sender_layers]
        with torch.enable_grad():
            logits = run(model, sub, hooks=hooks)
            inputs = [leaves[name] for name in sender_names]
            if to_logits:
                logits = logits.float()
                targets.clean_logits = logits.detach()
                clean_parts.append(logits.detach())
                per_group = [torch.autograd.grad(metric_fn(logits, targets).sum() / n, inputs,
                                                 allow_unused=True)]
            else:
                per_group = []
                for number, members in enumerate(groups):
                    summed: dict[str, torch.Tensor] = {}
                    for index, per_receiver in enumerate(cotangents):
                        if members is None or index in members:
                            for name, cotangent in per_receiver:
                                summed[name] = summed[name] + cotangent if name in summed else cotangent
                    keys = list(summed)
                    per_group.append(torch.autograd.grad(
                        [captured[k] for k in keys], inputs, grad_outputs=[summed[k] for k in keys],
                        allow_unused=True, retain_graph=number < len(groups) - 1))
        for number, grads in enumerate(per_group):
            for name, layer, grad in zip(sender_names, sender_layers, grads):
                if grad is None:
                    continue
                width = grad.shape[1]
                delta = corrupted_cache[name][rows, :width].to(grad) - leaves[name].detach()
                scores[number, layer] += (grad * delta).sum(dim=(0, 1, 3)).float().cpu()

    clean_logits = torch.cat(clean_parts)
    targets = metric_targets(prompts, clean_logits)
    clean_value = float(metric_fn(clean_logits, targets).mean())
    corrupted_value = float(metric_fn(corrupted_logits, targets).mean())
    results = []
    for number, members in enumerate(groups):
        raw = torch.full((model.n_layers, model.n_heads), float("nan"))
        for layer, head in senders:
            raw[layer, head] = clean_value + float(scores[number, layer, head])
        chosen = "logits" if to_logits else [r.to_json() for i, r in enumerate(receivers)
                                              if members is None or i in members]
        results.append(PatchResult(
            values=normalize(raw, clean_value, corrupted_value), axes=("layer", "head"),
            labels={"layer": list(range(model.n_layers)), "head": list(range(model.n_heads))},
            metric=metric_name, clean=clean_value, corrupted=corrupted_value,
            method="path_attribution", component="heads", direction="noise",
            model_id=model.model_id, prompt_hash=prompts.hash, raw=raw,
            seconds=time.perf_counter() - start,
            params={"n_prompts": n, "receivers": chosen, "n_senders": len(senders),
                    "key_receivers_are_kv_groups": model.n_kv_heads < model.n_heads},
        ))
    return results


def _receiver_cotangents(model, sub, rows, receivers, positions, group, metric_fn, targets, n):
    """Normal clean forward + backward: dM/d(receiver input), restricted to each receiver's
    head and positions. Returns (final logits, per receiver [(hook name, cotangent [b, pos,
    units, d_head])])."""
    captured = {}

    def capture(name):
        def hook(activation, hook=None):
            # Returned so the bridge uses this very tensor downstream (it converts a hook's
            # view back only when the hook returns one); then gradients reach it.
            captured[name] = activation
            return activation
        return hook

    names = set()
    for r in receivers:
        names.add(hook_name(r.input, r.layer))
        if r.input == "v":
            names.update({hook_name("z", r.layer), hook_name("pattern", r.layer)})
    names = sorted(names)
    with torch.enable_grad():
        logits = run(model, sub, hooks=[(name, capture(name)) for name in names]).float()
        targets.clean_logits = logits.detach()
        wanted = [name for name in names if not name.endswith("hook_pattern")]
        grads = dict(zip(wanted, torch.autograd.grad(metric_fn(logits, targets).sum() / n,
                                                     [captured[name] for name in wanted],
                                                     allow_unused=True)))
    cotangents: list[list[tuple[str, torch.Tensor]]] = []
    batch = torch.arange(sub.batch_size)
    for index, r in enumerate(receivers):
        name = hook_name(r.input, r.layer)
        unit = r.head // group if r.input in ("k", "v") else r.head
        if r.input == "v":
            pattern = captured[hook_name("pattern", r.layer)].detach()[:, r.head]  # [b, q, k]
            grad = torch.einsum("bqk,bqd->bkd", pattern, grads[hook_name("z", r.layer)][:, :, r.head])
        else:
            grad = grads[name][:, :, unit]
        if positions[index] is not None:
            mask = torch.zeros(grad.shape[:2], dtype=grad.dtype, device=grad.device)
            mask[batch, positions[index][rows]] = 1
            grad = grad * mask[:, :, None]
        cotangent = torch.zeros_like(captured[name])
        cotangent[:, :, unit] = grad.detach()
        cotangents.append([(name, cotangent)])
    return logits.detach(), cotangents
