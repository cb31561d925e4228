"""Ships: how much ablating one head moves the next-token distribution of harmful prompts.

After Zhou et al. 2024, "On the Role of Attention Heads in Large Language Model Safety"
(arXiv:2410.13708), and their reference code, github.com/ydyjya/SafetyHeadAttribution
(`lib/SHIPS/get_ships.py`, `lib/SHIPS/pd_diff.py`, `lib/utils/custommodel.py`). Written here
from those definitions; no code is copied.

Ships (per query): KL(p_base || p_ablated) of the next-token distribution at the prompt's last
position, as `pd_diff.kl_divergence` (base first; exact log-softmax here instead of adding 1e-12
to the probabilities). Dataset-level Ships = the mean over queries (`ShipsScan.ships`). The
ablations are `interp.ablation.ABLATIONS`; the paper's is "query_scale" (query * 1e-5).

Batched: the scan runs the decoder layer by layer (`interp.heads.safety.decoder`). The shared
prompt prefix is cached once per ablation; the residual stream entering layer L is computed
once, so ablating a head in layer L reruns only layers L..end, for all of that layer's heads and
a chunk of prompts in one forward (one row per (prompt, head), a per-row head mask in the hook).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from interp.ablation import ablate_heads, check_method, head_masks, head_means, masked_ablation_hooks
from interp.errors import InvalidInput
from interp.heads.safety.decoder import LayerDecoder, PrefixCache, split_shared_prefix
from interp.models import Model
from interp.names import Head, check_heads
from interp.refusal import RefusalTokens, first_token_logodds
from interp.tasks.base import PromptSet


def head_ablation(model: Model, heads, method: str = "query_scale", eps: float = 1e-5,
                  z_mean: torch.Tensor | None = None):
    """`interp.ablation.ablate_heads` with the paper's default ablation (query * eps) and a
    scan's `z_mean` for "mean":

        with head_ablation(model, [(8, 3)]):
            report = measure_refusal(model, harmful, tokens)
    """
    return ablate_heads(model, heads, method, means=z_mean, eps=eps)


def kl_divergence(base_logprobs: torch.Tensor, ablated_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(p_base || p_ablated) over the last dim, from log-probabilities: [..., V] -> [...]."""
    return (base_logprobs.exp() * (base_logprobs - ablated_logprobs)).sum(-1)


@dataclass
class ShipsScan:
    """Every head of the scanned layers, ablated one at a time on every prompt.

    kl:            [n_prompts, L, H] per-query Ships, KL(p_base || p_ablated); NaN where not scanned.
    final_hidden:  [L, H, n_prompts, d_model] final-norm last-position hidden states (Sahara).
    base_hidden:   [n_prompts, d_model] the same without the scan's ablation (background kept).
    logodds:       [n_prompts, L, H] refusal first-token log-odds when ablated (if tokens given).
    base_logodds:  [n_prompts] the same without the scan's ablation.
    z_mean:        [L, H, d_head] mean head output over the prompts' real positions (unablated).
    background:    heads ablated in every row, the scanned head on top (Sahara's later steps).
    """

    kl: torch.Tensor
    final_hidden: torch.Tensor
    base_hidden: torch.Tensor
    logodds: torch.Tensor | None
    base_logodds: torch.Tensor | None
    z_mean: torch.Tensor | None
    background: list[Head]
    layers: list[int]
    shared_prefix_tokens: int
    seconds: float

    @property
    def ships(self) -> torch.Tensor:
        """[L, H] dataset-level Ships: the mean over prompts (0 where not scanned)."""
        return torch.nan_to_num(self.kl.mean(0), nan=0.0)


@torch.no_grad()
def ships_scan(model: Model, prompts: PromptSet, method: str = "query_scale", eps: float = 1e-5,
               layers: list[int] | None = None, background=(), tokens: RefusalTokens | None = None,
               z_mean: torch.Tensor | None = None, rows_per_forward: int = 56,
               only=None, progress=None) -> ShipsScan:
    """Ablate each head of `layers` (default: all) alone, on top of `background`, on every prompt.

    only: scan just these (layer, head) pairs (default: every head of `layers`).

    rows_per_forward: (prompt, head) rows per forward; memory grows with it, speed saturates.
    progress: optional fn(fraction, message), e.g. a store run's `progress` (may raise to cancel).
    """
    start_time = time.perf_counter()
    if len(prompts) == 0:
        raise InvalidInput("no prompts to scan")
    background = check_heads(model, background)
    only = None if only is None else set(check_heads(model, only))
    layers = list(range(model.n_layers)) if layers is None else sorted(set(int(x) for x in layers))
    if any(not 0 <= x < model.n_layers for x in layers):
        raise InvalidInput(f"layers must lie in 0..{model.n_layers - 1}, got {layers}")
    check_method(method)
    decoder = LayerDecoder(model)
    n, n_layers, n_heads = len(prompts), model.n_layers, model.n_heads
    prefix, suffix = split_shared_prefix(prompts.tokens)
    n_prefix = len(prefix)
    last = suffix.final_positions

    # Unablated pass: the mean head outputs (for "mean" ablation), if not given.
    if method == "mean" and z_mean is None:
        z_mean = head_means(model, prompts.tokens)

    # Base pass (background ablated): residual stream entering every layer, prefix and suffix.
    masks = head_masks(model, background)
    hooks = masked_ablation_hooks(method, masks, eps, z_mean)
    prefix_resid, suffix_resid = [], []
    cache = None
    if n_prefix:
        cache = PrefixCache()
        decoder.run(decoder.embed(torch.tensor([prefix])), 0, 0, hooks, cache, prefix_resid)
        cache = PrefixCache(cache.recorded, torch.zeros(n, dtype=torch.long, device=model.device))
    hidden = decoder.run(decoder.embed(suffix.input_ids), 0, n_prefix, hooks, cache, suffix_resid)
    base_hidden = decoder.final(hidden, last)
    base_logprobs = decoder.logprobs(base_hidden)
    base_logodds = None if tokens is None else first_token_logodds(base_logprobs, tokens).cpu()

    kl = torch.full((n, n_layers, n_heads), float("nan"))
    final_hidden = torch.full((n_layers, n_heads, n, model.d_model), float("nan"))
    logodds = None if tokens is None else torch.full((n, n_layers, n_heads), float("nan"))

    def scanned(layer: int) -> list[int]:
        return [h for h in range(n_heads) if (layer, h) not in background
                and (only is None or (layer, h) in only)]

    total = max(1, sum(len(scanned(layer)) for layer in layers))
    done = 0
    for layer in layers:
        candidates = scanned(layer)
        if not candidates:
            continue
        n_cand = len(candidates)

        def masks_for(rows: int) -> dict[int, torch.Tensor]:
            # row i ablates candidate i % n_cand in `layer`, plus the background everywhere
            out = {x: m.expand(rows, -1).clone() for x, m in masks.items() if x >= layer}
            own = out.setdefault(layer, torch.zeros(rows, n_heads, dtype=torch.bool))
            own[torch.arange(rows), torch.tensor(candidates).repeat(rows // n_cand)] = True
            return out

        cache = None
        if n_prefix:
            cache = PrefixCache()
            decoder.run(prefix_resid[layer].expand(n_cand, -1, -1), layer, 0,
                        masked_ablation_hooks(method, masks_for(n_cand), eps, z_mean), cache)
            recorded = cache.recorded
        per_chunk = max(1, rows_per_forward // n_cand)
        for chunk_start in range(0, n, per_chunk):
            index = torch.arange(chunk_start, min(n, chunk_start + per_chunk))
            width = int(suffix.lengths[index].max())
            rows = len(index) * n_cand
            hidden = suffix_resid[layer][index, :width].repeat_interleave(n_cand, dim=0)
            if n_prefix:
                cache = PrefixCache(recorded, torch.arange(n_cand, device=model.device).repeat(len(index)))
            out = decoder.run(hidden, layer, n_prefix,
                              masked_ablation_hooks(method, masks_for(rows), eps, z_mean), cache)
            final = decoder.final(out, last[index].repeat_interleave(n_cand))
            logprobs = decoder.logprobs(final)
            base = base_logprobs[index.to(model.device)].repeat_interleave(n_cand, dim=0)
            shape = (len(index), n_cand)
            kl[index[:, None], layer, torch.tensor(candidates)[None]] = \
                kl_divergence(base, logprobs).cpu().view(shape)
            final_hidden[layer, torch.tensor(candidates)[:, None], index[None]] = \
                final.cpu().view(*shape, -1).transpose(0, 1)
            if tokens is not None:
                logodds[index[:, None], layer, torch.tensor(candidates)[None]] = \
                    first_token_logodds(logprobs, tokens).cpu().view(shape)
            done += n_cand * len(index) / n  # heads finished, counting prompt fractions
            if progress is not None:
                progress(min(done / total, 1.0), f"Ships: layer {layer}/{n_layers - 1}")
    return ShipsScan(kl, final_hidden, base_hidden.cpu(), logodds, base_logodds,
                     None if z_mean is None else z_mean.cpu(), background, layers, n_prefix,
                     time.perf_counter() - start_time)

