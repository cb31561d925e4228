"""Head ablation: switch attention heads off while the model runs, through TransformerLens hooks.

    means = head_means(model, reference_prompts)                 # [L, H, d_head]
    with ablate_heads(model, [(18, 6), (17, 3)], method="mean", means=means):
        logits = model.hf_model(ids).logits                       # also model.bridge(...), generate()

A head's contribution to the residual stream is its `hook_z` ([batch, pos, head, d_head], the
attention-weighted values before the output projection) times W_O. Ablating at `hook_z` removes
exactly that head and nothing else:
- "zero": z := 0, the head writes nothing (Olsson et al. 2022; TransformerLens demos);
- "mean": z := its mean over a reference prompt set, every position (Wang et al. 2022, IOI):
  the head writes its typical output, so what is removed is only the prompt-specific part.

The bridge replaces the HF attention modules in place, so these hooks fire in `model.bridge(...)`,
`model.hf_model(...)` and `model.hf_model.generate(...)` alike. They do not fire inside
`interp.native_attention.native_attention(model)` (the bridge's components are swapped out there);
to scale heads inside the fused kernels use `kernels.HeadScale` instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from contextlib import contextmanager

import torch

from interp.errors import InvalidInput
from interp.models import Model
from interp.tokens import TokenBatch

METHODS = ("zero", "mean")


def _z_hook(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def check_heads(model: Model, heads: Iterable) -> list[tuple[int, int]]:
    """Validate (layer, head) pairs against the model; returns them as sorted unique int pairs."""
    out = set()
    for pair in heads:
        try:
            layer, head = (int(x) for x in pair)
        except (TypeError, ValueError):
            raise InvalidInput(f"a head is a (layer, head) pair, got {pair!r}") from None
        if not (0 <= layer < model.n_layers and 0 <= head < model.n_heads):
            raise InvalidInput(f"head {(layer, head)} does not exist in {model.name} "
                               f"({model.n_layers} layers x {model.n_heads} heads, 0-based)")
        out.add((layer, head))
    return sorted(out)


@torch.no_grad()
def head_means(model: Model, prompts: TokenBatch | str | list[str], batch_size: int = 8) -> torch.Tensor:
    """[n_layers, n_heads, d_head] float32: each head's `hook_z` averaged over every real token
    position of `prompts` (pads excluded). The reference for `ablate_heads(method="mean")`."""
    batch = prompts if isinstance(prompts, TokenBatch) else model.tokenize(prompts)
    sums = torch.zeros(model.n_layers, model.n_heads, model.d_head, dtype=torch.float64)
    count = 0
    for sub_batch in batch.chunks(batch_size):
        on_device = sub_batch.to(model.device)
        weights = on_device.mask.to(torch.float64)                      # [b, pos]

        def make_hook(layer: int):
            def hook(z, hook=None):
                sums[layer] += torch.einsum("bphd,bp->hd", z.detach().to(torch.float64), weights).cpu()
                return None
            return hook

        with model.bridge.hooks(fwd_hooks=[(_z_hook(l), make_hook(l)) for l in range(model.n_layers)]):
            model.hf_model.model(input_ids=on_device.input_ids, attention_mask=on_device.mask.long(),
                                 use_cache=False)
        count += int(sub_batch.lengths.sum())
    return (sums / count).to(torch.float32)


@contextmanager
def ablate_heads(model: Model, heads: Iterable, method: str = "zero", means: torch.Tensor | None = None):
    """Within the block, the listed heads are ablated in every forward of the model.

    heads:  (layer, head) pairs; an empty list ablates nothing (a clean run).
    method: "zero" or "mean"; "mean" needs `means` from `head_means` ([L, H, d_head]).
    """
    if method not in METHODS:
        raise InvalidInput(f"ablation method {method!r} is unknown; use one of {METHODS}")
    chosen = check_heads(model, heads)
    if method == "mean":
        if means is None:
            raise InvalidInput("mean ablation needs `means`: compute them with "
                               "interp.ablation.head_means(model, reference_prompts)")
        expected = (model.n_layers, model.n_heads, model.d_head)
        if tuple(means.shape) != expected:
            raise InvalidInput(f"means must be [n_layers, n_heads, d_head] = {expected}, "
                               f"got {tuple(means.shape)}")
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, head in chosen:
        by_layer[layer].append(head)

    def make_hook(layer: int, layer_heads: list[int]):
        index = torch.tensor(layer_heads)

        def hook(z, hook=None):
            z = z.clone()
            if method == "zero":
                z[:, :, index, :] = 0
            else:
                z[:, :, index, :] = means[layer, index].to(device=z.device, dtype=z.dtype)
            return z
        return hook

    fwd_hooks = [(_z_hook(layer), make_hook(layer, hs)) for layer, hs in sorted(by_layer.items())]
    with model.bridge.hooks(fwd_hooks=fwd_hooks):
        yield chosen
