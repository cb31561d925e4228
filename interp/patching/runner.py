"""The forward passes every patcher is built on: many patched rows per forward, final logits only.

A "row" is one forward-pass input: a prompt (by index into a TokenBatch) plus whatever the
caller's hooks do to that row. Patchers put many rows — one per patched head, per prompt — in
the batch dimension, so a 30 x 9 head sweep costs a few large forwards instead of 270 small
ones (on CPU a forward's fixed cost, ~0.3 s for SmolLM2, dwarfs a row's).

Two savings that do not change any number (both tested against the plain forward):
- `start_layer`: a row whose first patch is at layer L computes layers 0..L-1 exactly as the
  unpatched run of its prompt did. Those blocks are skipped (made the identity for this call)
  and the cached residual entering block L is fed in as `inputs_embeds`. The bridge's own
  `start_at_layer` still runs the skipped blocks, so it saves nothing.
- final logits only: metrics read the next-token logits at each prompt's last real token, so
  the unembedding runs at those positions only (HF's `logits_to_keep`), not at every position.

Hooks are TransformerLens hook names on `model.bridge` (`blocks.{L}.attn.hook_z`, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch

from interp.models import Model
from interp.tokens import TokenBatch

FwdHooks = list[tuple[str, Callable]]


class StopForward(Exception):
    """Raised by a hook to end a forward once everything it needs has been recorded."""


@contextmanager
def skip_blocks_below(model: Model, layer: int):
    """Make blocks 0..layer-1 the identity for the duration of the block (see module doc).

    Only valid when the caller feeds the residual entering block `layer` as the input.
    """
    blocks = list(model.bridge.blocks)[:layer]

    def identity(*args, **kwargs):
        return args[0] if args else kwargs["hidden_states"]

    # An instance attribute shadows the class's forward. object.__setattr__ because the
    # bridge's components forward attribute writes to the wrapped HF module.
    for block in blocks:
        object.__setattr__(block, "forward", identity)
    try:
        yield
    finally:
        for block in blocks:
            object.__delattr__(block, "forward")


def layer_of(hook_name: str) -> int | None:
    """The block index of a hook name ("blocks.12.attn.hook_z" -> 12), None outside blocks."""
    parts = hook_name.split(".")
    if parts[0] == "blocks" and len(parts) > 1 and parts[1].isdigit():
        return int(parts[1])
    return None


def forward_final_logits(
    model: Model,
    input_ids: torch.Tensor,
    final_positions: torch.Tensor,
    fwd_hooks: FwdHooks = (),
    start_layer: int = 0,
    start_residual: torch.Tensor | None = None,
    bwd_hooks: FwdHooks = (),
) -> torch.Tensor | None:
    """[b, vocab] logits at `final_positions` [b], with hooks; None if a hook stopped the run.

    input_ids:      [b, n] right-padded token ids (pads never reach real positions).
    start_layer:    with `start_residual` [b, n, d_model] (the residual entering that block in
                    the unpatched run), blocks below it are skipped.
    Gradients flow when grad mode is on (attribution patching); callers use no_grad otherwise.
    """
    keep = torch.unique(final_positions)
    column = torch.searchsorted(keep, final_positions)
    if start_layer > 0:
        if start_residual is None:
            raise ValueError("start_layer > 0 needs start_residual (the residual entering it)")
        model_input, skipping = start_residual, skip_blocks_below(model, start_layer)
    else:
        model_input, skipping = input_ids, _nothing()
    try:
        with skipping:
            logits = model.bridge.run_with_hooks(
                model_input.to(model.device), fwd_hooks=list(fwd_hooks), bwd_hooks=list(bwd_hooks),
                logits_to_keep=keep.to(model.device),
            )
    except StopForward:
        return None
    rows = torch.arange(input_ids.shape[0], device=logits.device)
    return logits[rows, column.to(logits.device)]


@contextmanager
def _nothing():
    yield


def resid_names(layers) -> list[str]:
    """The hook names of the residual entering each of `layers` (what `start_layer` needs)."""
    return [f"blocks.{layer}.hook_resid_pre" for layer in layers]


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
        final_logits is None when a hook ended the forward early (raising `StopForward`).
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
        input_ids = tokens.input_ids[prompts, :width]
        start = _cached_start(int(start_layers[rows].min()), resid_cache)
        residual = resid_cache[start][prompts, :width] if start > 0 else None
        with torch.no_grad():
            logits = forward_final_logits(model, input_ids, lengths - 1, hooks_for(rows, width),
                                          start_layer=start, start_residual=residual)
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
