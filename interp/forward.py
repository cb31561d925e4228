"""The one place that runs a model: with hooks, head ablations, attention edits or statistics.

    from interp.forward import HeadAblation, generate, run, run_batched
    logits = run(model, tokens)                                      # [b, vocab] at last tokens
    logits = run(model, tokens, ablation=HeadAblation(((8, 3),), "mean", means=means))
    run(model, tokens, output=None, stats=request, on_stats=keep)    # per-layer attention stats
    replies = generate(model, prompts, max_new_tokens=24, edit=edit, chat=True)

Everything else in the workbench (patchers, detectors, steering, circuits, hooks) calls these;
none of it calls `hf_model(...)`, `bridge.run_with_hooks` or `hf_model.generate` itself.

## Two engines under one call
Both run the Hugging Face model that `interp.models.load_model` wrapped; TransformerLens's
bridge components sit inside it, so TL hook points fire on both. They differ in who computes
attention:

| engine   | attention computed by                         | chosen when                      |
|----------|-----------------------------------------------|----------------------------------|
| "bridge" | the bridge's eager attention (N x N pattern)  | default (no edit, no statistics) |
| "kernel" | `kernels.attention` (Triton on GPU, blocked   | `edit`, `stats` or `on_stats`    |
|          | torch reference on CPU), via `kernel_attention` | given, or engine="kernel"      |

What each supports (anything else is refused with `InvalidInput` before the forward runs):

| feature                                         | bridge | kernel                        |
|-------------------------------------------------|--------|-------------------------------|
| residual / MLP / norm / embedding hooks         | yes    | yes                           |
| hook_q, hook_k, hook_v, hook_z (projection in-  | yes    | yes (they live on the q/k/v/o |
|   and outputs, outside the attention function)  |        |   projections, which both run)|
| hook_pattern, hook_attn_scores, hook_attn_out,  | yes    | NO: refused (the bridge's own |
|   attn.hook_in, hook_rot_q/k, hook_result ...   |        |   attention code never runs)  |
| bwd_hooks (gradients through the hooks)         | yes    | NO: refused (no kernel backward) |
| HeadAblation "zero" / "mean" (hook_z)           | yes    | yes (a "zero" ablation equals |
| HeadAblation "query_scale" / "query_mean" (hook_q) | yes |   `HeadScale(heads, 0.0)`; tested) |
| AttentionEdit (HeadScale, KeyBias, SinkCalibration), stats | NO: refused | yes     |
| start_layer + start_residual, prefix, every output | yes | yes                           |

Which hooks the kernel engine refuses is read off the model, not listed by hand: the hook points
owned by each block's attention bridge itself (`blocks.L.attn.hook_*` that are direct children of
the bridge); a test checks that exactly those are the ones that do not fire.

## What `run` saves, without changing a number
- `start_layer` + `start_residual`: blocks below `start_layer` are made the identity for the call
  and the residual entering block `start_layer` (from an earlier run, e.g. the unpatched one) is
  fed in as `inputs_embeds`. The bridge's own `start_at_layer` still runs the skipped blocks.
  Works for any stack Hugging Face builds the masks for (Gemma-3's sliding-window layers too).
- `prefix` (`SharedPrefix`, from `encode_prefix`): keys and values of tokens every row starts
  with (a chat template's system prompt), computed once and replayed through a `DynamicCache`.
- final outputs: the unembedding runs at each prompt's last real token only (the final-norm
  hidden state gathered, then `lm_head`), never at every position; for Qwen's 152k vocabulary
  the full unembedding costs as much as the rest of the model.

Rows are right-padded (`interp.tokens`), so real positions never see a pad; the padding mask is
passed anyway.

## Stopping a long job from outside (cooperative cancellation)
`with stop_when(should_stop): ...` makes every forward started in that block (in this thread or
task: a context variable, so other threads' forwards are untouched) call `should_stop()` before
each transformer block and each linear layer in it, and between the sub-batches of `run_batched` and the chunks of
`generate`; once it returns True the forward raises `Cancelled`. A job runner (the dashboard's)
sets it to "was Cancel pressed?", so a scan stops within one layer's compute wherever it is, not
only at its next progress report. `check_stop()` is the same check for loops outside a forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace

import torch

from interp.ablation import ABLATIONS, masked_ablation_hooks
from interp.errors import InvalidInput
from interp.models import Model
from interp.names import Head, check_heads, hook_name, layer_of
from interp.store import RunCancelled
from interp.tokens import TokenBatch
from kernels import AttentionEdit, attention_session

OUTPUTS = ("logits", "final_logits", "final_logprobs", "final_hidden", "hidden", None)
ENGINES = ("auto", "bridge", "kernel")
ABLATION_METHODS = tuple(ABLATIONS)

Hooks = Sequence[tuple[str | Callable[[str], bool], Callable]]


class StopForward(Exception):
    """Raised by a hook to end a forward once everything it needs has been recorded;
    `run` then returns None."""


# ---- cooperative cancellation ------------------------------------------------------------------
class Cancelled(RunCancelled):
    """Raised inside a forward (or by `check_stop`) once the `stop_when` callable said stop.
    A `RunCancelled`, so a store run it escapes from is recorded as cancelled, not failed."""


_SHOULD_STOP: ContextVar[Callable[[], bool] | None] = ContextVar("interp_should_stop", default=None)


@contextmanager
def stop_when(should_stop: Callable[[], bool]):
    """Within the block, forwards poll `should_stop()` before every block and raise `Cancelled`
    once it returns True (nested blocks: either one stopping stops). Context-local: forwards
    of other threads do not see it."""
    outer = _SHOULD_STOP.get()
    combined = should_stop if outer is None else (lambda: outer() or should_stop())
    token = _SHOULD_STOP.set(combined)
    try:
        yield
    finally:
        _SHOULD_STOP.reset(token)


def check_stop() -> None:
    """Raise `Cancelled` if the enclosing `stop_when` says stop (no-op outside one)."""
    should_stop = _SHOULD_STOP.get()
    if should_stop is not None and should_stop():
        raise Cancelled("cancelled by the user")


@contextmanager
def _polling_stop(model: Model):
    """While a `stop_when` is active, check it before each transformer block of `model` and
    before each linear layer inside it (forward pre-hooks, removed on exit): on a long batch
    one block takes seconds on a CPU, one projection a fraction of that. The check reads this
    thread's context, so a forward of another thread that meets these hooks is not stopped."""
    if _SHOULD_STOP.get() is None:
        yield
        return
    check_stop()
    modules = [module for block in model.bridge.blocks for module in block.modules()
               if module is block or isinstance(module, torch.nn.Linear)]
    unique = list({id(m): m for m in modules}.values())  # the bridge may reach a layer twice
    handles = [module.register_forward_pre_hook(lambda module, args: check_stop())
               for module in unique]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# ---- head ablations ----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class HeadAblation:
    """Which attention heads to switch off in a forward, and how.

    heads:     (layer, head) pairs ablated in every row of the batch.
    method:    "zero"        the head's output `hook_z` := 0 (it writes nothing);
               "mean"        `hook_z` := `means[layer, head]` at every position (Wang et al. 2022);
               "query_scale" the head's query `hook_q` *= eps, so its attention becomes uniform
                             over the causal prefix (Zhou et al. 2024, the Ships default);
               "query_mean"  `hook_q` := the mean query over the layer's heads.
    means:     [n_layers, n_heads, d_head] for "mean" (`interp.ablation.head_means`).
    eps:       the query scale of "query_scale".
    row_masks: {layer: [rows, n_heads] bool}: in addition, head h of batch row r is ablated where
               row_masks[layer][r, h] (many ablations in one batched forward); rows must equal
               the forward's batch size.

    hook_q is the query projection's output, before RoPE (a per-position rotation, so scaling
    commutes with it) but also before any query norm: on models with q_norm (Gemma-3, Qwen-3)
    the norm undoes most of a query scale.
    """

    heads: tuple[Head, ...] = ()
    method: str = "zero"
    means: torch.Tensor | None = None
    eps: float = 1e-5
    row_masks: dict[int, torch.Tensor] | None = None

    def checked(self, model: Model) -> "HeadAblation":
        """This ablation with its heads validated against `model` (clear errors otherwise)."""
        if self.method not in ABLATION_METHODS:
            raise InvalidInput(f"unknown ablation method {self.method!r}; use one of "
                               f"{ABLATION_METHODS}")
        if self.method == "mean":
            if self.means is None:
                raise InvalidInput("mean ablation needs `means` [n_layers, n_heads, d_head]: "
                                   "compute them with interp.ablation.head_means(model, "
                                   "reference_prompts), or use method='zero'")
            expected = (model.n_layers, model.n_heads, model.d_head)
            if tuple(self.means.shape) != expected:
                raise InvalidInput(f"means must be [n_layers, n_heads, d_head] = {expected}, "
                                   f"got {tuple(self.means.shape)}")
        if self.method == "query_scale" and not self.eps >= 0:
            raise InvalidInput(f"query_scale needs eps >= 0, got {self.eps}")
        for layer, mask in (self.row_masks or {}).items():
            if not (isinstance(layer, int) and 0 <= layer < model.n_layers):
                raise InvalidInput(f"row_masks has layer {layer!r}; {model.name} has layers "
                                   f"0..{model.n_layers - 1}")
            if mask.dtype != torch.bool or mask.ndim != 2 or mask.shape[1] != model.n_heads:
                raise InvalidInput(f"row_masks[{layer}] must be a [rows, {model.n_heads}] bool "
                                   f"tensor, got {tuple(mask.shape)} {mask.dtype}")
        return replace(self, heads=tuple(check_heads(model, self.heads)))

    @property
    def hook_point(self) -> str:
        """"q" for the query ablations, "z" for the output ablations."""
        return ABLATIONS[self.method].hook

    def layer_masks(self, n_heads: int) -> dict[int, torch.Tensor]:
        """{layer: [rows or 1, n_heads] bool} of the heads ablated in each row."""
        masks: dict[int, torch.Tensor] = {}
        for layer, head in self.heads:
            masks.setdefault(layer, torch.zeros(1, n_heads, dtype=torch.bool))[0, head] = True
        for layer, mask in (self.row_masks or {}).items():
            masks[layer] = masks[layer] | mask if layer in masks else mask
        return {layer: mask for layer, mask in sorted(masks.items()) if bool(mask.any())}

    def rows(self) -> int | None:
        """The batch size the row masks are for (None: no row masks)."""
        sizes = {int(mask.shape[0]) for mask in (self.row_masks or {}).values()}
        return max(sizes) if sizes else None

    def hooks(self, model: Model) -> list[tuple[str, Callable]]:
        """The forward hooks that carry out this ablation (`checked` first)."""
        return masked_ablation_hooks(self.method, self.layer_masks(model.n_heads), self.eps,
                                     self.means)


# ---- the kernel engine -------------------------------------------------------------------------
@contextmanager
def kernel_attention(model: Model, edit: AttentionEdit | None = None, stats=None,
                     on_stats: Callable[[int, dict], None] | None = None):
    """Within the block every attention layer of `model` runs `kernels.attention` with `edit`
    applied and `stats` computed (see `kernels.attention_session`, whose session is yielded).

    The bridge's attention components forward to the HF attention modules they wrap for the
    duration, so the bridge's own attention hooks (hook_pattern, hook_attn_scores, ...) do not
    fire; projection and residual hooks do (see the module docstring).
    """
    with attention_session(model.hf_model, edit=edit, stats=stats, on_stats=on_stats) as session:
        yield session


# ---- shared prefixes ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SharedPrefix:
    """Keys and values of a token prefix that rows of later forwards continue from.

    keys / values: one tensor per layer, [n_variants, n_kv_heads, n_prefix, d_head]: the prefix
        as computed under n_variants different interventions (1 for a plain prefix).
    rows: [batch] long, the variant each row of the next forward continues (None: variant 0 for
        every row). `for_rows` sets it.
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    rows: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return int(self.keys[0].shape[-2])

    @property
    def n_variants(self) -> int:
        return int(self.keys[0].shape[0])

    def for_rows(self, rows: torch.Tensor) -> "SharedPrefix":
        """The same prefix, row i of the next forward continuing variant rows[i]."""
        return replace(self, rows=torch.as_tensor(rows, dtype=torch.long))

    def cache(self, model: Model, batch_size: int):
        """A fresh `DynamicCache` holding the prefix for a batch of `batch_size` rows."""
        from transformers import DynamicCache

        rows = torch.zeros(batch_size, dtype=torch.long) if self.rows is None else self.rows
        cache = DynamicCache(config=model.hf_model.config)
        index = rows.to(self.keys[0].device)
        for layer, (keys, values) in enumerate(zip(self.keys, self.values)):
            cache.update(keys.index_select(0, index), values.index_select(0, index), layer)
        return cache


def encode_prefix(model: Model, tokens: TokenBatch, *, hooks: Hooks = (),
                  ablation: HeadAblation | None = None, start_layer: int = 0,
                  start_residual: torch.Tensor | None = None,
                  base: SharedPrefix | None = None) -> SharedPrefix:
    """Run the prefix `tokens` [n_variants, n_prefix] (no padding) once and keep every layer's
    keys and values. With `start_layer` > 0 (and `start_residual`, the prefix's residual entering
    that block) only layers from `start_layer` on are recomputed; the layers below come from
    `base`, the same prefix run from layer 0 (expanded to the variants, not copied).

    Only models whose every layer attends to the whole context: a sliding-window layer's cache
    keeps a window, not the prefix (refused with a clear error).
    """
    _check_full_attention(model)
    if int(tokens.lengths.min()) != tokens.seq_len:
        raise InvalidInput("a shared prefix is the same tokens in every variant: no padding")
    if start_layer > 0 and base is None:
        raise InvalidInput("encode_prefix from start_layer > 0 needs `base`, the prefix's keys "
                           "and values from layer 0 (encode_prefix without start_layer)")
    from transformers import DynamicCache

    plan = _plan(model, tokens, None, hooks, (), ablation, None, None, None, start_layer,
                 start_residual, None, "bridge")
    cache = DynamicCache(config=model.hf_model.config)
    _execute(model, tokens, plan, None, start_layer=start_layer, start_residual=start_residual,
             cache=cache)
    n = tokens.batch_size
    keys, values = [], []
    for layer in range(model.n_layers):
        if layer < start_layer:
            keys.append(base.keys[layer][:1].expand(n, -1, -1, -1))
            values.append(base.values[layer][:1].expand(n, -1, -1, -1))
        else:
            keys.append(cache.layers[layer].keys)
            values.append(cache.layers[layer].values)
    return SharedPrefix(tuple(keys), tuple(values))


def _check_full_attention(model: Model) -> None:
    config = model.hf_model.config.get_text_config()
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    if layer_types != {"full_attention"}:
        raise InvalidInput(
            f"{model.name} has {sorted(layer_types)} layers; a shared-prefix key/value cache "
            "needs full attention in every layer (a sliding-window cache keeps a window, not the "
            "prefix): run the whole prompts instead (prefix=None)")


# ---- one forward -------------------------------------------------------------------------------
def run(model: Model, tokens: TokenBatch, *, output: str | None = "final_logits",
        hooks: Hooks = (), bwd_hooks: Hooks = (), ablation: HeadAblation | None = None,
        edit: AttentionEdit | None = None, stats=None,
        on_stats: Callable[[int, dict], None] | None = None, start_layer: int = 0,
        start_residual: torch.Tensor | None = None, prefix: SharedPrefix | None = None,
        engine: str = "auto") -> torch.Tensor | None:
    """One forward of `tokens` (right-padded, see `interp.tokens`) with everything asked for.

    output:   "logits" [b, n, vocab] | "final_logits" [b, vocab] at each row's last real token |
              "final_logprobs" [b, vocab] float32 log-softmax of those | "final_hidden" [b, d]
              (after the final norm) | "hidden" [b, n, d] (after the final norm) | None (the
              decoder stack only, no unembedding: for hooks and statistics). Returns None also
              when a hook raised `StopForward`.
    hooks / bwd_hooks: TransformerLens (name or name filter, fn) pairs, as `run_with_hooks` takes.
    ablation: heads switched off (`HeadAblation`).
    edit / stats / on_stats: an attention edit and statistics, as `kernels.attention_session`
              takes them; they select the kernel engine.
    start_layer / start_residual [b, n, d_model]: resume at block start_layer from the residual
              entering it (blocks below are skipped; hooks there would never fire: refused).
    prefix:   a `SharedPrefix` every row continues (positions count on from its end).
    engine:   "auto" (kernel when edit/stats are given, else bridge), "bridge" or "kernel".
    Gradients flow when grad mode is on (bridge engine), e.g. for attribution patching.
    """
    plan = _plan(model, tokens, output, hooks, bwd_hooks, ablation, edit, stats, on_stats,
                 start_layer, start_residual, prefix, engine)
    return _execute(model, tokens, plan, output, bwd_hooks, edit, stats, on_stats, start_layer,
                    start_residual, prefix)


def _execute(model, tokens, plan, output, bwd_hooks=(), edit=None, stats=None, on_stats=None,
             start_layer=0, start_residual=None, prefix=None, cache=None):
    """Run a validated call (see `run`); `cache`: a DynamicCache to fill (`encode_prefix`)."""
    tokens = tokens.to(model.device)
    with ExitStack() as stack:
        stack.enter_context(_polling_stop(model))
        if plan.engine == "kernel":
            stack.enter_context(kernel_attention(model, edit, stats, on_stats))
        stack.enter_context(model.bridge.hooks(fwd_hooks=plan.hooks, bwd_hooks=list(bwd_hooks)))
        if start_layer > 0:
            stack.enter_context(_skip_blocks_below(model, start_layer))
        try:
            return _forward(model, tokens, output, start_residual, prefix, cache)
        except StopForward:
            return None


def _forward(model: Model, tokens: TokenBatch, output: str | None,
             start_residual: torch.Tensor | None, prefix: SharedPrefix | None, cache):
    mask = tokens.mask.long()
    kwargs = {"use_cache": False}
    if prefix is not None:
        cache = prefix.cache(model, tokens.batch_size)
        mask = torch.cat([mask.new_ones(tokens.batch_size, prefix.length), mask], dim=1)
    if cache is not None:
        kwargs.update(past_key_values=cache, use_cache=True)
    if start_residual is not None:
        kwargs["inputs_embeds"] = start_residual.to(device=model.device, dtype=model.dtype)
    else:
        kwargs["input_ids"] = tokens.input_ids
    if output == "logits":
        return model.hf_model(attention_mask=mask, **kwargs).logits
    hidden = model.hf_model.get_decoder()(attention_mask=mask, **kwargs).last_hidden_state
    if output is None:
        return None
    if output == "hidden":
        return hidden
    final = hidden[torch.arange(tokens.batch_size, device=hidden.device), tokens.final_positions]
    if output == "final_hidden":
        return final
    logits = unembed(model, final)
    return torch.log_softmax(logits.float(), dim=-1) if output == "final_logprobs" else logits


def unembed(model: Model, final_hidden: torch.Tensor) -> torch.Tensor:
    """[b, d_model] final-norm hidden states -> [b, vocab] logits (the model's own `lm_head`,
    plus the final logit soft-capping of the models that have one)."""
    logits = model.hf_model.get_output_embeddings()(final_hidden[:, None].to(model.dtype))[:, 0]
    cap = getattr(model.hf_model.config.get_text_config(), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


@contextmanager
def _skip_blocks_below(model: Model, layer: int):
    """Make blocks 0..layer-1 the identity for the duration of the block; only valid when the
    caller feeds the residual entering block `layer` as the input."""
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


# ---- what is refused, before anything runs -----------------------------------------------------
@dataclass
class _Plan:
    engine: str                               # "bridge" or "kernel"
    hooks: list                               # the caller's forward hooks, then the ablation's


def _plan(model, tokens, output, hooks, bwd_hooks, ablation, edit, stats, on_stats,
          start_layer, start_residual, prefix, engine) -> _Plan:
    """Validate a `run` call (InvalidInput naming the conflict and the fix) and resolve it."""
    if not isinstance(tokens, TokenBatch):
        raise InvalidInput(f"run takes a TokenBatch (model.tokenize(texts)), got "
                           f"{type(tokens).__name__}")
    if output not in OUTPUTS:
        raise InvalidInput(f"unknown output {output!r}; use one of {OUTPUTS}")
    engine = _engine(engine, edit, stats, on_stats)
    forward_hooks = list(hooks)
    if ablation is not None:
        ablation = ablation.checked(model)
        rows = ablation.rows()
        if rows is not None and rows != tokens.batch_size:
            raise InvalidInput(f"ablation row_masks are for {rows} rows but the batch has "
                               f"{tokens.batch_size}")
        forward_hooks += ablation.hooks(model)
    points = _hook_points(model, forward_hooks) + _hook_points(model, bwd_hooks)
    if engine == "kernel":
        _check_kernel_hooks(model, points, bwd_hooks)
    _check_start(model, tokens, start_layer, start_residual, points)
    if output not in ("logits", "final_logits", "final_logprobs"):
        unembedding = [given for given, point in points if (point.name or "").startswith("unembed.")]
        if unembedding:
            raise InvalidInput(f"hook {unembedding[0]!r} fires only where the unembedding runs: "
                               "use output='logits' (or 'final_logits', where it sees [b, 1, d])")
    if prefix is not None:
        _check_full_attention(model)
        rows = prefix.rows
        if rows is not None and (rows.shape[0] != tokens.batch_size or
                                 int(rows.max()) >= prefix.n_variants or int(rows.min()) < 0):
            raise InvalidInput(f"prefix.rows must name one of its {prefix.n_variants} variants "
                               f"for each of the batch's {tokens.batch_size} rows")
        if rows is None and prefix.n_variants != 1:
            raise InvalidInput(f"the prefix has {prefix.n_variants} variants: say which one "
                               "each row continues with prefix.for_rows(variant_of_each_row)")
    switch_on_gated_hooks(model, [name for name, _ in list(forward_hooks) + list(bwd_hooks)
                                  if isinstance(name, str)])
    return _Plan(engine, forward_hooks)


def _engine(engine, edit, stats, on_stats) -> str:
    if engine not in ENGINES:
        raise InvalidInput(f"unknown engine {engine!r}; use one of {ENGINES}")
    if on_stats is not None and stats is None:
        raise InvalidInput("on_stats receives attention statistics: also say which (stats=...)")
    wants_kernel = edit is not None or stats is not None
    if engine == "bridge" and wants_kernel:
        raise InvalidInput("attention edits and statistics run inside the fused attention "
                           "kernels: use engine='kernel' (or 'auto'), not 'bridge'")
    if engine == "auto":
        return "kernel" if wants_kernel else "bridge"
    return engine


def _hook_points(model: Model, hooks: Hooks) -> list[tuple[str, object]]:
    """[(name as given, HookPoint)] for every hook point `hooks` touch (filters expanded);
    unknown names are an InvalidInput."""
    resolved = []
    hook_dict = model.bridge.hook_dict
    for name, _ in hooks:
        if callable(name):
            resolved += [(n, point) for n, point in hook_dict.items() if name(n)]
            continue
        point = hook_dict.get(name)
        if point is None:
            raise unknown_hooks(model, [name])
        resolved.append((name, point))
    return resolved


def hook_gate(model: Model, name: str) -> str | None:
    """The bridge flag (e.g. "use_attn_result") hook `name` needs switched on, or None.

    TransformerLens computes some hooks only when switched on, since they cost extra work on
    every forward: a name filter never selects them; naming one explicitly switches it on.
    """
    return model.bridge._gated_hook_reason(model.bridge.hook_dict[name].name or name)


def switch_on_gated_hooks(model: Model, names: Iterable[str]) -> None:
    """Switch on the bridge flags the named hooks need (see `hook_gate`)."""
    for flag in {hook_gate(model, name) for name in names} - {None}:
        getattr(model.bridge, f"set_{flag}")(True)


def unknown_hooks(model: Model, names: list[str]) -> InvalidInput:
    """The error for hook names `model` does not have (with examples of the ones it has)."""
    examples = [n for n in model.bridge.hook_dict if n.startswith("blocks.0.")][:12]
    return InvalidInput(f"unknown hook name(s) {names} for {model.name}; names follow "
                        f"TransformerLens, e.g. {examples}")


def attention_owned_hooks(model: Model) -> dict[int, str]:
    """{id(hook point): name} of the hooks owned by the blocks' attention bridges themselves:
    the ones that do not fire when `kernel_attention` computes attention."""
    from transformer_lens.hook_points import HookPoint

    owned = {}
    for block in model.bridge.blocks:
        for child in block.attn.children():
            if isinstance(child, HookPoint):
                owned[id(child)] = child.name
    return owned


def _check_kernel_hooks(model: Model, points, bwd_hooks: Hooks) -> None:
    if bwd_hooks:
        raise InvalidInput("the fused attention kernels have no backward pass: run gradients "
                           "(bwd_hooks) on the bridge engine, without edits or statistics")
    owned = attention_owned_hooks(model)
    refused = [given for given, point in points if id(point) in owned]
    if refused:
        raise InvalidInput(
            f"hook {refused[0]!r} does not fire on the kernel engine (edits/statistics): the "
            "bridge's own attention code, where the pattern, scores and attention output hooks "
            "live, does not run there. Use hook_z/hook_q/hook_k/hook_v or residual hooks, or "
            "drop the edit/statistics to run on the bridge engine")


def _check_start(model: Model, tokens: TokenBatch, start_layer: int, start_residual, points) -> None:
    if not (isinstance(start_layer, int) and 0 <= start_layer < model.n_layers):
        raise InvalidInput(f"start_layer must lie in 0..{model.n_layers - 1}, got {start_layer!r}")
    if start_layer == 0:
        if start_residual is not None:
            raise InvalidInput("start_residual is the residual entering start_layer: give "
                               "start_layer > 0 with it, or leave it out")
        return
    if start_residual is None:
        raise InvalidInput(f"start_layer={start_layer} needs start_residual, the residual "
                           f"entering block {start_layer} ({hook_name('resid_pre', start_layer)}"
                           " of an earlier run)")
    expected = (tokens.batch_size, tokens.seq_len, model.d_model)
    if tuple(start_residual.shape) != expected:
        raise InvalidInput(f"start_residual must be [batch, seq, d_model] = {expected}, got "
                           f"{tuple(start_residual.shape)}")
    for given, point in points:
        layer = layer_of(point.name or given)
        if (layer is not None and layer < start_layer) or (point.name or "").startswith("embed."):
            raise InvalidInput(f"hook {given!r} is below start_layer={start_layer}, where blocks "
                               "are skipped and it would never fire: start at or below its layer")


# ---- many forwards -----------------------------------------------------------------------------
def run_batched(model: Model, tokens: TokenBatch, *, batch_size: int = 8,
                per_batch: Callable[[TokenBatch, torch.Tensor], dict] | None = None,
                reduce: Callable[[torch.Tensor | None, TokenBatch, torch.Tensor], torch.Tensor] | None = None,
                progress: Callable[[float, str], None] | None = None,
                **options) -> torch.Tensor | None:
    """`run` over sub-batches of `batch_size` prompts; results concatenated along dim 0.

    options: `run`'s keyword arguments, the same for every sub-batch.
    per_batch(sub_batch, rows) -> more `run` keyword arguments for one sub-batch (its hooks are
        added to options' hooks); sub_batch is on the model's device, rows [b] index `tokens`.
    reduce(out, sub_batch, rows) -> a tensor with the sub-batch first (default: `out` itself);
        return None to keep nothing (the result is then None).
    Per-position results are zero-padded to the longest sub-batch. progress(fraction, message)
    is called after each sub-batch (it may raise to cancel).
    """
    parts = []
    for start in range(0, tokens.batch_size, batch_size):
        check_stop()
        sub = tokens[start: start + batch_size].to(model.device)
        rows = torch.arange(start, start + sub.batch_size)
        extra = dict(per_batch(sub, rows)) if per_batch is not None else {}
        merged = {**options, **extra}
        merged["hooks"] = list(options.get("hooks", ())) + list(extra.get("hooks", ()))
        out = run(model, sub, **merged)
        if reduce is not None:
            out = reduce(out, sub, rows)
        if out is not None:
            parts.append(out)
        done = start + sub.batch_size
        if progress is not None:
            progress(done / tokens.batch_size, f"{done}/{tokens.batch_size} prompts")
    return cat_padded(parts) if parts else None


def cat_padded(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along dim 0, zero-padding the other dims to their maximum."""
    shape = [max(p.shape[d] for p in parts) for d in range(1, parts[0].ndim)]
    padded = []
    for part in parts:
        pads = []
        for d in reversed(range(1, part.ndim)):
            pads += [0, shape[d - 1] - part.shape[d]]
        padded.append(torch.nn.functional.pad(part, pads) if any(pads) else part)
    return torch.cat(padded)


# ---- greedy generation -------------------------------------------------------------------------
@dataclass
class Continuation:
    """One prompt's greedy continuation. `edit`: the edit's JSON form (None: unedited)."""

    prompt: str
    text: str
    token_ids: list[int]
    edit: dict | None = None

    def to_json(self) -> dict:
        return self.__dict__.copy()


@dataclass
class Generation:
    """Greedy continuations of n prompts (what `generate` returns).

    texts:          [n] decoded continuations (special tokens dropped).
    token_ids:      [n] lists of generated token ids (up to and including an end token).
    first_logprobs: [n, vocab] float32 log-probabilities of the first generated token.
    prompts:        [n] the prompts as given (before any chat template).
    edit:           the attention edit's JSON form (None: unedited).
    generation[i] is prompt i's `Continuation`; generation[a:b] a Generation of those prompts.
    """

    texts: list[str]
    token_ids: list[list[int]]
    first_logprobs: torch.Tensor
    prompts: list[str] = field(default_factory=list)
    edit: dict | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int | slice):
        if isinstance(index, slice):
            return Generation(self.texts[index], self.token_ids[index],
                              self.first_logprobs[index], self.prompts[index], self.edit)
        return Continuation(self.prompts[index], self.texts[index], self.token_ids[index],
                            self.edit)


def generate(model: Model, prompts: str | list[str] | TokenBatch | list[list[int]], *,
             max_new_tokens: int = 40, edit: AttentionEdit | None = None,
             ablation: HeadAblation | None = None, hooks: Hooks = (), chat: bool = False,
             batch_size: int = 8, engine: str = "auto") -> Generation:
    """Greedy continuations of `prompts`, batched, with an edit, an ablation or hooks on.

    prompts: texts (wrapped in the model's chat template if `chat`), or token ids (a TokenBatch
        or lists; used as they are). Batches are left-padded for decoding (a right-padded batch
        would continue from pads); with an `edit`, prompts are batched only with prompts of the
        same length, so the edit's key positions (which count the prompt's own tokens, after
        the chat template) mean the same slots in every row.
    Hooks and ablations apply at every decoding step (the prompt, then one token at a time).
    """
    token_lists, texts = _prompt_tokens(model, prompts, chat)
    if max_new_tokens < 1:
        raise InvalidInput(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    too_long = [len(t) for t in token_lists if len(t) + max_new_tokens > model.n_ctx]
    if too_long:
        raise InvalidInput(f"a prompt of {too_long[0]} tokens plus {max_new_tokens} new tokens "
                           f"exceeds the {model.n_ctx}-token context of {model.name}; shorten it")
    if ablation is not None and ablation.row_masks:
        raise InvalidInput("generate batches prompts itself, so per-row ablation masks have no "
                           "fixed rows: ablate the same heads in every prompt (heads=...)")
    probe = TokenBatch.from_lists(token_lists[:1], model.pad_token_id)
    plan = _plan(model, probe, "logits", hooks, (), ablation, edit, None, None, 0, None, None,
                 engine)
    end_ids = end_token_ids(model)
    chunks = _generation_batches([len(t) for t in token_lists], batch_size,
                                 same_length=edit is not None)
    replies: dict[int, list[int]] = {}
    first: dict[int, torch.Tensor] = {}
    with ExitStack() as stack, torch.no_grad():
        stack.enter_context(_polling_stop(model))
        if plan.engine == "kernel":
            stack.enter_context(kernel_attention(model, edit))
        stack.enter_context(model.bridge.hooks(fwd_hooks=plan.hooks))
        for chunk in chunks:
            check_stop()
            rows, logprobs = _generate_chunk(model, [token_lists[i] for i in chunk],
                                             max_new_tokens, end_ids)
            replies.update(zip(chunk, rows))
            first.update(zip(chunk, logprobs))
    order = range(len(token_lists))
    return Generation([model.tokenizer.decode(replies[i], skip_special_tokens=True) for i in order],
                      [replies[i] for i in order], torch.stack([first[i] for i in order]), texts,
                      None if edit is None else edit.to_dict())


def _generation_batches(lengths: list[int], batch_size: int, same_length: bool) -> list[list[int]]:
    """Prompt indices in batches of at most `batch_size`; with `same_length`, each batch holds
    prompts of one token length only (shortest first)."""
    if not same_length:
        return [list(range(i, min(i + batch_size, len(lengths))))
                for i in range(0, len(lengths), batch_size)]
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if not batches or len(batches[-1]) == batch_size or lengths[batches[-1][0]] != lengths[i]:
            batches.append([])
        batches[-1].append(i)
    return batches


def _prompt_tokens(model: Model, prompts, chat: bool) -> tuple[list[list[int]], list[str]]:
    """(token ids, prompt texts) of generate's prompts."""
    if isinstance(prompts, TokenBatch):
        prompts = prompts.token_lists()
    elif isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise InvalidInput("no prompts to generate from")
    if all(isinstance(p, str) for p in prompts):
        texts = [model.apply_chat_template(p) if chat else p for p in prompts]
        return [model.encode(t) for t in texts], prompts
    if chat:
        raise InvalidInput("chat=True wraps texts in the chat template; these prompts are "
                           "token ids already: pass texts, or chat=False")
    lists = [list(map(int, p)) for p in prompts]
    if any(not t for t in lists):
        raise InvalidInput("every prompt must have at least one token; got an empty prompt")
    return lists, [model.tokenizer.decode(t) for t in lists]


def _generate_chunk(model: Model, token_lists: list[list[int]], max_new_tokens: int,
                    end_ids: set[int]) -> tuple[list[list[int]], torch.Tensor]:
    """Greedy decoding of one left-padded batch: (generated ids per row, cut after the first end
    token; [rows, vocab] log-probabilities of the first generated token)."""
    width = max(len(t) for t in token_lists)
    ids = torch.full((len(token_lists), width), model.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), width), dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        ids[row, width - len(tokens):] = torch.tensor(tokens)
        mask[row, width - len(tokens):] = 1
    out = model.hf_model.generate(
        input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
        temperature=None, top_p=None, top_k=None, repetition_penalty=None,
        eos_token_id=sorted(end_ids), pad_token_id=model.pad_token_id,
        output_logits=True, return_dict_in_generate=True,
    )
    rows = []
    for row in out.sequences[:, width:].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in end_ids), len(row))
        rows.append(row[:cut])
    return rows, torch.log_softmax(out.logits[0].float(), dim=-1).cpu()


def end_token_ids(model: Model) -> set[int]:
    """The tokens that end a reply: the generation config's end tokens and the tokenizer's EOS."""
    ids = model.hf_model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
    if model.tokenizer.eos_token_id is not None:
        ids.add(model.tokenizer.eos_token_id)
    return ids


# ---- one prompt, token by token ----------------------------------------------------------------
@torch.no_grad()
def greedy_decode(model: Model, input_ids: list[int], max_new_tokens: int,
                  on_step=None, on_prefilled=None,
                  stop: Callable[[int], bool] | None = None) -> list[int]:
    """Greedy answer to one prompt, one token per forward, with a callback after each step
    (`generate` batches prompts and has none): the decoding of Wu et al.'s retrieval-head
    reference, whose per-step attention statistics `interp.heads.retrieval` reads.

    Prefills input_ids[:-1] (decoder only: no [seq, vocab] logits), calls `on_prefilled()`,
    then feeds the last prompt token and each generated token in turn; `on_step(step, token)`
    runs after each step (that step's attention statistics have been delivered by then). Stops
    after a token for which `stop(token)` is true (default: the model's end tokens); that token
    is kept, as in the reference. Hooks and edits apply as the caller's context sets them (e.g.
    `kernel_attention`).
    """
    from transformers import DynamicCache

    if stop is None:
        ends = end_token_ids(model)
        stop = ends.__contains__
    if max_new_tokens < 1:
        raise InvalidInput(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    device = model.device
    ids = torch.tensor([input_ids], device=device)
    cache = DynamicCache(config=model.hf_model.config)
    if ids.shape[1] > 1:
        with _polling_stop(model):
            model.hf_model.model(input_ids=ids[:, :-1], past_key_values=cache, use_cache=True)
    if on_prefilled is not None:
        on_prefilled()
    feed = ids[:, -1:]
    out: list[int] = []
    for step in range(max_new_tokens):
        check_stop()  # a retrieval scan decodes for minutes: Cancel must reach it between steps
        logits = model.hf_model(input_ids=feed, past_key_values=cache, use_cache=True,
                                logits_to_keep=1).logits
        token = int(logits[0, -1].argmax())
        out.append(token)
        if on_step is not None:
            on_step(step, token)
        if stop(token):
            break
        feed = torch.tensor([[token]], device=device)
    return out
