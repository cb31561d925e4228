"""Activation patching: swap one component's activation between the clean and corrupted runs.

Denoising (default) runs the corrupted prompt and patches in the clean activation of one
component: how much of the clean behaviour does that component alone restore? Noising runs the
clean prompt and patches in the corrupted activation: how much does losing it hurt? Either way
the result is normalized so 0 = the corrupted run's metric and 1 = the clean run's (Heimersheim
& Nanda, "How to use and interpret activation patching", 2024, sections 2-3; Wang et al. 2022).

Batched: every (component cell, prompt) pair is one row of a large forward (see
`interp.patching.runner`), so SmolLM2's 30 x 9 head sweep on 8 prompts is 2160 rows, a few dozen
forwards of 64 rows that also skip the blocks below each row's patch.

    from interp.tasks.ioi import ioi_prompts
    prompts = ioi_prompts(model, n=16)
    heads = activation_patch(model, prompts, "heads")             # [layer, head]
    resid = activation_patch(model, prompts, "resid")             # [layer, position] (IO, S1, ...)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from collections.abc import Callable

import torch

from interp.errors import InvalidInput
from interp.forward import run_batched
from interp.models import Model
from interp.patching.components import (
    Component,
    check_layers,
    component as get_component,
    default_positions,
    position_table,
)
from interp.patching.metrics import MetricTargets, resolve_metric
from interp.patching.prompts import validate
from interp.patching.results import PatchResult, sweep_result
from interp.patching.runner import as_resid_cache, expand_rows, resid_names, run_rows
from interp.tasks.base import PromptSet
from interp.tokens import TokenBatch

DIRECTIONS = ("denoise", "noise")


def final_logits_and_cache(
    model: Model, tokens: TokenBatch, names: list[str], batch_size: int = 32,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One pass over `tokens`: final-token logits [n, vocab] and the named activations
    {hook: [n, seq, ...]} (padded to the batch width with zeros), on the model's device."""
    width = tokens.seq_len
    cache_parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}

    def keep(name):
        def hook(activation, hook=None):
            kept = activation.detach()
            pad = width - kept.shape[1]
            if pad:
                shape = list(kept.shape)
                shape[1] = pad
                kept = torch.cat([kept, kept.new_zeros(shape)], dim=1)
            cache_parts[name].append(kept)
        return hook

    with torch.no_grad():
        logits = run_batched(model, tokens, batch_size=batch_size,
                             hooks=[(name, keep(name)) for name in names],
                             reduce=lambda out, sub, rows: out.float())
    return logits, {n: torch.cat(parts) for n, parts in cache_parts.items()}


def metric_targets(prompts: PromptSet, clean_logits: torch.Tensor) -> MetricTargets:
    return MetricTargets(prompts.answers, prompts.wrong_answers, clean_logits)


@dataclass
class SweepSetup:
    """What activation and attribution patching share before they differ: the component, the
    metric, the layers and positions swept, and which run is the source of patched values."""

    comp: Component
    metric_name: str
    metric_fn: Callable
    layers: list[int]
    positions: object
    labels_pos: list | None          # position names, or None: all positions at once
    table: torch.Tensor | None       # [n_prompts, n_pos] token index of each named position
    names: list[str]                 # the component's hook name per swept layer
    source_tokens: TokenBatch        # the run patched values come from
    target_tokens: TokenBatch        # the run they are patched into


def prepare_sweep(model: Model, prompts: PromptSet, component: str, metric, direction: str,
                  positions, layers) -> SweepSetup:
    """Validate a sweep's arguments (clear errors) and resolve them; see `activation_patch`."""
    validate(prompts)
    if direction not in DIRECTIONS:
        raise InvalidInput(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    comp = get_component(component)
    metric_name, metric_fn = resolve_metric(metric)
    layers = check_layers(model, layers)
    if positions == "default":
        positions = default_positions(comp, prompts)
    labels_pos, table = (None, None) if positions is None else position_table(prompts, positions)
    source_tokens, target_tokens = ((prompts.tokens, prompts.corrupted) if direction == "denoise"
                                    else (prompts.corrupted, prompts.tokens))
    return SweepSetup(comp, metric_name, metric_fn, layers, positions, labels_pos, table,
                      [comp.hook_name(layer) for layer in layers], source_tokens, target_tokens)


def activation_patch(
    model: Model,
    prompts: PromptSet,
    component: str = "heads",
    metric: str | Callable = "logit_diff",
    direction: str = "denoise",
    positions="default",
    layers=None,
    batch_size: int = 64,
    progress: Callable[[float, str], None] | None = None,
) -> PatchResult:
    """Patch each cell of `component` (see `interp.patching.components`) and measure `metric`.

    positions: "default" (all at once for heads/q/k/v, per named/each position for
        resid/attn/mlp), None (all at once), "each", "named", or a list of names/indices.
    layers:    which layers to sweep (default all).
    Returns a PatchResult with axes ("layer", unit) / ("layer", unit, "position") /
    ("layer",) / ("layer", "position"); values 0 = corrupted, 1 = clean.
    """
    start = time.perf_counter()
    sweep = prepare_sweep(model, prompts, component, metric, direction, positions, layers)
    comp, metric_name, metric_fn, layers = sweep.comp, sweep.metric_name, sweep.metric_fn, sweep.layers
    positions, labels_pos, table, names = sweep.positions, sweep.labels_pos, sweep.table, sweep.names
    source_tokens, target_tokens = sweep.source_tokens, sweep.target_tokens
    source_logits, source_cache = final_logits_and_cache(model, source_tokens, names)
    target_logits, target_cache = final_logits_and_cache(model, target_tokens,
                                                         resid_names(l for l in layers if l > 0))
    resid = as_resid_cache(target_cache)
    clean_logits, corrupted_logits = ((source_logits, target_logits) if direction == "denoise"
                                      else (target_logits, source_logits))
    targets = metric_targets(prompts, clean_logits)
    clean_value = float(metric_fn(clean_logits, targets).mean())
    corrupted_value = float(metric_fn(corrupted_logits, targets).mean())

    n_units = comp.n_units(model)
    n_pos = 1 if table is None else table.shape[1]
    # Cells in (layer, unit, position) order; each becomes len(prompts) rows.
    cell_layer = torch.tensor(layers).repeat_interleave(n_units * n_pos)
    cell_unit = torch.arange(n_units).repeat_interleave(n_pos).repeat(len(layers))
    cell_pos = torch.arange(n_pos).repeat(len(layers) * n_units) if table is not None else \
        torch.full((len(layers) * n_units,), -1)
    cell_index, prompt_index = expand_rows(cell_layer.shape[0], len(prompts))

    hooks_for = _cell_hooks(comp, layers, cell_layer[cell_index], cell_unit[cell_index],
                            cell_pos[cell_index], prompt_index, table, source_cache)

    def reduce(logits, rows):
        return metric_fn(logits, targets.rows(prompt_index[rows]))

    per_row = run_rows(model, target_tokens, prompt_index, hooks_for, reduce,
                       start_layers=cell_layer[cell_index], resid_cache=resid,
                       batch_size=batch_size, progress=progress)
    raw = per_row.reshape(-1, len(prompts)).mean(dim=1)
    return sweep_result(
        raw, layers, comp.unit_axis, n_units, labels_pos,
        metric=metric_name, clean=clean_value, corrupted=corrupted_value, method="activation",
        component=comp.name, direction=direction, model_id=model.model_id,
        prompt_hash=prompts.hash, seconds=time.perf_counter() - start,
        params={"n_prompts": len(prompts), "positions": _jsonable(positions),
                "layers": layers, "batch_size": batch_size,
                "tokens": model.to_str_tokens(prompts.tokens.token_lists()[0])},
    )


def _jsonable(positions):
    return positions if positions is None or isinstance(positions, str) else list(positions)


def _cell_hooks(comp: Component, layers, row_layer, row_unit, row_pos, prompt_index, table,
                source_cache):
    """hooks_for(rows, width): at each layer's hook, overwrite the rows patching that layer."""

    def hooks_for(rows: torch.Tensor, width: int):
        hooks = []
        chunk_layer = row_layer[rows]
        for layer in torch.unique(chunk_layer).tolist():
            batch_rows = (chunk_layer == layer).nonzero().flatten()
            chosen = rows[batch_rows]
            hooks.append((comp.hook_name(layer), _patch_hook(
                batch_rows, prompt_index[chosen], row_unit[chosen], row_pos[chosen], table,
                source_cache[comp.hook_name(layer)], comp.unit_axis is not None)))
        return hooks

    return hooks_for


def _patch_hook(batch_rows, prompts, units, pos_columns, table, source, per_unit: bool):
    """A hook writing source[prompt] into the batch rows (one unit, all or one position each)."""

    def hook(activation, hook=None):
        device = activation.device
        width = activation.shape[1]
        whole = pos_columns < 0
        if whole.any():
            b, p, u = batch_rows[whole].to(device), prompts[whole].to(device), units[whole].to(device)
            if per_unit:
                activation[b, :, u] = source[p, :width, u].to(activation.dtype)
            else:
                activation[b] = source[p, :width].to(activation.dtype)
        if (~whole).any():
            keep = ~whole
            p = prompts[keep]
            token = table[p, pos_columns[keep]].to(device)
            b, p, u = batch_rows[keep].to(device), p.to(device), units[keep].to(device)
            if per_unit:
                activation[b, token, u] = source[p, token, u].to(activation.dtype)
            else:
                activation[b, token] = source[p, token].to(activation.dtype)
        return activation

    return hook
