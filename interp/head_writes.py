"""What each attention head writes to the residual stream, on any supported architecture.

    write = head_writes(model, layer)      # fn(z [..., n_heads, d_head]) -> [..., n_heads, d_model]

Llama, Qwen and SmolLM2 add the heads' outputs to the residual as they are: head h writes
z_h @ W_O[h]. Gemma-3 normalises the summed attention output first (`post_attention_layernorm`,
an RMSNorm with gain g): the layer writes g * sum_h y_h / rms(sum_h y_h), y_h = z_h @ W_O[h], so
head h's share is g * y_h / rms(sum_h y_h), the rms being the layer's own on that forward. The
shares sum to the layer's write exactly; reading one share as "the head's effect" treats the
shared rms as frozen, as TransformerLens's `apply_ln_to_stack` does for the final norm.
Used by the logit lens / DLA (`interp.lens`) and the edge graph (`circuits.graph_hooks`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def norm_gain(norm_module, d_model: int) -> torch.Tensor:
    """[d_model] the elementwise gain g of an RMSNorm module (Llama's w, Gemma's 1 + w).

    Read off the module itself rather than its parameter, so either convention is right: a
    constant vector c * 1 has RMS c, so norm(c * 1) = g / sqrt(1 + eps / c^2), which is g to
    float precision for c = 1000."""
    probe = torch.full((1, 1, d_model), 1000.0, dtype=next(norm_module.parameters()).dtype)
    with torch.no_grad():
        return norm_module(probe)[0, 0].float()


def head_writes(model, layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """fn(z [..., n_heads, d_head]) -> [..., n_heads, d_model]: each head's write (module doc),
    computed from that forward's own z (no second hook needed for the norm's scale)."""
    block = model.bridge.blocks[layer]
    w_o = block.attn.W_O.detach()  # [n_heads, d_head, d_model]
    norm = getattr(block, "ln1_post", None)  # Gemma-3's norm after attention
    if norm is None:
        return lambda z: torch.einsum("...he,hed->...hd", z, w_o.to(z.dtype))
    gain = norm_gain(norm, model.d_model)
    eps = float(getattr(norm.config, "eps", 1e-6))

    def shares(z: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("...he,hed->...hd", z.float(), w_o.float())
        inverse_rms = torch.rsqrt(y.sum(-2).pow(2).mean(-1, keepdim=True) + eps)  # [..., 1]
        return (y * inverse_rms.unsqueeze(-2) * gain.to(y.device)).to(z.dtype)

    return shares
