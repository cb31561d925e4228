"""A sparse autoencoder (SAE) with SAELens's parameters, in plain torch.

    f     = act((x - b_dec) @ W_enc + b_enc)     # features, [..., d_sae]
    x_hat = f @ W_dec + b_dec                    # reconstruction, [..., d_in]

Parameter names and shapes are SAELens's (`W_enc [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae,
d_in]`, `b_dec [d_in]`; `apply_b_dec_to_input=True`), so a saved SAE loads in SAELens and one
SAELens saved loads here (`circuits.sae.io`). Two activations:

- "standard" (ReLU): `act = relu`; sparsity comes from an L1 penalty while training.
- "topk" (Gao et al., "Scaling and evaluating sparse autoencoders", 2024): keep the k largest
  pre-activations (after ReLU), zero the rest, so L0 <= k by construction.

Decoder rows are kept at unit norm while training (`remove_parallel_grad` before each step,
`normalize_decoder` after it), as SAELens and Bricken et al. ("Towards Monosemanticity", 2023)
do: a feature's activation is then its coefficient along a unit direction, and the L1 penalty
cannot be dodged by shrinking features and growing decoder rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from interp.errors import InvalidInput

ARCHITECTURES = ("standard", "topk")


@dataclass
class SAEConfig:
    """What an SAE is and where it reads. Saved as SAELens's cfg.json (`circuits.sae.io`).

    hook_name:       TransformerLens hook the SAE reads (`blocks.6.hook_resid_pre`, ...).
    hook_head_index: for per-head hooks (`attn.hook_z`, `attn.hook_result`), the head, or None
                     (hook_z: all heads concatenated, SAELens's layout; hook_result: every head's
                     output is one example of an SAE shared by the layer's heads).
    exclude_first_position: the first token of every context (an attention sink with norms
                     several times the rest in SmolLM2) is neither trained on nor spliced.
    """

    d_in: int
    d_sae: int
    architecture: str = "topk"
    k: int | None = 32
    hook_name: str = ""
    hook_head_index: int | None = None
    model_name: str = ""
    model_id: str = ""
    context_size: int = 128
    prepend_bos: bool = False
    exclude_first_position: bool = True
    dataset_path: str = ""
    dtype: str = "float32"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise InvalidInput(f"SAE architecture must be one of {ARCHITECTURES}, got "
                               f"{self.architecture!r}")
        if self.d_in < 1 or self.d_sae < 1:
            raise InvalidInput(f"an SAE needs d_in >= 1 and d_sae >= 1, got {self.d_in}, {self.d_sae}")
        if self.architecture == "topk":
            if self.k is None or not 1 <= self.k <= self.d_sae:
                raise InvalidInput(f"a TopK SAE needs 1 <= k <= features ({self.d_sae}), got k={self.k}")
        elif self.k is not None:
            raise InvalidInput("k applies to TopK SAEs only; pass architecture='topk' or no k")


class SparseAutoencoder(nn.Module):
    """An SAE with SAELens's parameters (see module doc). `forward(x) -> (x_hat, features)`."""

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        self.W_enc = nn.Parameter(torch.empty(cfg.d_in, cfg.d_sae))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(torch.empty(cfg.d_sae, cfg.d_in))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Unit-norm random decoder rows, encoder = decoder transposed (Gao et al. section 2.4;
        SAELens's default), zero biases."""
        self.W_dec.copy_(torch.randn(self.cfg.d_sae, self.cfg.d_in, generator=generator))
        self.normalize_decoder()
        self.W_enc.copy_(self.W_dec.T)
        self.b_enc.zero_()
        self.b_dec.zero_()

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_in] -> [..., d_sae]: the encoder's output before the activation."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        if self.cfg.architecture == "standard":
            return torch.relu(pre)
        values, indices = pre.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, values.relu())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_in] -> [..., d_sae] feature activations (>= 0)."""
        return self.activate(self.pre_activations(x))

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """[..., d_sae] -> [..., d_in]."""
        return features @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encode(x)
        return self.decode(features), features

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale every decoder row to norm 1."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Drop the part of W_dec's gradient along each (unit) row: a step then moves a row
        around the sphere, not off it (SAELens `remove_gradient_parallel_to_decoder_directions`)."""
        if self.W_dec.grad is None:
            return
        along = (self.W_dec.grad * self.W_dec).sum(-1, keepdim=True)
        self.W_dec.grad.sub_(along * self.W_dec)

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def check_width(self, width: int, where: str) -> None:
        """Clear error when activations of `width` meet an SAE of another d_in."""
        if width != self.cfg.d_in:
            raise InvalidInput(
                f"{where} has width {width} but this SAE reads vectors of width {self.cfg.d_in} "
                f"(trained on {self.cfg.hook_name or 'another hook'}"
                f"{'' if self.cfg.hook_head_index is None else f' head {self.cfg.hook_head_index}'}"
                f" of {self.cfg.model_name or 'another model'}); use the hook and model it was "
                "trained on, or train one for this hook (train_sae)"
            )
