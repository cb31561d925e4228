"""Path patching: the effect of one sender head on chosen receivers, every other path frozen.

Wang et al. 2022 ("Interpretability in the Wild", section 3.1 and appendix B) and Goldowsky-Dill
et al. 2023 ("Localizing Model Behavior with Path Patching"). With x_orig the clean prompt and
x_new its corrupted counterpart (IOI: the ABC distribution), for each sender head h:

  A. run x_orig with h's output replaced by its x_new value and every OTHER attention head's
     output frozen to its x_orig value (MLPs recomputed, as in Wang et al.; `freeze_mlps=True`
     freezes them too, leaving only the direct paths); record the receivers' inputs;
  B. run x_orig with only the receivers' inputs replaced by what A recorded, and measure.

So only paths sender -> (MLPs) -> receivers carry the corruption. Receivers are heads' query,
key or value inputs at chosen positions (`Receiver`), or "logits" (the final residual stream:
then step A's own output is measured). Results are normalized like every PatchResult
(0 = corrupted, 1 = clean): a sender with no effect scores 1; an important one moves away from
1 (name movers to the logits go down; negative name movers go up).

Grouped-query attention: a query receiver is exactly one query head (hook_q is per query head).
A value receiver is exact per query head too: step B rewrites only that head's output as
pattern_h @ V, with V the recorded values of its KV group (z = pattern @ v holds exactly in the
bridge; tested). A key receiver patches the KV head (hook_k), so it also changes the keys the
other query heads of its group see (SmolLM2: 3 query heads per KV head) — stated in the result's
params as "key_receivers_are_kv_groups".

Batched: each (sender, prompt) pair is a row; step A starts at the sender's layer and stops after
the last receiver layer, step B starts at the first receiver layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from interp.errors import InvalidInput
from interp.forward import StopForward
from interp.models import Model
from interp.names import check_heads, hook_name
from interp.patching.activation import final_logits_and_cache, metric_targets
from interp.patching.components import position_table
from interp.patching.metrics import normalize, resolve_metric
from interp.patching.prompts import validate
from interp.patching.results import PatchResult
from interp.patching.runner import as_resid_cache, expand_rows, resid_names, run_rows
from interp.tasks.base import PromptSet

INPUTS = ("q", "k", "v")


@dataclass(frozen=True)
class Receiver:
    """A receiving head's input: `input` in "q", "k", "v" of head (layer, head), patched at
    `position` (a metadata position name such as "end", a token index, or None = every position).
    For "k" the unit is the head's KV group (grouped-query attention)."""

    layer: int
    head: int
    input: str
    position: str | int | None = None

    def to_json(self) -> dict:
        return {"layer": self.layer, "head": self.head, "input": self.input, "position": self.position}


class PairCache:
    """The clean and corrupted runs of a prompt set, cached once for many path-patching calls
    (circuit discovery path-patches the same prompts a dozen times): final logits and every
    layer's hook_z of both runs, and the clean residual entering every layer.

    Memory: about 3 x n_layers x n_prompts x seq x d_model floats (SmolLM2, 32 IOI prompts:
    ~120 MB).
    """

    def __init__(self, model: Model, prompts: PromptSet, freeze_mlps: bool = False):
        validate(prompts)
        layers = range(model.n_layers)
        self.z_names = [hook_name("z", layer) for layer in layers]
        mlp = [hook_name("mlp_out", layer) for layer in layers] if freeze_mlps else []
        self.clean_logits, self.clean = final_logits_and_cache(
            model, prompts.tokens, self.z_names + mlp + resid_names(range(1, model.n_layers)))
        self.corrupted_logits, self.corrupted = final_logits_and_cache(model, prompts.corrupted,
                                                                       self.z_names)
        self.has_mlps = freeze_mlps
        self.key = (model.model_id, prompts.hash)

    def matches(self, model: Model, prompts: PromptSet, freeze_mlps: bool = False) -> bool:
        return self.key == (model.model_id, prompts.hash) and (self.has_mlps or not freeze_mlps)

    @property
    def resid(self) -> dict[int, torch.Tensor]:
        return as_resid_cache(self.clean)


def pair_cache(model: Model, prompts: PromptSet, cache: "PairCache | None",
               freeze_mlps: bool = False) -> PairCache:
    """`cache` if it was made for these prompts and model, else a fresh one."""
    if cache is not None and cache.matches(model, prompts, freeze_mlps):
        return cache
    return PairCache(model, prompts, freeze_mlps)


def _check_receivers(model: Model, receivers) -> list[Receiver] | str:
    if receivers == "logits":
        return "logits"
    receivers = list(receivers)
    if not receivers:
        raise InvalidInput("no receivers given; pass Receiver(layer, head, 'q'|'k'|'v', position) "
                           "items or 'logits'")
    for r in receivers:
        if r.input not in INPUTS:
            raise InvalidInput(f"receiver input must be one of {INPUTS}, got {r.input!r}")
        check_heads(model, [(r.layer, r.head)])
    return receivers


def check_senders(model: Model, senders, last_layer: int) -> list[tuple[int, int]]:
    """The sender heads (default: every head below `last_layer`) that can reach the receivers:
    validated (`interp.names.check_heads`), those at or after `last_layer` dropped."""
    if senders is None:
        return [(layer, head) for layer in range(last_layer) for head in range(model.n_heads)]
    senders = [s for s in check_heads(model, senders) if s[0] < last_layer]
    if not senders:
        raise InvalidInput("every sender is at or after the last receiver layer; a head can only "
                           "send to later layers")
    return senders


def path_patch(
    model: Model,
    prompts: PromptSet,
    receivers: Sequence[Receiver] | str = "logits",
    senders: Sequence[tuple[int, int]] | None = None,
    metric: str | Callable = "logit_diff",
    freeze_mlps: bool = False,
    batch_size: int = 64,
    progress: Callable[[float, str], None] | None = None,
    cache: PairCache | None = None,
) -> PatchResult:
    """Effect of each sender head on `receivers` (see module doc); PatchResult [layer, head].

    senders: (layer, head) pairs; default every head below the last receiver layer (every head
        for "logits"). Heads not computed are NaN.
    cache:   a `PairCache` of these prompts to reuse across calls (made here if None).
    """
    start = time.perf_counter()
    validate(prompts, need_answers=False)
    receivers = _check_receivers(model, receivers)
    metric_name, metric_fn = resolve_metric(metric)
    to_logits = receivers == "logits"
    last_layer = model.n_layers if to_logits else max(r.layer for r in receivers)
    senders = check_senders(model, senders, last_layer)

    n = len(prompts)
    pairs = pair_cache(model, prompts, cache, freeze_mlps)
    clean_logits, clean_cache = pairs.clean_logits, pairs.clean
    corrupted_logits, corrupted_cache = pairs.corrupted_logits, pairs.corrupted
    targets = metric_targets(prompts, clean_logits)
    clean_value = float(metric_fn(clean_logits, targets).mean())
    corrupted_value = float(metric_fn(corrupted_logits, targets).mean())
    resid = pairs.resid

    sender_index, prompt_index = expand_rows(len(senders), n)
    row_layer = torch.tensor([s[0] for s in senders])[sender_index]
    row_head = torch.tensor([s[1] for s in senders])[sender_index]

    def frozen_hooks(rows: torch.Tensor, width: int):
        """Step A: every head's z at its clean value, the row's sender at its corrupted value."""
        p = prompt_index[rows]
        hooks = []
        for layer in range(int(row_layer[rows].min()), last_layer):
            name = hook_name("z", layer)
            senders_here = (row_layer[rows] == layer).nonzero().flatten()

            def freeze(z, hook=None, name=name, senders_here=senders_here):
                z[:] = clean_cache[name][p, :width].to(z.dtype)
                if senders_here.numel():
                    b = senders_here.to(z.device)
                    h = row_head[rows][senders_here].to(z.device)
                    z[b, :, h] = corrupted_cache[name][p[senders_here], :width, h].to(z.dtype)
                return z
            hooks.append((name, freeze))
            if freeze_mlps:
                mlp = hook_name("mlp_out", layer)

                def freeze_mlp(out, hook=None, mlp=mlp):
                    out[:] = clean_cache[mlp][p, :width].to(out.dtype)
                    return out
                hooks.append((mlp, freeze_mlp))
        return hooks

    def reduce_metric(logits, rows):
        return metric_fn(logits, targets.rows(prompt_index[rows]))

    if to_logits:
        per_row = run_rows(model, prompts.tokens, prompt_index, frozen_hooks, reduce_metric,
                           start_layers=row_layer, resid_cache=resid, batch_size=batch_size,
                           progress=progress)
    else:
        per_row = _to_receivers(model, prompts, receivers, prompt_index, row_layer, resid,
                                frozen_hooks, reduce_metric, batch_size, progress)

    raw = torch.full((model.n_layers, model.n_heads), float("nan"))
    means = per_row.reshape(len(senders), n).mean(dim=1)
    for (layer, head), value in zip(senders, means.tolist()):
        raw[layer, head] = value
    return PatchResult(
        values=normalize(raw, clean_value, corrupted_value), axes=("layer", "head"),
        labels={"layer": list(range(model.n_layers)), "head": list(range(model.n_heads))},
        metric=metric_name, clean=clean_value, corrupted=corrupted_value, method="path",
        component="heads", direction="noise", model_id=model.model_id, prompt_hash=prompts.hash,
        raw=raw, seconds=time.perf_counter() - start,
        params={"n_prompts": n, "receivers": "logits" if to_logits else [r.to_json() for r in receivers],
                "freeze_mlps": freeze_mlps, "n_senders": len(senders),
                "key_receivers_are_kv_groups": model.n_kv_heads < model.n_heads},
    )


def _receiver_positions(prompts: PromptSet, receivers: list[Receiver]) -> list[torch.Tensor | None]:
    """Per receiver: [n_prompts] token index, or None for every position."""
    out = []
    for r in receivers:
        if r.position is None:
            out.append(None)
        else:
            _, table = position_table(prompts, [r.position])
            out.append(table[:, 0])
    return out


def _to_receivers(model, prompts, receivers, prompt_index, row_layer, resid, frozen_hooks,
                  reduce_metric, batch_size, progress):
    """Steps A and B for head receivers; returns the metric per row."""
    group = model.n_heads // model.n_kv_heads
    positions = _receiver_positions(prompts, receivers)
    n_rows = prompt_index.shape[0]
    width = prompts.tokens.seq_len
    last_layer = max(r.layer for r in receivers)
    first_layer = min(r.layer for r in receivers)

    def unit(r: Receiver) -> int:
        return r.head // group if r.input in ("k", "v") else r.head

    # Step A records each receiver's input (its q of one head, or k/v of its KV group).
    recorded = [torch.zeros(n_rows, width, model.d_head) for _ in receivers]

    def record_hooks(rows: torch.Tensor, chunk_width: int):
        hooks = frozen_hooks(rows, chunk_width)
        for index, r in enumerate(receivers):
            def record(activation, hook=None, index=index, r=r):
                recorded[index][rows, :chunk_width] = activation[:, :, unit(r)].detach().float().cpu()
            hooks.append((hook_name(r.input, r.layer), record))

        def stop(z, hook=None):
            raise StopForward
        hooks.append((hook_name("z", last_layer), stop))
        return hooks

    step_progress = (lambda f, m: progress(0.5 * f, "step A: " + m)) if progress else None
    # A sender may sit above some receivers (receivers span several layers): its rows must still
    # start at or below the lowest receiver, whose input step A records.
    run_rows(model, prompts.tokens, prompt_index, record_hooks,
             lambda logits, rows: torch.zeros(rows.shape[0]),
             start_layers=row_layer.clamp(max=first_layer),
             resid_cache=resid, batch_size=batch_size, progress=step_progress)

    def patch_hooks(rows: torch.Tensor, chunk_width: int):
        """Step B: receivers' inputs from step A, everything else computed on x_orig."""
        p = prompt_index[rows]
        hooks = []
        value_heads: dict[int, list[int]] = {}
        live: dict[str, torch.Tensor] = {}
        for index, r in enumerate(receivers):
            new = recorded[index][rows, :chunk_width]
            position = positions[index]
            if r.input == "v":
                value_heads.setdefault(r.layer, []).append(index)
                continue

            def patch(activation, hook=None, new=new, position=position, u=unit(r)):
                if position is None:
                    activation[:, :, u] = new.to(activation)
                else:
                    b = torch.arange(activation.shape[0], device=activation.device)
                    token = position[p].to(activation.device)
                    activation[b, token, u] = new[torch.arange(new.shape[0]), position[p]].to(activation)
                return activation
            hooks.append((hook_name(r.input, r.layer), patch))
        for layer, indices in value_heads.items():
            def keep(activation, hook=None, key=f"v{layer}"):
                live[key] = activation.detach()

            def keep_pattern(pattern, hook=None, key=f"p{layer}"):
                live[key] = pattern.detach()

            def rewrite(z, hook=None, layer=layer, indices=indices):
                # Only the receiving query head sees the new values: z_h = pattern_h @ V_new.
                for index in indices:
                    r = receivers[index]
                    values = live[f"v{layer}"][:, :, unit(r)].clone()  # [b, pos, d_head]
                    new = recorded[index][rows, :z.shape[1]].to(values)
                    if positions[index] is None:
                        values = new
                    else:
                        b = torch.arange(values.shape[0])
                        token = positions[index][p]
                        values[b, token] = new[b, token]
                    z[:, :, r.head] = torch.einsum("bqk,bkd->bqd", live[f"p{layer}"][:, r.head], values)
                return z
            hooks += [(hook_name("v", layer), keep), (hook_name("pattern", layer), keep_pattern),
                      (hook_name("z", layer), rewrite)]
        return hooks

    step_progress = (lambda f, m: progress(0.5 + 0.5 * f, "step B: " + m)) if progress else None
    return run_rows(model, prompts.tokens, prompt_index, patch_hooks, reduce_metric,
                    start_layers=torch.full((n_rows,), first_layer), resid_cache=resid,
                    batch_size=batch_size, progress=step_progress)
