"""The computational graph of a decoder-only transformer, as edge attribution patching sees it.

Syed et al. 2023 ("Attribution Patching Outperforms Automated Circuit Discovery") and Hanna et
al. 2024 ("Have Faith in Faithfulness", hannamw/EAP-IG): the residual stream is a sum of what
every earlier component wrote, so each component's input is a sum over upstream nodes, and an
edge u -> v is "u's output as it enters v's input".

Upstream nodes (what writes to the residual stream), in forward order:
    "input"            the token embeddings (what enters block 0)
    "a{L}.h{H}"        attention head H of layer L: z_H @ W_O[H] (no output bias in the
                       supported models)
    "m{L}"             the MLP of layer L
Downstream inputs (what reads the residual stream):
    "a{L}.h{H}<q>"     head H's query input (its own copy of the residual stream; the norm and
                       W_Q[H] then act on that copy)
    "a{L}.kv{G}<k>"    the key input of key/value head G, and "a{L}.kv{G}<v>" its value input
    "m{L}"             the MLP's input
    "logits"           the final norm + unembedding
Nodes reported in a circuit: "input", the heads, the MLPs, "logits".

Edges: from every upstream node to every downstream input after it: attention inputs of
layer L read "input" and all heads and MLPs of layers < L; the MLP of layer L also reads layer
L's heads; "logits" reads everything.

Grouped-query attention (SmolLM2: 9 query heads share 3 K/V heads; Gemma-3-270m: 4 on 1): a
K/V head's key and value are computed once and feed all the query heads of its group, so its
k and v inputs are ONE downstream input each, and an edge into them is counted once (not once
per query head). Per layer there are n_heads q inputs, n_kv_heads k and n_kv_heads v inputs and
one MLP input. SmolLM2-135M (30 layers, 9 heads, 3 K/V heads): 301 upstream nodes, 481
downstream inputs, 70,651 edges.

Scores live in an [n_upstream, n_inputs] matrix; `allowed` marks the real edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

INPUT, LOGITS = "input", "logits"


@dataclass(frozen=True)
class Graph:
    n_layers: int
    n_heads: int
    n_kv_heads: int

    @classmethod
    def from_model(cls, model) -> "Graph":
        return cls(model.n_layers, model.n_heads, model.n_kv_heads or model.n_heads)

    # ---- upstream nodes ------------------------------------------------------------------------
    @property
    def per_layer(self) -> int:
        """Upstream nodes per layer: the heads, then the MLP."""
        return self.n_heads + 1

    @property
    def n_upstream(self) -> int:
        return 1 + self.n_layers * self.per_layer

    def head_index(self, layer: int, head: int) -> int:
        return 1 + layer * self.per_layer + head

    def mlp_index(self, layer: int) -> int:
        return 1 + layer * self.per_layer + self.n_heads

    @cached_property
    def upstream(self) -> list[str]:
        names = [INPUT]
        for layer in range(self.n_layers):
            names += [f"a{layer}.h{h}" for h in range(self.n_heads)] + [f"m{layer}"]
        return names

    # ---- downstream inputs ---------------------------------------------------------------------
    @property
    def inputs_per_layer(self) -> int:
        """q per head, k and v per K/V head, then the MLP input."""
        return self.n_heads + 2 * self.n_kv_heads + 1

    @property
    def n_inputs(self) -> int:
        return self.n_layers * self.inputs_per_layer + 1

    def q_index(self, layer: int, head: int) -> int:
        return layer * self.inputs_per_layer + head

    def k_index(self, layer: int, kv_head: int) -> int:
        return layer * self.inputs_per_layer + self.n_heads + kv_head

    def v_index(self, layer: int, kv_head: int) -> int:
        return layer * self.inputs_per_layer + self.n_heads + self.n_kv_heads + kv_head

    def mlp_input_index(self, layer: int) -> int:
        return (layer + 1) * self.inputs_per_layer - 1

    @property
    def logits_index(self) -> int:
        return self.n_inputs - 1

    def kv_of(self, head: int) -> int:
        """The K/V head that query head `head` reads (heads are grouped in order)."""
        return head // (self.n_heads // self.n_kv_heads)

    @cached_property
    def inputs(self) -> list[str]:
        names = []
        for layer in range(self.n_layers):
            names += [f"a{layer}.h{h}<q>" for h in range(self.n_heads)]
            names += [f"a{layer}.kv{g}<k>" for g in range(self.n_kv_heads)]
            names += [f"a{layer}.kv{g}<v>" for g in range(self.n_kv_heads)]
            names.append(f"m{layer}")
        return names + [LOGITS]

    @cached_property
    def n_readable(self) -> torch.Tensor:
        """[n_inputs] long: how many upstream nodes (a prefix of `upstream`) each input reads."""
        counts = []
        for layer in range(self.n_layers):
            before = 1 + layer * self.per_layer
            counts += [before] * (self.n_heads + 2 * self.n_kv_heads) + [before + self.n_heads]
        return torch.tensor(counts + [self.n_upstream])

    @cached_property
    def allowed(self) -> torch.Tensor:
        """[n_upstream, n_inputs] bool: the real edges."""
        return torch.arange(self.n_upstream)[:, None] < self.n_readable[None, :]

    @property
    def n_edges(self) -> int:
        return int(self.n_readable.sum())

    @property
    def nodes(self) -> list[str]:
        return self.upstream + [LOGITS]

    # ---- edges ---------------------------------------------------------------------------------
    def edge_list(self, scores: torch.Tensor, keep: torch.Tensor | None = None) -> list[dict]:
        """[{"src", "dst", "score"}] for the edges in `keep` ([n_upstream, n_inputs] bool;
        default every edge), strongest |score| first."""
        mask = self.allowed if keep is None else keep & self.allowed
        src, dst = mask.nonzero(as_tuple=True)
        values = scores[src, dst]
        order = values.abs().argsort(descending=True)
        return [{"src": self.upstream[int(src[i])], "dst": self.inputs[int(dst[i])],
                 "score": round(float(values[i]), 6)} for i in order.tolist()]

    def top_edges(self, scores: torch.Tensor, k: int) -> torch.Tensor:
        """[n_upstream, n_inputs] bool: the k edges of largest |score| (MIB's edge circuits)."""
        flat = torch.where(self.allowed, scores.abs(), torch.tensor(-1.0)).flatten()
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep[flat.topk(min(k, self.n_edges)).indices] = True
        return keep.view_as(scores) & self.allowed

    def random_edges(self, k: int, generator: torch.Generator) -> torch.Tensor:
        """[n_upstream, n_inputs] bool: k edges drawn uniformly among the real ones."""
        index = self.allowed.flatten().nonzero().squeeze(1)
        chosen = index[torch.randperm(len(index), generator=generator)[:k]]
        keep = torch.zeros(self.n_upstream * self.n_inputs, dtype=torch.bool)
        keep[chosen] = True
        return keep.view(self.n_upstream, self.n_inputs)

    def circuit_nodes(self, keep: torch.Tensor) -> list[str]:
        """The nodes an edge set touches: sources, the components of the inputs, "logits"."""
        names = {self.upstream[i] for i in keep.any(1).nonzero().squeeze(1).tolist()}
        for j in keep.any(0).nonzero().squeeze(1).tolist():
            names |= set(self.input_owners(j))
        return [n for n in self.nodes if n in names]

    def input_owners(self, j: int) -> list[str]:
        """The node(s) downstream input j belongs to (a K/V input: every query head of its group)."""
        name = self.inputs[j]
        if name == LOGITS or name.startswith("m"):
            return [name]
        layer = int(name[1:name.index(".")])
        if name.endswith("<q>"):
            return [name[:-3]]
        group = int(name[name.index("kv") + 2:name.index("<")])
        size = self.n_heads // self.n_kv_heads
        return [f"a{layer}.h{h}" for h in range(group * size, (group + 1) * size)]

    def head_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """[n_layers, n_heads]: each head's total |score| over the edges leaving it (its
        importance as a sender, comparable across methods)."""
        outgoing = torch.where(self.allowed, scores.abs(), torch.zeros(())).sum(1)
        heads = torch.tensor([[self.head_index(l, h) for h in range(self.n_heads)]
                              for l in range(self.n_layers)])
        return outgoing[heads]


def parse_head(name: str) -> tuple[int, int] | None:
    """"a3.h7" -> (3, 7); anything else -> None."""
    if name.startswith("a") and ".h" in name and "<" not in name:
        layer, head = name[1:].split(".h")
        return int(layer), int(head)
    return None
