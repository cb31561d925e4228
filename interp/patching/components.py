"""What can be patched, by which hook, and at which token positions.

Components (TransformerLens hook names on the bridge):

    "heads"  blocks.{L}.attn.hook_z     [b, pos, n_heads, d_head]   one attention head's output
             (the input of W_O, per head: patching z of a head = patching that head's output)
    "q"      blocks.{L}.attn.hook_q     [b, pos, n_heads, d_head]   one head's queries
    "k"      blocks.{L}.attn.hook_k     [b, pos, n_kv_heads, d_head]
    "v"      blocks.{L}.attn.hook_v     [b, pos, n_kv_heads, d_head]
             With grouped-query attention (SmolLM2: 3 KV heads for 9 query heads; Gemma-3-270M:
             1 for 4) a K/V unit is a KV head: patching it changes the keys/values of every query
             head in its group (query heads g*G .. g*G+G-1, G = n_heads / n_kv_heads).
    "resid"  blocks.{L}.hook_resid_pre  [b, pos, d_model]           residual entering block L
    "attn"   blocks.{L}.hook_attn_out   [b, pos, d_model]           a whole layer's attention
    "mlp"    blocks.{L}.hook_mlp_out    [b, pos, d_model]

Positions: None patches every position at once; "each" patches one token index at a time (all
prompts must have the same length); "named" uses each prompt's `metadata["positions"]` (IOI:
"IO", "S1", "S1+1", "S2", "end"); or a list of such names / token indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.errors import InvalidInput
from interp.models import Model
from interp.names import hook_name
from interp.tasks.base import PromptSet


@dataclass(frozen=True)
class Component:
    name: str
    activation: str  # TransformerLens's short name: "z", "resid_pre", ... (`interp.names.hook_name`)
    unit_axis: str | None  # "head" / "kv_head", or None for whole-vector components

    def hook_name(self, layer: int) -> str:
        return hook_name(self.activation, layer)

    def n_units(self, model: Model) -> int:
        if self.unit_axis is None:
            return 1
        return model.n_heads if self.unit_axis == "head" else model.n_kv_heads


COMPONENTS: dict[str, Component] = {
    "heads": Component("heads", "z", "head"),
    "q": Component("q", "q", "head"),
    "k": Component("k", "k", "kv_head"),
    "v": Component("v", "v", "kv_head"),
    "resid": Component("resid", "resid_pre", None),
    "attn": Component("attn", "attn_out", None),
    "mlp": Component("mlp", "mlp_out", None),
}


def component(name: str) -> Component:
    if name not in COMPONENTS:
        raise InvalidInput(f"unknown component {name!r}; choose one of {sorted(COMPONENTS)}")
    return COMPONENTS[name]


def describe(name: str) -> str:
    """One line for the CLI's --help and the dashboard's menu, from the table above:
    "heads: blocks.L.attn.hook_z, per head"."""
    comp = component(name)
    units = {"head": "per head", "kv_head": "per KV head"}.get(comp.unit_axis, "per position")
    return f"{comp.name}: {comp.hook_name(0).replace('blocks.0.', 'blocks.L.', 1)}, {units}"


def default_positions(comp: Component, prompts: PromptSet):
    """None (all at once) for heads and q/k/v; per position for resid/attn/mlp."""
    if comp.unit_axis is not None:
        return None
    return "named" if has_named_positions(prompts) else "each"


def has_named_positions(prompts: PromptSet) -> bool:
    return bool(prompts.metadata) and all("positions" in m for m in prompts.metadata)


def position_table(prompts: PromptSet, positions) -> tuple[list, torch.Tensor]:
    """(labels, table [n_prompts, n_positions] long of token indices) for `positions` != None."""
    n = len(prompts)
    lengths = prompts.tokens.lengths
    if positions == "each":
        if int(lengths.min()) != int(lengths.max()):
            raise InvalidInput(
                f"positions='each' needs prompts of one token length; these have "
                f"{int(lengths.min())}..{int(lengths.max())} tokens. Use positions='named' with "
                "prompts whose metadata names positions (IOI does), or a single template"
            )
        labels = list(range(int(lengths[0])))
        return labels, torch.arange(len(labels)).repeat(n, 1)
    if positions == "named":
        if not has_named_positions(prompts):
            raise InvalidInput("positions='named' needs metadata['positions'] on every prompt "
                               "(IOI prompt sets have it); use positions='each' instead")
        positions = list(prompts.metadata[0]["positions"])
    labels, columns = [], []
    for position in positions:
        if isinstance(position, int):
            if position >= int(lengths.min()) or position < -int(lengths.min()):
                raise InvalidInput(f"position {position} is past the end of the shortest prompt "
                                   f"({int(lengths.min())} tokens)")
            column = torch.where(torch.tensor(position) < 0, lengths + position,
                                 torch.full((n,), position))
        else:
            missing = [i for i, m in enumerate(prompts.metadata) if position not in m.get("positions", {})]
            if missing:
                raise InvalidInput(f"position {position!r} is not named in the metadata of prompt "
                                   f"{missing[0]} ({len(missing)} prompts lack it)")
            column = torch.tensor([m["positions"][position] for m in prompts.metadata])
        labels.append(position)
        columns.append(column)
    return labels, torch.stack(columns, dim=1).long()


def check_layers(model: Model, layers) -> list[int]:
    layers = list(range(model.n_layers)) if layers is None else sorted(set(int(x) for x in layers))
    bad = [x for x in layers if not 0 <= x < model.n_layers]
    if bad:
        raise InvalidInput(f"layers {bad} out of range; {model.name} has {model.n_layers} layers")
    return layers
