"""Head ablation: switch attention heads off while the model runs, through TransformerLens hooks.

    means = head_means(model, reference_prompts)                 # [L, H, d_head]
    with ablate_heads(model, [(18, 6), (17, 3)], method="mean", means=means):
        logits = run(model, tokens)                     # any interp.forward call: run, generate
    # the same for one call: run(model, tokens, ablation=HeadAblation(heads, "mean", means=means))

The ablations (`ABLATIONS`, one table for every caller), at every position of the prompt:
- "zero": the head's output `hook_z` := 0, the head writes nothing (Olsson et al. 2022;
  TransformerLens demos). A head's contribution to the residual stream is its `hook_z`
  ([batch, pos, head, d_head], the attention-weighted values before the output projection)
  times W_O, so ablating at `hook_z` removes exactly that head and nothing else.
- "mean": `hook_z` := its mean over a reference prompt set, every position (Wang et al. 2022,
  IOI): the head writes its typical output, so what is removed is only the prompt-specific part.
- "query_scale" (Zhou et al. 2024's safety-head ablation): the head's query `hook_q` is
  multiplied by eps (1e-5), so its attention becomes uniform over the causal prefix. Their
  reference (github.com/ydyjya/SafetyHeadAttribution, `lib/utils/custommodel.py`) scales after
  q_proj and before RoPE; RoPE is a per-position rotation, so scaling at `hook_q` (pre-RoPE
  here too) is the same.
- "query_mean": the head's query := the mean query over the layer's heads. The reference
  replaces heads one after another, so a second head in the same layer sees a mean that
  already includes the first replacement; here every replaced head gets the mean of the
  original queries (identical for single heads).

`mask_keys` is the other head intervention: the heads attend only to allowed keys (pre-softmax
scores at `hook_attn_scores`), as the sink and streaming checks need.

The bridge replaces the HF attention modules in place, so these hooks fire in every forward
(`interp.forward.run`, `run_batched`, `generate`). On its kernel engine the projection hooks
(`hook_q`, `hook_z`) still fire but the attention-internal ones (`hook_attn_scores`, so
`mask_keys`) do not, and `interp.forward` refuses that combination; to scale heads inside the
fused kernels use `kernels.HeadScale` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from interp.errors import InvalidInput
from interp.models import Model
from interp.names import Head, check_heads, hook_name
from interp.tokens import TokenBatch


@dataclass(frozen=True)
class Ablation:
    """One way to switch a head off: the activation it edits ("z": the head's output, "q": its
    query, both [batch, pos, n_heads, d_head]) and what it writes there."""

    name: str
    hook: str
    description: str


ABLATIONS: dict[str, Ablation] = {a.name: a for a in (
    Ablation("query_scale", "q", "query * eps: uniform attention over the prefix (Zhou et al. 2024)"),
    Ablation("query_mean", "q", "query := the mean query over the layer's heads"),
    Ablation("zero", "z", "output hook_z := 0"),
    Ablation("mean", "z", "output hook_z := its mean over reference prompts (head_means)"),
)}
METHODS = tuple(name for name, a in ABLATIONS.items() if a.hook == "z")
"""The output ablations ("zero", "mean"): those a causal check on any behaviour can use."""


def check_method(method: str) -> None:
    if method not in ABLATIONS:
        raise InvalidInput(f"unknown ablation method {method!r}; use one of {tuple(ABLATIONS)}")


def ablation_hook_name(method: str, layer: int) -> str:
    """The hook an ablation edits: the query (`hook_q`) or the head's output (`hook_z`)."""
    return hook_name(ABLATIONS[method].hook, layer)


def masked_ablation_hook(method: str, mask: torch.Tensor, eps: float, z_mean: torch.Tensor | None):
    """A hook on [rows, pos, n_heads, d_head] ablating head h of row r where mask[r, h].

    mask: [rows, n_heads] bool, or [1, n_heads] to ablate the same heads in every row.
    z_mean: [n_heads, d_head] for method "mean".
    """
    chosen = mask[:, None, :, None]

    def hook(activation: torch.Tensor, hook=None) -> torch.Tensor:
        where = chosen.to(activation.device)
        if method == "query_scale":
            return torch.where(where, activation * eps, activation)
        if method == "query_mean":
            return torch.where(where, activation.mean(dim=2, keepdim=True), activation)
        if method == "zero":
            return torch.where(where, torch.zeros((), dtype=activation.dtype), activation)
        return torch.where(where, z_mean.to(activation)[None, None], activation)
    return hook


def masked_ablation_hooks(method: str, masks: dict[int, torch.Tensor], eps: float,
                          z_mean: torch.Tensor | None) -> list:
    """(hook name, hook) pairs ablating, per layer, the heads where masks[layer] [rows, H] is
    True (a different head set per batch row: the batched Ships scan)."""
    return [(ablation_hook_name(method, layer), masked_ablation_hook(
        method, mask, eps, None if z_mean is None else z_mean[layer]))
        for layer, mask in sorted(masks.items()) if bool(mask.any())]


def head_masks(model: Model, heads: list[Head], rows: int = 1) -> dict[int, torch.Tensor]:
    """{layer: [rows, n_heads] bool}: True at the listed heads, in every row."""
    masks: dict[int, torch.Tensor] = {}
    for layer, head in heads:
        masks.setdefault(layer, torch.zeros(rows, model.n_heads, dtype=torch.bool))[:, head] = True
    return masks


@torch.no_grad()
def head_means(model: Model, prompts: TokenBatch | str | list[str], batch_size: int = 8) -> torch.Tensor:
    """[n_layers, n_heads, d_head] float32: each head's `hook_z` averaged over every real token
    position of `prompts` (pads excluded). The reference for `ablate_heads(method="mean")`."""
    from interp.forward import run  # interp.forward builds its ablations from this module

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

        run(model, on_device, output=None,
            hooks=[(hook_name("z", layer), make_hook(layer)) for layer in range(model.n_layers)])
        count += int(sub_batch.lengths.sum())
    return (sums / count).to(torch.float32)


@contextmanager
def ablate_heads(model: Model, heads: Iterable, method: str = "zero", means: torch.Tensor | None = None,
                 eps: float = 1e-5):
    """Within the block, the listed heads are ablated in every forward of the model (also inside
    `hf_model.generate`).

    heads:  (layer, head) pairs; an empty list ablates nothing (a clean run).
    method: one of `ABLATIONS`; "mean" needs `means` from `head_means` ([L, H, d_head]).
    eps:    the query scale of "query_scale".
    """
    check_method(method)
    chosen = check_heads(model, heads)
    if method == "mean":
        if means is None:
            raise InvalidInput("mean ablation needs `means` (z_mean) [n_layers, n_heads, d_head]: "
                               "compute them with interp.ablation.head_means(model, "
                               "reference_prompts), take a safety scan's z_mean, or use 'zero'")
        expected = (model.n_layers, model.n_heads, model.d_head)
        if tuple(means.shape) != expected:
            raise InvalidInput(f"means must be [n_layers, n_heads, d_head] = {expected}, "
                               f"got {tuple(means.shape)}")
    fwd_hooks = masked_ablation_hooks(method, head_masks(model, chosen), eps, means)
    with model.bridge.hooks(fwd_hooks=fwd_hooks):
        yield chosen


@contextmanager
def mask_keys(model: Model, heads: Iterable[Head], allowed: Callable[[int, int], torch.Tensor]):
    """Within the block, the listed heads attend only where `allowed(n_queries, n_keys)` [q, k]
    is True (plus nothing else), through the bridge's `hook_attn_scores` (pre-softmax scores).

    Rows left with no allowed key keep their original scores (nothing to renormalize onto).
    """
    by_layer: dict[int, list[int]] = {}
    for layer, head in check_heads(model, heads):
        by_layer.setdefault(layer, []).append(head)

    def make_hook(layer_heads: list[int]):
        index = torch.tensor(layer_heads)

        def hook(scores, hook=None):                       # [b, H, q, k]
            n_queries, n_keys = scores.shape[-2], scores.shape[-1]
            query_pos = torch.arange(n_keys - n_queries, n_keys)[:, None]
            causal = torch.arange(n_keys)[None, :] <= query_pos
            keep = allowed(n_queries, n_keys) & causal
            keep = (keep | ~keep.any(-1, keepdim=True)).to(scores.device)   # empty rows: as they were
            scores = scores.clone()
            chosen = scores[:, index]
            scores[:, index] = chosen.masked_fill(~keep, torch.finfo(scores.dtype).min)
            return scores
        return hook

    hooks = [(hook_name("attn_scores", layer), make_hook(hs)) for layer, hs in sorted(by_layer.items())]
    with model.bridge.hooks(fwd_hooks=hooks):
        yield

