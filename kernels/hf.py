"""Plug `kernels.attention` into transformers models as `attn_implementation="interp"`.

    register_interp_attention()                  # once; idempotent
    with attention_session(model, edit=AttentionEdit(...), stats=req, on_stats=collect):
        model.generate(...)                      # every attention layer runs kernels.attention

Masks: "interp" registers transformers' flash-attention mask function, which hands the attention
function the 2-D padding mask [B, Nk] (or None), never an N x N mask; causality and sliding
windows are applied inside the kernel from `module.is_causal` and the `sliding_window` argument
the model passes (Gemma-3's local layers). With a DynamicCache, a layer's keys are the last Nk
key slots of the sequence, so queries are the last Nq of them, as `attention` assumes.
StaticCache (keys padded to the cache length) is not supported.

ACT that finds its sinks in the forward (`SinkCalibration` without positions): a forward that
starts with an empty cache (a prefill, or any forward without a cache) finds each head's sinks
from its own attention in that forward, per sequence; the session keeps them (`session.sinks`,
per layer, over key slots). Forwards that continue a cache (decode steps, chunked prefill)
calibrate every new query row with those same sinks (new tokens are never sinks), so each row
still sums to 1 and a decode step equals the last row of a prefill with the same sinks.

Models wrapped by TransformerLens' TransformerBridge (what `interp.models.load_model` returns as
`hf_model`) compute attention in the bridge, not through transformers' registry; a session
routes those bridges back to the HF attention modules for its duration (see
`_route_bridges_to_hf`).
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import replace
from typing import Callable, Iterator

import torch

from .api import attention
from .edits import AttentionEdit, LayerEdit
from .stats import AttentionStatsRequest

NAME = "interp"

StatsSpec = AttentionStatsRequest | Callable[[int, int, int, int], AttentionStatsRequest | None] | None

_active: contextvars.ContextVar["_Session | None"] = contextvars.ContextVar(
    "interp_attention_session", default=None)


def register_interp_attention() -> None:
    """Register "interp" in transformers' attention and mask registries (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    if AttentionInterface._global_mapping.get(NAME) is not interp_attention_forward:
        AttentionInterface.register(NAME, interp_attention_forward)
    if AttentionMaskInterface._global_mapping.get(NAME) is not flash_attention_mask:
        AttentionMaskInterface.register(NAME, flash_attention_mask)


def interp_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                             value: torch.Tensor, attention_mask: torch.Tensor | None,
                             dropout: float = 0.0, scaling: float | None = None,
                             sliding_window: int | None = None, softcap: float | None = None,
                             **kwargs) -> tuple[torch.Tensor, None]:
    """transformers attention-function signature: q [B,H,Nq,D], k/v [B,Hkv,Nk,D] ->
    (out [B,Nq,H,D], None). Edits and statistics come from the active `attention_session`."""
    if dropout and module.training:
        raise NotImplementedError("interp attention has no dropout; call model.eval()")
    if attention_mask is not None and attention_mask.dim() != 2:
        raise NotImplementedError("interp attention takes a 2-D padding mask; got a "
                                  f"{attention_mask.dim()}-D mask (custom 4-D masks unsupported)")
    B, H, Nq, _ = query.shape
    Nk = key.shape[2]
    causal = kwargs.get("is_causal")
    causal = getattr(module, "is_causal", True) if causal is None else bool(causal)
    padding = None if attention_mask is None else attention_mask.to(torch.bool)

    session = _active.get()
    layer = getattr(module, "layer_idx", None)
    edit = stats = None
    if session is not None and layer is not None and session.owns(module):
        edit, stats = session.for_layer(layer, B, H, Nq, Nk, query.device)
    out, result = attention(query, key, value, causal=causal, scale=scaling,
                            key_padding_mask=padding, sliding_window=sliding_window,
                            softcap=softcap, edit=edit, stats=stats)
    if result and session is not None:
        session.deliver(layer, result)
    return out.transpose(1, 2).contiguous(), None


class _Session:
    """What one `attention_session` applies: edits, statistics requests, where results go."""

    def __init__(self, model: torch.nn.Module, edit: AttentionEdit | None, stats: StatsSpec,
                 on_stats: Callable[[int, dict], None] | None):
        self.edit = edit if edit is not None and edit.parts else None
        self.stats_spec = stats
        self.on_stats = on_stats
        self.stats: dict[int, dict[str, torch.Tensor]] = {}   # latest per layer, if no on_stats
        self._modules = {id(m) for m in model.modules()}
        self._edit_layers = self.edit.layers if self.edit is not None else frozenset()
        self._edit_cache: dict[tuple, tuple[int, LayerEdit]] = {}
        self.total_keys: int | None = None   # key slots after the current forward's tokens
        self.past_keys = 0                   # key slots already in the cache before it
        # ACT sinks found in the last forward that started without a cache: per layer
        # [B, H, S] bool over key slots 0..S-1 (heads without in-forward ACT: all False)
        self.sinks: dict[int, torch.Tensor] = {}
        self._finding: dict[int, tuple[int, bool]] = {}   # layer -> (key offset, strip "sinks")

    def owns(self, module: torch.nn.Module) -> bool:
        return id(module) in self._modules

    def on_forward(self, _module, args, kwargs) -> None:
        """Base-model pre-hook: record how many key slots this forward ends with."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        x = ids if ids is not None else kwargs.get("inputs_embeds")
        past = kwargs.get("past_key_values")
        past_len = 0
        if past is not None and hasattr(past, "get_seq_length"):
            past_len = int(past.get_seq_length())
        self.total_keys = None if x is None else past_len + x.shape[1]
        self.past_keys = past_len
        if past_len == 0:
            self.sinks = {}

    def for_layer(self, layer: int, batch: int, heads: int, n_queries: int, n_keys: int,
                  device) -> tuple[LayerEdit | None, AttentionStatsRequest | None]:
        stats = self.stats_spec
        if callable(stats):
            stats = stats(layer, batch, n_queries, n_keys)
        edit = self._layer_edit(layer, batch, heads, n_keys, device)
        if edit is not None and edit.finds_sinks:
            offset = self._key_offset(n_keys)
            kept = self.sinks.get(layer)
            if self.past_keys > 0 and kept is not None and kept.shape[:2] == (batch, heads):
                # continuing a sequence: the sinks found at its prefill, new keys never sinks
                mask = torch.zeros(batch, heads, n_keys, dtype=torch.bool, device=kept.device)
                known = kept[..., offset:offset + n_keys]
                mask[..., :known.shape[-1]] = known
                edit = replace(edit, sink_mask=mask.to(device), act_tau=None)
            else:   # find them in this call, and keep them for the decode steps
                self._finding[layer] = (offset, not (stats is not None and stats.sinks))
                stats = AttentionStatsRequest(sinks=True) if stats is None else replace(stats, sinks=True)
        return edit, stats

    def _key_offset(self, n_keys: int) -> int:
        """Slot of this layer's key 0 (a sliding-window cache holds only the last Nk slots)."""
        return 0 if self.total_keys is None else max(self.total_keys - n_keys, 0)

    def _layer_edit(self, layer, batch, heads, n_keys, device) -> LayerEdit | None:
        if layer not in self._edit_layers:
            return None
        offset = self._key_offset(n_keys)
        need = offset + n_keys
        key = (layer, batch, heads, str(device))
        cached = self._edit_cache.get(key)
        if cached is None or cached[0] < need:
            # materialize for a capacity past `need`, so decode steps only take views
            capacity = max(need, 2 * cached[0] if cached else 0, 64)
            cached = (capacity, self.edit.layer_edit(layer, batch, capacity, heads, device))
            self._edit_cache[key] = cached
        return cached[1].keys_slice(offset, offset + n_keys)

    def deliver(self, layer: int, result: dict[str, torch.Tensor]) -> None:
        finding = self._finding.pop(layer, None)
        if finding is not None:
            offset, strip = finding
            found = result["sinks"]
            if offset:   # slots before the layer's first key: never sinks
                found = torch.nn.functional.pad(found, (offset, 0))
            self.sinks[layer] = found
            if strip:
                result = {k: v for k, v in result.items() if k != "sinks"}
        if not result:
            return
        if self.on_stats is not None:
            self.on_stats(layer, result)
        else:
            self.stats[layer] = result


@contextlib.contextmanager
def attention_session(hf_model: torch.nn.Module, edit: AttentionEdit | None = None,
                      stats: StatsSpec = None,
                      on_stats: Callable[[int, dict], None] | None = None) -> Iterator[_Session]:
    """Run `hf_model` with "interp" attention, `edit` applied and `stats` collected.

    stats: an AttentionStatsRequest for every layer, or a callable
        (layer_idx, batch, n_queries, n_keys) -> AttentionStatsRequest | None.
    on_stats(layer_idx, stats_dict) receives each layer's statistics during the forward; the
        caller reduces and drops them. Without on_stats the session keeps only the latest
        result of each layer in `session.stats`.
    session.sinks: the ACT sinks found in the forward (see the module docstring).
    The previous attention implementation is restored on exit, also after an exception.
    """
    register_interp_attention()
    session = _Session(hf_model, edit, stats, on_stats)
    previous = hf_model.config._attn_implementation
    base = getattr(hf_model, "base_model", hf_model)
    hook = base.register_forward_pre_hook(session.on_forward, with_kwargs=True)
    token = _active.set(session)
    bridged = _route_bridges_to_hf(hf_model)
    try:
        hf_model.set_attn_implementation(NAME)
        yield session
    finally:
        for bridge in bridged:
            object.__delattr__(bridge, "forward")
        _active.reset(token)
        hook.remove()
        hf_model.set_attn_implementation(previous)


def _route_bridges_to_hf(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Let attention run through transformers' attention interface inside a TransformerBridge.

    TransformerLens' TransformerBridge replaces each HF attention module of the model it wraps
    (in place) by an attention bridge that recomputes attention itself, eagerly, N x N, to fire
    its hook_pattern. Inside a session such bridges forward to the HF module they wrap (their
    `original_component`), which calls the registered "interp" function; TransformerLens'
    attention hooks do not fire meanwhile. Returns the bridges whose `forward` was overridden.
    """
    routed = []
    for module in model.modules():
        original = getattr(module, "original_component", None)
        if (isinstance(original, torch.nn.Module) and "forward" not in vars(module)
                and type(module).__module__.startswith("transformer_lens")
                and "Attention" in type(module).__name__ and hasattr(original, "layer_idx")):
            # object.__setattr__: bridges pass plain attribute writes on to the wrapped module
            object.__setattr__(module, "forward", original.__call__)
            routed.append(module)
    return routed
