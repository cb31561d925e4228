"""Where an SAE reads: a TransformerLens hook (and head), how to read vectors there and how to
write an edited vector back. Every forward pass of `circuits.sae` goes through `run_model` here.

Supported hooks (`L` a layer):

| hook                          | head  | one example is                              | d_in            |
|-------------------------------|-------|---------------------------------------------|-----------------|
| blocks.L.hook_resid_pre/mid/post | -  | the residual stream at a position           | d_model         |
| blocks.L.hook_attn_out        | -     | the attention layer's output                | d_model         |
| blocks.L.hook_mlp_out         | -     | the MLP's output                            | d_model         |
| blocks.L.attn.hook_z          | None  | all heads' z concatenated (SAELens's hook_z)| n_heads*d_head  |
| blocks.L.attn.hook_z          | h     | head h's z                                  | d_head          |
| blocks.L.attn.hook_result     | h     | what head h writes to the residual: z_h W_O[h] | d_model      |
| blocks.L.attn.hook_result     | None  | every head's output, one example per head   | d_model         |

`hook_result` is computed from `hook_z` and W_O (no bias in the supported models), so the
bridge's costly `use_attn_result` switch stays off. Writing an edited head output back changes
z by the least-squares solution `delta @ pinv(W_O[h])`: the head's output then becomes the
projection of the edit onto the directions the head can write (its W_O row space).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from circuits.sae.hook_names import KINDS
from interp.errors import InvalidInput
from interp.forward import StopForward, run
from interp.models import Model
from interp.names import hook_name, layer_of
from interp.tokens import TokenBatch



@dataclass(frozen=True)
class ActivationPoint:
    """A hook (and head) an SAE reads, resolved against one model.

    bridge_hook: the hook that fires on the bridge (hook_z for hook_result).
    per_head:    True for hook_result without a head: vectors are [..., n_heads, d_model].
    """

    hook: str
    head: int | None
    kind: str
    layer: int
    bridge_hook: str
    d_in: int
    per_head: bool = False

    def label(self) -> str:
        return self.hook if self.head is None else f"{self.hook}[{self.head}]"


def activation_point(model: Model, hook: str, head: int | None = None) -> ActivationPoint:
    """Resolve a hook name (and head) for `model`, or a clear error naming what is supported."""
    if hook not in model.bridge.hook_dict:
        examples = ["blocks.6.hook_resid_pre", "blocks.6.hook_attn_out", "blocks.6.hook_mlp_out",
                    "blocks.6.attn.hook_z", "blocks.6.attn.hook_result"]
        raise InvalidInput(f"unknown hook name {hook!r} for {model.name} ({model.n_layers} layers, "
                           f"counted from 0); SAE hooks follow TransformerLens, e.g. {examples}")
    layer = layer_of(hook)
    suffix = hook.split(".", 2)[2] if layer is not None else hook
    kind = KINDS.get(suffix)
    if kind is None:
        raise InvalidInput(f"{hook!r} is not a hook an SAE can read here; use one of "
                           f"{sorted(KINDS)} (as blocks.L.<name>)")
    if head is not None:
        if kind not in ("z", "result"):
            raise InvalidInput(f"a head index applies to attn.hook_z and attn.hook_result only, "
                               f"not {hook!r}")
        if not 0 <= int(head) < model.n_heads:
            raise InvalidInput(f"head {head} does not exist in {model.name} ({model.n_heads} heads "
                               "per layer, counted from 0)")
        head = int(head)
    if kind == "z":
        d_in = model.d_head if head is not None else model.n_heads * model.d_head
    else:
        d_in = model.d_model
    bridge_hook = hook.replace("attn.hook_result", "attn.hook_z")
    return ActivationPoint(hook, head, kind, layer, bridge_hook, d_in,
                           per_head=(kind == "result" and head is None))


def _w_o(model: Model, point: ActivationPoint) -> torch.Tensor:
    """[n_heads, d_head, d_model] (TransformerLens layout)."""
    return model.bridge.blocks[point.layer].attn.W_O


def read(model: Model, point: ActivationPoint, activation: torch.Tensor) -> torch.Tensor:
    """The bridge hook's activation -> SAE input vectors.

    [b, pos, d_in], or [b, pos, n_heads, d_model] for per-head hook_result.
    """
    if point.kind == "z":
        return activation[:, :, point.head] if point.head is not None else activation.flatten(2)
    if point.kind == "result":
        w_o = _w_o(model, point).to(activation.dtype)
        if point.head is not None:
            return activation[:, :, point.head] @ w_o[point.head]
        return torch.einsum("bphd,hdm->bphm", activation, w_o)
    return activation


_PINV_CACHE: dict[tuple[int, int], torch.Tensor] = {}


def _pinv_w_o(model: Model, point: ActivationPoint) -> torch.Tensor:
    """[n_heads, d_model, d_head]: pseudo-inverses of each head's W_O (cached per weights)."""
    w_o = _w_o(model, point)
    key = (id(w_o), point.layer)
    if key not in _PINV_CACHE:
        _PINV_CACHE[key] = torch.linalg.pinv(w_o.detach().float())
    return _PINV_CACHE[key]


def write(model: Model, point: ActivationPoint, activation: torch.Tensor, old: torch.Tensor,
          new: torch.Tensor) -> torch.Tensor:
    """The bridge hook's activation with the SAE input vectors `old` replaced by `new`."""
    if point.kind == "z":
        if point.head is None:
            return new.reshape(activation.shape)
        out = activation.clone()
        out[:, :, point.head] = new
        return out
    if point.kind == "result":
        pinv = _pinv_w_o(model, point).to(new.dtype)
        if point.head is not None:
            out = activation.clone()
            out[:, :, point.head] = activation[:, :, point.head] + (new - old) @ pinv[point.head]
            return out
        return activation + torch.einsum("bphm,hmd->bphd", new - old, pinv)
    return new


Edit = Callable[[torch.Tensor], torch.Tensor]


def edit_hooks(model: Model, edits: dict[ActivationPoint, Edit]) -> list[tuple[str, Callable]]:
    """Forward hooks that replace the vectors at each point by `edit(vectors)`."""
    hooks = []
    for point, edit in edits.items():
        def hook(activation, hook=None, point=point, edit=edit):
            old = read(model, point, activation)
            return write(model, point, activation, old, edit(old))
        hooks.append((point.bridge_hook, hook))
    return hooks


def run_model(model: Model, input_ids: torch.Tensor, fwd_hooks=(), stop_after: str | None = None,
              ) -> torch.Tensor | None:
    """The one forward pass of this package: [b, n] token ids -> [b, n, vocab] logits, with
    TransformerLens hooks; `stop_after` a hook name ends the pass once it has fired (returns None).
    Gradients flow when grad mode is on."""
    hooks = list(fwd_hooks)
    if stop_after is not None:
        def stop(activation, hook=None):
            raise StopForward
        hooks.append((stop_after, stop))
    ids = input_ids.to(model.device)
    tokens = TokenBatch(ids, torch.full((ids.shape[0],), ids.shape[1], dtype=torch.long))
    return run(model, tokens, output="logits", hooks=hooks, engine="bridge")


def collect(model: Model, input_ids: torch.Tensor, points: list[ActivationPoint],
            stop: bool = True) -> dict[ActivationPoint, torch.Tensor]:
    """SAE input vectors at each point for a batch of token ids (no grad). The pass ends after
    the last point's hook unless `stop` is False."""
    got: dict[ActivationPoint, torch.Tensor] = {}

    def keeper(point):
        def hook(activation, hook=None):
            got[point] = read(model, point, activation.detach())
        return hook

    last = max(points, key=lambda p: _order(model, p)).bridge_hook
    with torch.no_grad():
        run_model(model, input_ids, [(p.bridge_hook, keeper(p)) for p in points],
                  stop_after=last if stop else None)
    return got


# Within a block the forward reaches these in this order.
_RANK = {"hook_resid_pre": 0, "attn.hook_z": 1, "attn.hook_result": 1, "hook_attn_out": 2,
         "hook_resid_mid": 3, "hook_mlp_out": 4, "hook_resid_post": 5}


def _order(model: Model, point: ActivationPoint) -> tuple[int, int]:
    """A point's place in the forward pass: (layer, rank within the block)."""
    return point.layer, _RANK[point.hook.split(".", 2)[2]]


def sort_points(model: Model, points: list[ActivationPoint]) -> list[ActivationPoint]:
    """Points in the order the forward pass reaches them."""
    return sorted(points, key=lambda p: _order(model, p))


@torch.no_grad()
def all_z(model: Model, input_ids: torch.Tensor) -> dict[int, torch.Tensor]:
    """{layer: [b, pos, n_heads, d_head]} every layer's hook_z for a batch of token ids."""
    got = {}

    def keep(layer):
        def hook(z, hook=None):
            got[layer] = z.detach()
        return hook

    run_model(model, input_ids, [(hook_name("z", layer), keep(layer)) for layer in range(model.n_layers)])
    return got


def final_logit_diff(logits: torch.Tensor, batch: TokenBatch, answers: torch.Tensor,
                     wrong: torch.Tensor) -> torch.Tensor:
    """[b, n, vocab] logits -> [b] logit(answer) - logit(wrong) at each prompt's last real token."""
    rows = torch.arange(batch.batch_size, device=logits.device)
    final = logits[rows, batch.final_positions.to(logits.device)]
    return final[rows, answers.to(logits.device)] - final[rows, wrong.to(logits.device)]
