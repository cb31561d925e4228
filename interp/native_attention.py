"""Run a bridged model with Hugging Face's own attention modules, temporarily.

TransformerLens's bridge replaces each decoder layer's attention module, in place inside
`hf_model`, with a component that recomputes attention eagerly (so that `hook_pattern` exists).
That component never calls transformers' attention-function registry, so the workbench's fused
attention (`attn_implementation="interp"`, see `kernels.hf`) would be bypassed. Inside
`native_attention(model)` the original HF attention modules are put back (same weights: the
bridge wraps, it does not copy), so fused kernels, edits and statistics apply; on exit the
bridge's components return. Attention-level TransformerLens hooks (hook_pattern, hook_z) do not
fire inside the block; hooks elsewhere (residual stream, MLP) still do.
"""

from __future__ import annotations

from contextlib import contextmanager

from interp.models import Model


def _decoder_layers(model: Model):
    inner = getattr(model.hf_model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        from interp.errors import UnsupportedArchitecture

        raise UnsupportedArchitecture(
            f"{type(model.hf_model).__name__} has no `model.layers`; fused attention supports "
            "decoder-only models laid out like Llama, Qwen2 and Gemma"
        )
    return layers


@contextmanager
def native_attention(model: Model):
    """Swap the bridge's attention components for the HF modules they wrap, then swap back."""
    swapped = []
    try:
        for layer in _decoder_layers(model):
            bridged = layer.self_attn
            original = getattr(bridged, "original_component", None)
            if original is not None:
                layer.self_attn = original
                swapped.append((layer, bridged))
        yield model.hf_model
    finally:
        for layer, bridged in swapped:
            layer.self_attn = bridged
