"""The forward passes every patcher is built on: many patched rows per forward, final logits only.

A "row" is one forward-pass input: a prompt (by index into a TokenBatch) plus whatever the
caller's hooks do to that row. Patchers put many rows — one per patched head, per prompt — in
the batch dimension, so a 30 x 9 head sweep costs a few large forwards instead of 270 small
ones (on CPU a forward's fixed cost, ~0.3 s for SmolLM2, dwarfs a row's).

Each chunk is one `interp.forward.run` (final logits only, blocks below the chunk's first patch
skipped from the cached residual entering it; see there).

Hooks are TransformerLens hook names on `model.bridge` (`interp.names.hook_name("z", L)`, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from interp.forward import run
from interp.models import Model
from interp.names import hook_name, layer_of
from interp.tokens import TokenBatch

FwdHooks = list[tuple[str, Callable]]


def resid_names(layers) -> list[str]:
    """The hook names of the residual entering each of `layers` (what `start_layer` needs)."""
    return [hook_name("resid_pre", layer) for layer in layers]


def as_resid_cache(cache: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
    """{hook_resid_pre name: [n, seq, d]} -> {layer: [n, seq, d]} for `run_rows`."""
    return {layer_of(name): tensor for name, tensor in cache.items()
            if name.endswith("hook_resid_pre")}


def run_rows(
    model: Model,
    tokens: TokenBatch,
    prompt_index: torch.Tensor,
    hooks_for: Callable[[torch.Tensor, int], FwdHooks],
    reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    start_layers: torch.Tensor | None = None,
    resid_cache: dict[int, torch.Tensor] | None = None,
    batch_size: int = 64,
    progress: Callable[[float, str], None] | None = None,
) -> torch.Tensor:
    """Run R rows through the model in chunks and return `reduce`'s value for each: [R, ...].

    prompt_index: [R] long, the prompt of `tokens` each row runs on.
    hooks_for(rows, width) -> fwd hooks for one chunk; `rows` [r] are the chunk's row ids (so a
        hook can look up what to do to batch row i as rows[i]); `width` is the chunk's length.
    reduce(final_logits [r, vocab], rows [r]) -> [r, ...] (e.g. the metric of each row);
        final_logits is None when a hook ended the forward early (raising
        `interp.forward.StopForward`).
    start_layers: [R] long, the first block each row patches; with `resid_cache` ({layer:
        [n, seq, d]}, the unpatched run of `tokens`) blocks below a chunk's minimum are skipped
        (a layer missing from the cache falls back to the nearest cached layer below it).
    Rows are run grouped by start layer (latest first) and returned in the original order.
    """
    n_rows = prompt_index.shape[0]
    if start_layers is None or resid_cache is None:
        start_layers = torch.zeros(n_rows, dtype=torch.long)
    order = torch.argsort(start_layers, descending=True, stable=True)
    out_parts, order_parts = [], []
    done = 0
    for begin in range(0, n_rows, batch_size):
        rows = order[begin : begin + batch_size]
        prompts = prompt_index[rows]
        lengths = tokens.lengths[prompts]
        width = int(lengths.max())
        chunk = TokenBatch(tokens.input_ids[prompts, :width], lengths, tokens.pad_id)
        start = _cached_start(int(start_layers[rows].min()), resid_cache)
        residual = resid_cache[start][prompts, :width] if start > 0 else None
        with torch.no_grad():
            logits = run(model, chunk, hooks=hooks_for(rows, width), start_layer=start,
                         start_residual=residual)
        out_parts.append(reduce(None if logits is None else logits.float(), rows).cpu())
        order_parts.append(rows)
        done += rows.shape[0]
        if progress is not None:
            progress(done / n_rows, f"{done}/{n_rows} patched rows")
    out = torch.cat(out_parts)
    restored = torch.empty_like(out)
    restored[torch.cat(order_parts)] = out
    return restored


def _cached_start(layer: int, resid_cache: dict | None) -> int:
    """The latest layer <= `layer` whose entering residual is cached (0 = run from the tokens)."""
    if not resid_cache:
        return 0
    return max([cached for cached in resid_cache if cached <= layer], default=0)


def expand_rows(n_groups: int, n_prompts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows for `n_groups` patches x `n_prompts` prompts: (group_index [R], prompt_index [R]).

    Group-major: rows g*n_prompts .. (g+1)*n_prompts-1 are group g on every prompt.
    """
    group = torch.arange(n_groups).repeat_interleave(n_prompts)
    prompt = torch.arange(n_prompts).repeat(n_groups)
    return group, prompt


def check_pairs(clean: TokenBatch, corrupted: TokenBatch, texts: Sequence[str] = ()) -> None:
    """Clean and corrupted prompts must match token for token in length: clear error if not."""
    from interp.errors import InvalidInput

    if clean.batch_size != corrupted.batch_size:
        raise InvalidInput(f"{clean.batch_size} clean prompts but {corrupted.batch_size} corrupted "
                           "ones; patching needs one corrupted prompt per clean prompt")
    bad = (clean.lengths != corrupted.lengths).nonzero().flatten().tolist()
    if bad:
        i = bad[0]
        text = f" ({texts[i]!r})" if i < len(texts) else ""
        raise InvalidInput(
            f"clean prompt {i}{text} has {int(clean.lengths[i])} tokens but its corrupted "
            f"counterpart has {int(corrupted.lengths[i])} ({len(bad)} pair(s) differ, first: "
            f"{bad[:5]}). Patching swaps activations position by position, so each pair must "
            "tokenize to the same length: use names/words that are single tokens in both"
        )
