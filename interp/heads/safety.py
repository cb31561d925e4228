"""Safety heads: Ships and Sahara, with a causal check by refusal rate.

After Zhou et al. 2024, "On the Role of Attention Heads in Large Language Model Safety"
(arXiv:2410.13708), and their reference code, github.com/ydyjya/SafetyHeadAttribution
(`lib/SHIPS/get_ships.py`, `lib/SHIPS/pd_diff.py`, `lib/Sahara/attribution.py`, `lib/Sahara/svd.py`,
`lib/utils/custommodel.py`). Written here from those definitions; no code is copied.

Ablating a head (`ABLATIONS`), at every position of the prompt:
- "query_scale" (the paper's default): the head's query is multiplied by eps (1e-5), so its
  attention becomes uniform over the causal prefix. In the reference the query is scaled after
  q_proj and before RoPE; RoPE is a per-position rotation, so scaling at `hook_q` (pre-RoPE here
  too) is the same.
- "query_mean": the head's query is replaced by the mean query over the layer's heads. The
  reference replaces heads one after another, so a second head in the same layer sees a mean
  that already includes the first replacement; here every replaced head gets the mean of the
  original queries (identical for single heads, the Ships case).
- "zero" / "mean": the head's output `hook_z` is zeroed, or replaced by its mean over the scanned
  prompts' real positions (`z_mean` [L, H, d_head]).

Ships (per query): KL(p_base || p_ablated) of the next-token distribution at the prompt's last
position, as `pd_diff.kl_divergence` (base first; exact log-softmax here instead of adding 1e-12
to the probabilities). Dataset-level Ships = the mean over queries (`HeadScores.scores`).

Sahara (dataset level): stack the final-norm hidden state at the last position of every prompt
into M [n_prompts, d_model] (HF `hidden_states[-1]`, which is after the final norm); the shift of
an ablation is the principal angle, in degrees, between the top left singular vectors of M_base
and M_ablated (`svd.compute_subspace_similarity`, rank 1; for rank r > 1 the r angles are
summed). Greedy search: add the head whose ablation, together with the heads already chosen,
shifts most from the UNablated M; repeat `steps` times (`attribution.safety_head_attribution`).

Batched: every scan runs the decoder layer by layer. The prompts' shared chat-template prefix
(system prompt, "<|im_start|>user\\n"...) is computed once per ablation and reused through a
key/value cache; the residual stream entering layer L is computed once, so ablating a head in
layer L reruns only layers L..end, for all of that layer's heads and a chunk of prompts in one
forward (one row per (prompt, head), a per-row head mask in the hook).
"""

from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from interp.ablation import ablate_heads, check_heads, head_means
from interp.errors import InvalidInput, UnsupportedArchitecture
from interp.heads.base import Detector, Progress, Prompts, as_prompt_set, check_context, param, params_json
from interp.models import Model
from interp.refusal import (RefusalTokens, calibrate_refusal_tokens, first_token_logodds,
                            greedy_generate, is_refusal, measure_refusal)
from interp.scores import HeadScores
from interp.tasks.base import PromptSet
from interp.tokens import TokenBatch

Head = tuple[int, int]
ABLATIONS = ("query_scale", "query_mean", "zero", "mean")
DETECTOR = "safety"


# ---- ablation hooks --------------------------------------------------------------------------
def _check_method(method: str, z_mean: torch.Tensor | None = None) -> None:
    if method not in ABLATIONS:
        raise InvalidInput(f"unknown ablation {method!r}; use one of {ABLATIONS}")
    if method == "mean" and z_mean is None:
        raise InvalidInput("mean ablation needs z_mean [n_layers, n_heads, d_head]: take it from "
                           "a scan (ShipsScan.z_mean, details['z_mean']) or "
                           "interp.ablation.head_means, or use method='zero'")


def ablation_hook_name(method: str, layer: int) -> str:
    """The hook an ablation edits: the query (`hook_q`) or the head's output (`hook_z`)."""
    return f"blocks.{layer}.attn.hook_q" if method.startswith("query") else f"blocks.{layer}.attn.hook_z"


def _ablation_hook(method: str, mask: torch.Tensor, eps: float, z_mean: torch.Tensor | None):
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


def _hooks_for(method: str, masks: dict[int, torch.Tensor], eps: float,
               z_mean: torch.Tensor | None) -> list:
    return [(ablation_hook_name(method, layer), _ablation_hook(
        method, mask, eps, None if z_mean is None else z_mean[layer]))
        for layer, mask in sorted(masks.items()) if bool(mask.any())]


def _masks_for_heads(model: Model, heads: list[Head], rows: int = 1) -> dict[int, torch.Tensor]:
    masks: dict[int, torch.Tensor] = {}
    for layer, head in heads:
        masks.setdefault(layer, torch.zeros(rows, model.n_heads, dtype=torch.bool))[:, head] = True
    return masks


@contextmanager
def head_ablation(model: Model, heads, method: str = "query_scale", eps: float = 1e-5,
                  z_mean: torch.Tensor | None = None):
    """Ablate `heads` in every forward (also inside `hf_model.generate`) while the block runs.

        with head_ablation(model, [(8, 3)]):
            report = measure_refusal(model, harmful, tokens)

    "zero" and "mean" are `interp.ablation.ablate_heads`; the query ablations are hooks here.
    """
    _check_method(method, z_mean)
    heads = check_heads(model, heads)
    if method in ("zero", "mean"):
        with ablate_heads(model, heads, method, means=z_mean):
            yield
        return
    with model.bridge.hooks(fwd_hooks=_hooks_for(method, _masks_for_heads(model, heads), eps, None)):
        yield


# ---- the layer-by-layer forward ----------------------------------------------------------------
class _PrefixCache:
    """A duck-typed HF cache for the bridge's attention (`update(k, v, layer_idx)` only).

    Recording mode keeps each layer's new keys/values (the shared prefix's). Replay mode
    prepends the recorded prefix keys/values, row `rows[i]` of them for batch row i.
    """

    def __init__(self, prefix: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
                 rows: torch.Tensor | None = None):
        self.prefix, self.rows = prefix, rows
        self.recorded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, keys, values, layer_idx, *args, **kwargs):
        if self.prefix is None:
            self.recorded[layer_idx] = (keys, values)
            return keys, values
        past_keys, past_values = self.prefix[layer_idx]
        return (torch.cat([past_keys.index_select(0, self.rows), keys], dim=2),
                torch.cat([past_values.index_select(0, self.rows), values], dim=2))


class _Decoder:
    """Runs a standard decoder (embed, layers, one rotary embedding, final norm, lm_head) from
    any layer on, with TransformerBridge hooks firing inside the layers."""

    def __init__(self, model: Model):
        core = getattr(model.hf_model, "model", None)
        parts = ("embed_tokens", "layers", "rotary_emb", "norm")
        layer_types = set(getattr(model.hf_model.config.get_text_config(), "layer_types", None)
                          or ["full_attention"])
        if core is None or any(not hasattr(core, p) for p in parts) or \
                not hasattr(model.hf_model, "lm_head") or layer_types != {"full_attention"}:
            raise UnsupportedArchitecture(
                f"the batched safety-head scan runs {model.name} "
                f"({type(model.hf_model).__name__}) layer by layer and needs a decoder with one "
                "rotary embedding and full attention in every layer (Llama, Qwen2, Mistral, ...); "
                "sliding-window or multimodal stacks are not supported")
        self.model, self.core = model, core

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.core.embed_tokens(ids.to(self.model.device))

    def run(self, hidden: torch.Tensor, start: int, offset: int, hooks: list,
            cache: _PrefixCache | None, record: list | None = None) -> torch.Tensor:
        """hidden [rows, pos, d_model] entering layer `start`, at positions offset.. -> the last
        layer's output [rows, pos, d_model]. `record` collects the input of every layer run."""
        positions = torch.arange(offset, offset + hidden.shape[1], device=hidden.device)[None]
        rotary = self.core.rotary_emb(hidden, positions)
        with self.model.bridge.hooks(fwd_hooks=hooks):
            for layer in self.core.layers[start:]:
                if record is not None:
                    record.append(hidden)
                # attention_mask=None: the bridge applies its own causal mask (offset by the
                # cached prefix); right padding means real tokens never see pads.
                out = layer(hidden, attention_mask=None, position_embeddings=rotary,
                            position_ids=positions, past_key_values=cache)
                hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def final(self, hidden: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """[rows, pos, d] -> final-norm hidden state at positions `last` [rows]: [rows, d]."""
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]
        return self.core.norm(picked[:, None])[:, 0].float()

    def logprobs(self, final_hidden: torch.Tensor) -> torch.Tensor:
        logits = self.model.hf_model.lm_head(final_hidden.to(self.model.dtype)[:, None])[:, 0]
        return torch.log_softmax(logits.float(), dim=-1)


def _split_shared_prefix(batch: TokenBatch) -> tuple[list[int], TokenBatch]:
    """The tokens every prompt starts with (at most all but each prompt's last) and the rest."""
    lists = batch.token_lists()
    shortest = min(len(t) for t in lists)
    n = 0
    while n < shortest - 1 and all(t[n] == lists[0][n] for t in lists):
        n += 1
    return lists[0][:n], TokenBatch.from_lists([t[n:] for t in lists], batch.pad_id)


# ---- Ships -------------------------------------------------------------------------------------
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
    if method not in ABLATIONS:
        raise InvalidInput(f"unknown ablation {method!r}; use one of {ABLATIONS}")
    decoder = _Decoder(model)
    n, n_layers, n_heads = len(prompts), model.n_layers, model.n_heads
    prefix, suffix = _split_shared_prefix(prompts.tokens)
    n_prefix = len(prefix)
    last = suffix.final_positions

    # Unablated pass: the mean head outputs (for "mean" ablation), if not given.
    if method == "mean" and z_mean is None:
        z_mean = head_means(model, prompts.tokens)

    # Base pass (background ablated): residual stream entering every layer, prefix and suffix.
    masks = _masks_for_heads(model, background)
    hooks = _hooks_for(method, masks, eps, z_mean)
    prefix_resid, suffix_resid = [], []
    cache = None
    if n_prefix:
        cache = _PrefixCache()
        decoder.run(decoder.embed(torch.tensor([prefix])), 0, 0, hooks, cache, prefix_resid)
        cache = _PrefixCache(cache.recorded, torch.zeros(n, dtype=torch.long, device=model.device))
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
            cache = _PrefixCache()
            decoder.run(prefix_resid[layer].expand(n_cand, -1, -1), layer, 0,
                        _hooks_for(method, masks_for(n_cand), eps, z_mean), cache)
            recorded = cache.recorded
        per_chunk = max(1, rows_per_forward // n_cand)
        for chunk_start in range(0, n, per_chunk):
            index = torch.arange(chunk_start, min(n, chunk_start + per_chunk))
            width = int(suffix.lengths[index].max())
            rows = len(index) * n_cand
            hidden = suffix_resid[layer][index, :width].repeat_interleave(n_cand, dim=0)
            if n_prefix:
                cache = _PrefixCache(recorded, torch.arange(n_cand, device=model.device).repeat(len(index)))
            out = decoder.run(hidden, layer, n_prefix,
                              _hooks_for(method, masks_for(rows), eps, z_mean), cache)
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


# ---- Sahara ------------------------------------------------------------------------------------
def principal_angle(base: torch.Tensor, ablated: torch.Tensor, rank: int = 1) -> torch.Tensor:
    """Degrees between the top-`rank` left singular subspaces of base [n, d] and ablated [..., n, d].

    As `svd.compute_subspace_similarity` of the reference: U1[:, :r]^T U2[:, :r] has the cosines
    of the principal angles as singular values; angle = arccos, summed over the r angles.
    """
    if base.shape[-2] < 2:
        raise InvalidInput("Sahara needs at least 2 prompts (the singular vectors live in prompt "
                           "space; with one prompt every angle is 0)")
    u_base = torch.linalg.svd(base.double(), full_matrices=False).U[..., :rank]
    u_ablated = torch.linalg.svd(ablated.double(), full_matrices=False).U[..., :rank]
    cosines = torch.linalg.svdvals(u_base.transpose(-1, -2) @ u_ablated)
    return torch.rad2deg(torch.arccos(cosines.clamp(-1.0, 1.0))).sum(-1).float()


def sahara_shifts(scan: ShipsScan, unablated_hidden: torch.Tensor, rank: int = 1) -> torch.Tensor:
    """[L, H] angle of each scanned ablation (with the scan's background) from the unablated M."""
    angles = torch.zeros(scan.final_hidden.shape[:2])
    for layer in scan.layers:
        scanned = ~torch.isnan(scan.final_hidden[layer, :, 0, 0])
        if scanned.any():
            angles[layer, scanned] = principal_angle(unablated_hidden,
                                                     scan.final_hidden[layer, scanned], rank)
    return angles


@dataclass
class SaharaResult:
    """The greedy head set: heads[i] was added at step i, shifting the subspace by angles[i]."""

    heads: list[Head]
    angles: list[float]
    step_scores: list[torch.Tensor] = field(default_factory=list)  # [L, H] per step

    def to_json(self) -> dict:
        return {"heads": [list(h) for h in self.heads], "angles": self.angles}


def sahara(model: Model, prompts: PromptSet, steps: int = 3, method: str = "query_scale",
           eps: float = 1e-5, rank: int = 1, layers: list[int] | None = None,
           first_scan: ShipsScan | None = None, z_mean: torch.Tensor | None = None,
           candidates: int | None = None, progress=None) -> SaharaResult:
    """Greedy Sahara search for `steps` heads (lib/Sahara/attribution.py's `search_step`).

    first_scan: a `ships_scan` of the same prompts, method and eps with no background; its
        ablated hidden states are step 1's candidates, so Ships + Sahara share that scan.
    candidates: steps after the first consider only the heads with the `candidates` largest
        first-step angles (None: every head, as the reference; each step is then a full scan).
    """
    if steps < 1:
        raise InvalidInput(f"Sahara needs steps >= 1, got {steps}")
    chosen: list[Head] = []
    angles: list[float] = []
    step_scores = []
    scan = first_scan
    if scan is None or scan.background:
        scan = ships_scan(model, prompts, method, eps, layers, z_mean=z_mean)
    unablated = scan.base_hidden
    z_mean = scan.z_mean if z_mean is None else z_mean
    pool = None
    for step in range(steps):
        if step > 0:
            def step_progress(frac, msg, step=step):
                if progress is not None:
                    progress((step + frac) / steps, f"Sahara step {step + 1}/{steps}: {msg}")
            scan = ships_scan(model, prompts, method, eps, layers, background=chosen,
                              z_mean=z_mean, only=pool, progress=step_progress)
        shifts = sahara_shifts(scan, unablated, rank)
        if step == 0 and candidates is not None:
            pool = [(h["layer"], h["head"]) for h in _top_heads(shifts, candidates)]
        if pool is not None:
            allowed = torch.zeros_like(shifts, dtype=torch.bool)
            allowed[tuple(torch.tensor(pool).T)] = True
            shifts = torch.where(allowed, shifts, torch.full((), float("-inf")))
        for layer, head in chosen:
            shifts[layer, head] = float("-inf")
        best = int(torch.argmax(shifts))
        chosen.append((best // model.n_heads, best % model.n_heads))
        angles.append(float(shifts.flatten()[best]))
        step_scores.append(torch.where(torch.isinf(shifts), torch.zeros(()), shifts))
    return SaharaResult(chosen, angles, step_scores)


# ---- the detector ------------------------------------------------------------------------------
def default_harmful_prompts(model: Model) -> PromptSet:
    from interp.tasks.safety import default_instructions, safety_prompt_set

    return safety_prompt_set(model, default_instructions("harmful"), "harmful")


def detect(model: Model, prompts: PromptSet | None = None, method: str = "query_scale",
           eps: float = 1e-5, sahara_steps: int = 0, sahara_rank: int = 1,
           layers: list[int] | None = None, tokens: RefusalTokens | None = None,
           progress=None, sahara_candidates: int | None = None,
           rows_per_forward: int = 56) -> HeadScores:
    """The `safety` detector: dataset-level Ships of every head on harmful chat prompts.

    prompts: harmful prompts the model refuses (default: the project's own harmful set).
    sahara_steps: also run Sahara's greedy search for this many heads (0: only its first-step
        angles, which come free with the Ships scan).
    tokens: refusal/compliance tokens (`interp.refusal.calibrate_refusal_tokens`); with them the
        details also hold each ablation's refusal log-odds.
    """
    prompts = default_harmful_prompts(model) if prompts is None else prompts
    scan = ships_scan(model, prompts, method, eps, layers, tokens=tokens,
                      rows_per_forward=rows_per_forward,
                      progress=None if progress is None else
                      (lambda f, m: progress(f / (1 + sahara_steps), m)))
    details = {"ships_per_prompt": scan.kl,
               "sahara_angle": sahara_shifts(scan, scan.base_hidden, sahara_rank)}
    info = {"scan_seconds": round(scan.seconds, 1), "n_prompts": len(prompts),
            "shared_prefix_tokens": scan.shared_prefix_tokens,
            "sahara_first_step_top": _top_heads(details["sahara_angle"], 5)}
    if scan.z_mean is not None:
        details["z_mean"] = scan.z_mean
    if tokens is not None:
        details["refusal_logodds_ablated"] = scan.logodds
        details["refusal_logodds_base"] = scan.base_logodds
        info["refusal_tokens"] = tokens.to_json()
    if sahara_steps > 0:
        start = time.perf_counter()
        result = sahara(model, prompts, sahara_steps, method, eps, sahara_rank, layers,
                        first_scan=scan, candidates=sahara_candidates, progress=None if progress is None else
                        (lambda f, m: progress((1 + f * sahara_steps) / (1 + sahara_steps), m)))
        info["sahara"] = result.to_json()
        info["sahara_seconds"] = round(time.perf_counter() - start, 1)
    params = {"method": method, "eps": eps, "sahara_steps": sahara_steps,
              "sahara_rank": sahara_rank, "sahara_candidates": sahara_candidates,
              "layers": scan.layers}
    return HeadScores(DETECTOR, scan.ships, model.model_id, params, prompts.hash, details, info)


def _top_heads(scores: torch.Tensor, k: int) -> list[dict]:
    values, index = torch.topk(scores.flatten(), min(k, scores.numel()))
    n_heads = scores.shape[1]
    return [{"layer": int(i) // n_heads, "head": int(i) % n_heads, "score": round(float(v), 4)}
            for v, i in zip(values, index)]


# ---- the causal check --------------------------------------------------------------------------
@torch.no_grad()
def continuation_nll(model: Model, prompts: PromptSet, continuations: list[list[int]]) -> torch.Tensor:
    """[n] mean negative log-likelihood per token of each continuation under the model as it is
    now (call outside any ablation for the unablated model's judgement); NaN if empty."""
    lists = [p + c for p, c in zip(prompts.tokens.token_lists(), continuations)]
    batch = TokenBatch.from_lists(lists, model.pad_token_id).to(model.device)
    logits = model.hf_model(batch.input_ids, attention_mask=batch.mask.long()).logits.float()
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
    targets = batch.input_ids[:, 1:]
    token_lp = logprobs.gather(-1, targets[..., None])[..., 0].cpu()
    out = torch.full((len(lists),), float("nan"))
    for row, (prompt_len, cont) in enumerate(zip(prompts.tokens.lengths.tolist(), continuations)):
        if cont:
            out[row] = -token_lp[row, prompt_len - 1: prompt_len - 1 + len(cont)].mean()
    return out


def _agreement(base: list[list[int]], other: list[list[int]]) -> tuple[float, float]:
    """(exact-match rate, mean fraction of the base reply reproduced before the first change)."""
    exact, prefix = [], []
    for a, b in zip(base, other):
        exact.append(float(a == b))
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        prefix.append(same / max(len(a), 1))
    return sum(exact) / len(exact), sum(prefix) / len(prefix)


def _condition(model, heads, method, eps, z_mean, harmful, harmless, tokens, max_new_tokens,
               batch_size, baseline=None) -> dict:
    with head_ablation(model, heads, method, eps, z_mean):
        harmful_report = measure_refusal(model, harmful, tokens, max_new_tokens, batch_size)
        harmless_gen = greedy_generate(model, harmless, max_new_tokens, batch_size)
    nll = continuation_nll(model, harmless, harmless_gen.token_ids)
    result = {
        "heads": [list(h) for h in heads],
        "harmful": harmful_report.summary(),
        "harmless_refusal_rate_generation": sum(map(is_refusal, harmless_gen.texts)) / len(harmless),
        "harmless_perplexity_under_unablated": float(torch.exp(torch.nanmean(nll))),
        "_harmful_report": harmful_report,
        "_harmless_ids": harmless_gen.token_ids,
        "_harmless_texts": harmless_gen.texts,
    }
    if baseline is not None:
        exact, prefix = _agreement(baseline["_harmless_ids"], harmless_gen.token_ids)
        result["harmless_same_as_baseline"] = exact
        result["harmless_prefix_kept"] = prefix
        base_refused = baseline["_harmful_report"].refused_by_generation
        if base_refused.any():
            flips = (~harmful_report.refused_by_generation & base_refused).sum()
            result["harmful_flip_rate_generation"] = float(flips / base_refused.sum())
        base_refused = baseline["_harmful_report"].refused_by_logodds
        if base_refused.any():
            flips = (~harmful_report.refused_by_logodds & base_refused).sum()
            result["harmful_flip_rate_logodds"] = float(flips / base_refused.sum())
    return result


def compliance_multiplier(baseline_refusal: float, ablated_refusal: float) -> float | None:
    """How many times more harmful prompts are answered when ablated (the paper's "16x").
    None when the baseline answers none (the ratio is unbounded; report counts instead)."""
    base = 1.0 - baseline_refusal
    return None if base <= 0 else (1.0 - ablated_refusal) / base


def verify(model: Model, scores: HeadScores, harmful: PromptSet, harmless: PromptSet,
           tokens: RefusalTokens, ks=(1, 3), n_random: int = 2, seed: int = 0,
           method: str | None = None, eps: float | None = None, max_new_tokens: int = 24,
           batch_size: int = 8, progress=None) -> dict:
    """Refusal (both metrics) on held-out harmful prompts with the top-k safety heads ablated vs
    k random heads, and the harmless prompts' replies: refusal rate, perplexity of the reply
    under the unablated model, and agreement with the unablated reply.
    """
    method = method or scores.params.get("method", "query_scale")
    eps = scores.params.get("eps", 1e-5) if eps is None else eps
    z_mean = scores.details.get("z_mean")
    top = scores.top_heads(max(ks))
    rng = random.Random(seed)
    others = [(x, h) for x in range(model.n_layers) for h in range(model.n_heads)
              if (x, h) not in top]
    plan = [("baseline", [])]
    for k in ks:
        plan.append((f"top{k}", top[:k]))
        plan += [(f"random{k}_{i}", rng.sample(others, k)) for i in range(n_random)]
    conditions: dict[str, dict] = {}
    for i, (name, heads) in enumerate(plan):
        if progress is not None:
            progress(i / len(plan), f"causal check: {name}")
        conditions[name] = _condition(model, heads, method, eps, z_mean, harmful, harmless, tokens,
                                      max_new_tokens, batch_size, conditions.get("baseline"))
    base = conditions["baseline"]["harmful"]
    summary = {}
    for k in ks:
        top_k = conditions[f"top{k}"]
        randoms = [conditions[f"random{k}_{i}"] for i in range(n_random)]
        row = {"heads": top_k["heads"], "random_heads": [r["heads"] for r in randoms]}
        for metric in ("logodds", "generation"):
            key = f"refusal_rate_{metric}"
            row[f"{key}_top"] = top_k["harmful"][key]
            row[f"{key}_random"] = _mean([r["harmful"][key] for r in randoms])
            row[f"multiplier_{metric}_top"] = compliance_multiplier(base[key], top_k["harmful"][key])
            row[f"multiplier_{metric}_random"] = compliance_multiplier(
                base[key], row[f"{key}_random"]) if randoms else None
        for key in ("harmful_flip_rate_logodds", "harmful_flip_rate_generation",
                    "harmless_perplexity_under_unablated", "harmless_same_as_baseline",
                    "harmless_prefix_kept", "harmless_refusal_rate_generation"):
            row[f"{key}_top"] = top_k.get(key)
            row[f"{key}_random"] = _mean([r.get(key) for r in randoms])
        summary[f"top{k}"] = row
    clean = {name: {k: v for k, v in c.items() if not k.startswith("_")}
             for name, c in conditions.items()}
    return {"method": method, "eps": eps, "n_harmful": len(harmful), "n_harmless": len(harmless),
            "max_new_tokens": max_new_tokens, "baseline": clean["baseline"], "summary": summary,
            "conditions": clean}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(values) / len(values) if values else None


# ---- the whole analysis: calibrate, select, scan, check ---------------------------------------
@torch.no_grad()
def last_position_logprobs(model: Model, prompts: PromptSet, batch_size: int = 16) -> torch.Tensor:
    """[n, vocab] next-token log-probabilities at each prompt's last token (active hooks apply).
    The unembedding runs at the last positions only: for Qwen's 152k vocabulary it costs as
    much as the rest of the model when applied at every position."""
    out = []
    for sub in prompts.tokens.chunks(batch_size):
        sub = sub.to(model.device)
        hidden = model.hf_model.model(input_ids=sub.input_ids, attention_mask=sub.mask.long(),
                                      use_cache=False).last_hidden_state
        last = hidden[torch.arange(sub.batch_size, device=hidden.device), sub.final_positions]
        out.append(torch.log_softmax(model.hf_model.lm_head(last).float(), dim=-1).cpu())
    return torch.cat(out)


def first_token_refusal(model: Model, prompts: PromptSet, tokens: RefusalTokens,
                        batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward, no generation: ([n] refusal log-odds, [n] bool: the most likely first token
    is a refusal start, i.e. greedy decoding would begin a refusal)."""
    logprobs = last_position_logprobs(model, prompts, batch_size)
    greedy_refuses = torch.isin(logprobs.argmax(-1), torch.tensor(tokens.refusal))
    return first_token_logodds(logprobs, tokens), greedy_refuses


def rank_refused(model: Model, prompts: PromptSet, tokens: RefusalTokens) -> list[int]:
    """Indices of the prompts whose greedy reply starts with a refusal token, the most confident
    refusals (highest log-odds) first."""
    logodds, greedy_refuses = first_token_refusal(model, prompts, tokens)
    order = torch.argsort(logodds, descending=True).tolist()
    return [i for i in order if greedy_refuses[i]]


@dataclass
class RefusalSplits:
    """Disjoint harmful/harmless splits and what calibration found (see `select_refusing`)."""

    tokens: RefusalTokens
    train: PromptSet              # harmful prompts the model starts refusing, most confident first
    harmful_test: list[str]
    harmless_test: list[str]
    selection: str                # how `train` was chosen, in words


def select_refusing(model: Model, harmful: list[str], harmless: list[str],
                    harmful_test: list[str] | None = None, harmless_test: list[str] | None = None,
                    n_calibration: int = 8, n_train: int = 16, n_test: int = 16, seed: int = 0,
                    max_new_tokens: int = 24, batch_size: int = 16,
                    n_pool: int | None = None) -> RefusalSplits:
    """Steps 1-2 of the analysis: calibrate refusal tokens, then pick training prompts.

    1. Calibration split (harmful + harmless): greedy replies -> refusal/compliance tokens.
    2. Training prompts: harmful instructions (disjoint from calibration and test) whose greedy
       reply starts with a refusal token; the `n_train` most confident (highest log-odds), so the
       next-token distribution Ships compares is mostly the refusal decision.
    *_test default to splits of harmful/harmless. n_pool: harmful instructions screened for
    step 2 (default 4 * n_train, at most what is left; each costs a forward).
    """
    from interp.tasks.safety import safety_prompt_set, split_instructions

    sizes = {"calibration": n_calibration}
    if harmful_test is None:
        sizes["test"] = n_test
    available = len(harmful) - sum(sizes.values())
    n_pool = min(available, 4 * n_train if n_pool is None else n_pool)
    harmful_split = split_instructions(harmful, {**sizes, "pool": max(n_pool, 0)}, seed)
    harmful_test = harmful_split.get("test", harmful_test)[:n_test]
    sizes = {"calibration": n_calibration}
    if harmless_test is None:
        sizes["test"] = n_test
    harmless_split = split_instructions(harmless, sizes, seed)
    harmless_test = harmless_split.get("test", harmless_test)[:n_test]

    tokens = calibrate_refusal_tokens(
        model, safety_prompt_set(model, harmful_split["calibration"], "harmful"),
        safety_prompt_set(model, harmless_split["calibration"], "harmless"),
        max_new_tokens, batch_size)
    pool = safety_prompt_set(model, harmful_split["pool"], "harmful")
    refusing = rank_refused(model, pool, tokens)
    chosen = refusing[:n_train]
    if len(chosen) < 2:
        raise InvalidInput(f"{model.name} starts a refusal on only {len(chosen)} of {len(pool)} "
                           "harmful training prompts; Ships/Sahara need at least 2: give more "
                           "harmful prompts or use a model that refuses")
    train = safety_prompt_set(model, [harmful_split["pool"][i] for i in chosen], "harmful")
    selection = (f"the {len(chosen)} most confident of the {len(refusing)} refusals (greedy first "
                 f"token) among {len(pool)} pool prompts")
    return RefusalSplits(tokens, train, harmful_test, harmless_test, selection)


def safety_analysis(model: Model, harmful: list[str] | None = None,
                    harmless: list[str] | None = None, harmful_test: list[str] | None = None,
                    harmless_test: list[str] | None = None, n_calibration: int = 8,
                    n_train: int = 16, n_test: int = 16, seed: int = 0,
                    method: str = "query_scale", eps: float = 1e-5, sahara_steps: int = 3,
                    sahara_candidates: int | None = None, ks=(1, 3), n_random: int = 2,
                    max_new_tokens: int = 24, run_verify: bool = True, batch_size: int = 16,
                    layers: list[int] | None = None, n_pool: int | None = None,
                    progress=None) -> HeadScores:
    """Ships + Sahara on harmful prompts the model refuses, then the causal check.

    1-2. `select_refusing`: refusal tokens from a calibration split, training prompts the model
    refuses. 3. `detect` on them (Ships, Sahara; `layers` restricts the scan), 4. `verify` on
    held-out harmful/harmless prompts (both refusal metrics, top-k vs random-k).
    harmful/harmless default to the project's own sets; *_test default to a split of them.
    """
    from interp.tasks.safety import default_instructions, safety_prompt_set

    harmful = default_instructions("harmful") if harmful is None else harmful
    harmless = default_instructions("harmless") if harmless is None else harmless
    report = progress or (lambda f, m: None)
    report(0.0, "calibrating refusal tokens on the model's own replies")
    splits = select_refusing(model, harmful, harmless, harmful_test, harmless_test, n_calibration,
                             n_train, n_test, seed, max_new_tokens, batch_size, n_pool)
    scan_share = 0.6 if run_verify else 1.0
    scores = detect(model, splits.train, method, eps, sahara_steps, 1, layers, splits.tokens,
                    progress=lambda f, m: report(0.05 + (scan_share - 0.05) * f, m),
                    sahara_candidates=sahara_candidates)
    scores.info.update({
        "train_instructions": [m["instruction"] for m in splits.train.metadata],
        "test_instructions": splits.harmful_test,
        "train_selection": splits.selection, "n_calibration": n_calibration, "seed": seed,
    })
    if run_verify:
        scores.verify = verify(
            model, scores, safety_prompt_set(model, splits.harmful_test, "harmful"),
            safety_prompt_set(model, splits.harmless_test, "harmless"), splits.tokens, ks,
            n_random, seed, method, eps, max_new_tokens, batch_size,
            progress=lambda f, m: report(scan_share + (1 - scan_share) * f, m))
    return scores


# ---- the generic causal check (interp.heads.verify) ---------------------------------------------
def refusal_tokens_of(model: Model, scores: HeadScores, calibration: int = 8,
                      max_new_tokens: int = 24) -> RefusalTokens:
    """The refusal/compliance tokens a scan was scored with (stored by the detector's default
    path and by `safety_analysis`), or, for a scan on the caller's own prompts, calibrated now
    on the last `calibration` instructions of the project's default harmful and harmless sets."""
    from interp.tasks.safety import default_instructions, safety_prompt_set

    stored = scores.info.get("refusal_tokens")
    if stored:
        return RefusalTokens.from_json(stored)
    harmful = safety_prompt_set(model, default_instructions("harmful")[-calibration:], "harmful")
    harmless = safety_prompt_set(model, default_instructions("harmless")[-calibration:], "harmless")
    return calibrate_refusal_tokens(model, harmful, harmless, max_new_tokens)


def refusal_measure(model: Model, scores: HeadScores, n_prompts: int, prompts=None,
                    calibration: int = 8):
    """(heads -> mean first-token refusal log-odds on held-out harmful prompts with those heads
    ablated the scan's way, the prompt count, the intervention in words). Held out: `prompts`
    if given, else the scan's own test split (`info["test_instructions"]`), else (a scan on the
    caller's prompts) default harmful instructions past the first `n_prompts` of the scan's
    params and outside the calibration ones."""
    from interp.tasks.safety import default_instructions, safety_prompt_set

    tokens = refusal_tokens_of(model, scores, calibration)
    if prompts is None and scores.info.get("test_instructions"):
        prompts = safety_prompt_set(model, scores.info["test_instructions"][:n_prompts], "harmful")
    elif prompts is None:
        trained = int(scores.params.get("n_prompts", 16))
        held_out = default_instructions("harmful")[trained:-calibration][:n_prompts]
        if not held_out:
            raise InvalidInput(f"no held-out default harmful instruction is left after the "
                               f"scan's {trained} training prompts; pass prompts to check on")
        prompts = safety_prompt_set(model, held_out, "harmful")
    else:
        prompts = as_prompt_set(model, prompts, DETECTOR)
    method = scores.params.get("method", "query_scale")
    eps = float(scores.params.get("eps", 1e-5))
    z_mean = scores.details.get("z_mean")

    def measure(heads) -> float:
        with head_ablation(model, heads, method, eps, z_mean):
            logodds, _ = first_token_refusal(model, prompts, tokens)
        return float(logodds.mean())
    return measure, len(prompts), f"the scan's ablation ({method}, eps {eps:g})"


# ---- registry entry ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SafetyParams:
    n_prompts: int = param(16, "training prompts (default prompts only): the most confident refusals "
                           "among the project's harmful set, chosen by the model's own replies")
    method: str = param("query_scale", "head ablation: query*eps (paper), query:=mean over heads, "
                        "output zeroed or mean", choices=ABLATIONS)
    eps: float = param(1e-5, "query scale of the query_scale ablation (the paper's epsilon)")
    sahara_steps: int = param(0, "Sahara greedy steps (heads in the set); each is a full scan")
    sahara_candidates: int = param(0, "Sahara steps after the first consider only this many top "
                                   "first-step heads (0: all heads, as the reference)")
    layers: tuple[int, ...] = param((), "scan only these layers (empty: all)")
    rows_per_forward: int = param(56, "(prompt, head) rows per forward pass")


class SafetyDetector(Detector):
    name = DETECTOR
    description = ("safety heads: Ships, KL of the next-token distribution when the head's query "
                   "is scaled by eps (Zhou et al. 2024), on harmful chat prompts")
    Params = SafetyParams
    behaviour = "refusal rate on held-out harmful prompts with these heads ablated"

    def scan(self, model: Model, prompts: Prompts = None, params: SafetyParams | None = None,
             progress: Progress | None = None) -> HeadScores:
        params = params if isinstance(params, SafetyParams) else self.make_params(params)
        splits = None
        if prompts is None:
            # The paper's Ships is about the refusal decision: score on harmful prompts this
            # model refuses, chosen by its own replies (as `interp safety` does).
            from interp.tasks.safety import default_instructions

            report = progress or (lambda f, m: None)
            report(0.0, "calibrating refusal tokens on the model's own replies")
            splits = select_refusing(model, default_instructions("harmful"),
                                     default_instructions("harmless"), n_train=params.n_prompts,
                                     n_test=8)
            prompts = splits.train
        prompt_set = as_prompt_set(model, prompts, self.name)
        check_context(model, prompt_set)
        scores = detect(model, prompt_set, params.method, params.eps, params.sahara_steps, 1,
                        list(params.layers) or None, None if splits is None else splits.tokens,
                        progress=progress, sahara_candidates=params.sahara_candidates or None,
                        rows_per_forward=params.rows_per_forward)
        if splits is not None:
            scores.info.update({"train_instructions": [m["instruction"] for m in splits.train.metadata],
                                "test_instructions": splits.harmful_test,
                                "train_selection": splits.selection})
        scores.params = params_json(params)
        return scores


SAFETY = SafetyDetector()
