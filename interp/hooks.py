"""Selective caching and streaming reductions at TransformerLens hook points.

Two ways to read activations as the model runs, both batched over prompts (right-padded, see
`interp.tokens`) and both named by TransformerLens hook names (`blocks.3.attn.hook_z`, ...):

- `cache_activations`: keep the named activations (moved to `device`, CPU by default), nothing else.
- `run_with_reducers`: at each named hook apply a reducer `fn(activation, batch) -> Tensor`
  and keep only its (small) result; the activation itself is dropped as the forward moves on.

Both run through `interp.forward.run_batched` (the decoder stack alone, unless an unembedding
hook is named). Attention statistics that must not materialize the N x N pattern go through
`interp.attention_stats` instead (the fused kernel / blocked reference), not through hooks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import torch

from interp.errors import InvalidInput
from interp.forward import hook_gate, run_batched, switch_on_gated_hooks, unknown_hooks
from interp.models import Model
from interp.tokens import TokenBatch

NamesFilter = str | Iterable[str] | Callable[[str], bool]
Reducer = Callable[[torch.Tensor, TokenBatch], torch.Tensor]


def hook_names(model: Model, names: NamesFilter) -> list[str]:
    """Resolve a name, a list of names or a predicate to the model's hook names, in model order."""
    available = list(model.bridge.hook_dict.keys())
    if callable(names):
        chosen = [n for n in available if names(n) and hook_gate(model, n) is None]
    else:
        wanted = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in wanted if n not in model.bridge.hook_dict]
        if unknown:
            raise unknown_hooks(model, unknown)
        chosen = [n for n in available if n in set(wanted)]
    if not chosen:
        raise InvalidInput(f"no hook of {model.name} matches {names!r}")
    switch_on_gated_hooks(model, chosen)
    return chosen


def _as_batch(model: Model, prompts: TokenBatch | str | list[str]) -> TokenBatch:
    return prompts if isinstance(prompts, TokenBatch) else model.tokenize(prompts)


def run_with_reducers(
    model: Model,
    prompts: TokenBatch | str | list[str],
    reducers: dict[str, Reducer],
    batch_size: int = 8,
) -> dict[str, torch.Tensor]:
    """Run the model and keep only `reducer(activation, sub_batch)` at each named hook.

    reducers: {hook name: fn}; fn sees the activation of one sub-batch ([b, seq, ...] for
        residual hooks, [b, heads, q, k] for `hook_pattern`, ...) and that sub-batch's
        TokenBatch (for `mask` and `final_positions`); its result must have the sub-batch as
        its first dimension. Results are concatenated over sub-batches on the CPU.
    """
    batch = _as_batch(model, prompts)
    names = hook_names(model, list(reducers))
    results: dict[str, list[torch.Tensor]] = defaultdict(list)

    def reducer_hooks(sub_batch: TokenBatch, rows) -> dict:
        def make_hook(name):
            def hook(activation, hook=None):
                results[name].append(reducers[name](activation.detach(), sub_batch).cpu())
                return None  # leave the activation untouched; it is freed as the forward moves on
            return hook
        return {"hooks": [(n, make_hook(n)) for n in names]}

    # The unembedding runs only when one of its hooks is asked for.
    unembedding = any((model.bridge.hook_dict[n].name or n).startswith("unembed.") for n in names)
    with torch.no_grad():
        run_batched(model, batch, batch_size=batch_size, per_batch=reducer_hooks,
                    output="logits" if unembedding else None)
    return {name: torch.cat(parts) for name, parts in results.items()}


def cache_activations(
    model: Model,
    prompts: TokenBatch | str | list[str],
    names: NamesFilter,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """Cache the named activations for all prompts: {hook name: [n_prompts, seq, ...]}.

    Sub-batches are padded to the whole batch's length so they concatenate; positions past a
    prompt's `lengths` are padding (zeros for positions absent from a shorter sub-batch).
    """
    batch = _as_batch(model, prompts)
    width = batch.seq_len

    def keeper(name: str) -> Reducer:
        # Attention scores/patterns are [b, head, query, key]; every other hook is [b, pos, ...].
        axes = (2, 3) if name.endswith(("hook_pattern", "hook_attn_scores")) else (1,)

        def keep(activation: torch.Tensor, sub_batch: TokenBatch) -> torch.Tensor:
            return _pad_positions(activation.to(device), axes, width)
        return keep

    reducers = {n: keeper(n) for n in hook_names(model, names)}
    return {name: tensor.to(device)
            for name, tensor in run_with_reducers(model, batch, reducers, batch_size).items()}


def _pad_positions(activation: torch.Tensor, axes: tuple[int, ...], width: int) -> torch.Tensor:
    """Zero-pad the token-position `axes` of `activation` up to `width`."""
    pads = [0, 0] * activation.ndim
    for axis in axes:
        pads[2 * (activation.ndim - 1 - axis) + 1] = width - activation.shape[axis]
    return torch.nn.functional.pad(activation, pads) if any(pads) else activation


def final_position(activation: torch.Tensor, batch: TokenBatch) -> torch.Tensor:
    """[b, seq, ...] -> [b, ...]: each prompt's last real position (a common reducer)."""
    index = batch.final_positions.to(activation.device)
    return activation[torch.arange(activation.shape[0], device=activation.device), index]
