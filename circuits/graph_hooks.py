"""Where the graph's nodes and inputs live on the TransformerLens bridge, and hooks that read them.

| graph                     | hook                                   | shape                        |
|---------------------------|----------------------------------------|------------------------------|
| output of "input"         | blocks.0.hook_resid_pre                | [b, pos, d_model]            |
| output of head a{L}.h{H}  | blocks.L.attn.hook_z, times W_O[H]     | [b, pos, n_heads, d_model]   |
| output of MLP m{L}        | blocks.L.hook_mlp_out                  | [b, pos, d_model]            |
| q inputs of layer L       | blocks.L.attn.hook_q_input             | [b, pos, n_heads, d_model]   |
| k / v inputs of layer L   | blocks.L.attn.hook_k_input / v_input   | [b, pos, n_kv_heads, d_model]|
| input of MLP m{L}         | blocks.L.hook_mlp_in                   | [b, pos, d_model]            |
| input of "logits"         | blocks.{last}.hook_resid_post          | [b, pos, d_model]            |

The q/k/v inputs are the bridge's split-input hooks (TransformerLens `use_split_qkv_input`): one
copy of the residual stream per head, before the attention norm, so an edit of one copy reaches
only that head (checked in tests/circuits/test_graph.py). `hook_mlp_in` is a copy the MLP alone
reads: the skip connection keeps the unedited residual.

A head's output is what it writes to the residual stream (`interp.head_writes`): `z_h @ W_O[h]`
on Llama, Qwen and SmolLM2, its share of the normalised attention update on Gemma-3. The shares
sum to the update exactly (tests/circuits/test_gemma_edges.py), so patching edges stays exact;
the one approximation is EAP's gradient, which treats each share as a separate input although
all heads of a layer share the norm's rms. Gemma's
norm after the MLP sits inside `hook_mlp_out`, so an MLP output is its update as it is.
`check_supported` refuses an attention output bias (no node holds it) before any forward.
"""

from __future__ import annotations

import torch

from circuits.graph import Graph
from interp.errors import InvalidInput
from interp.head_writes import head_writes


def check_supported(model) -> None:
    """Refuse models whose residual update the graph's nodes cannot hold (an attention output
    bias) before any forward."""
    b_o = getattr(model.bridge.blocks[0].attn, "b_O", None)
    if b_o is not None and float(b_o.abs().max()) > 0:
        raise InvalidInput(
            f"{model.name}: edge attribution needs a residual stream that is the sum of per-head "
            "outputs, and this model has an attention output bias no node holds. Use --method "
            "path for it, or a Llama/Qwen/Gemma-style model such as smollm2-135m")


def last_layer(graph: Graph) -> int:
    return graph.n_layers - 1


def recorder_hooks(model, graph: Graph, outputs: torch.Tensor, residuals: torch.Tensor | None = None):
    """Hooks writing every upstream node's output into `outputs` [b, pos, n_upstream, d_model]
    and, if given, the residual stream each input group reads into `residuals`
    [b, pos, 2 * n_layers + 1, d_model] (resid_pre of L at 2L, resid_mid of L at 2L + 1, the
    final residual last). Writes are detached copies (no gradient flows through them)."""
    hooks = []

    def put_input(x, hook=None):
        outputs[:, : x.shape[1], 0] = x.detach()

    hooks.append(("blocks.0.hook_resid_pre", put_input))
    for layer in range(graph.n_layers):
        w_o = model.bridge.blocks[layer].attn.W_O.detach()  # [n_heads, d_head, d_model]
        first = graph.head_index(layer, 0)

        def put_heads(z, hook=None, w_o=w_o, first=first):
            outputs[:, : z.shape[1], first:first + graph.n_heads] = torch.einsum(
                "bphe,hed->bphd", z.detach(), w_o.to(z.dtype))

        def put_mlp(out, hook=None, index=graph.mlp_index(layer)):
            outputs[:, : out.shape[1], index] = out.detach()

        hooks += [(f"blocks.{layer}.attn.hook_z", put_heads), (f"blocks.{layer}.hook_mlp_out", put_mlp)]
        if residuals is not None:
            for slot, name in ((2 * layer, "hook_resid_pre"), (2 * layer + 1, "hook_resid_mid")):
                def put_resid(x, hook=None, slot=slot):
                    residuals[:, : x.shape[1], slot] = x.detach()
                hooks.append((f"blocks.{layer}.{name}", put_resid))
    if residuals is not None:
        def put_final(x, hook=None):
            residuals[:, : x.shape[1], -1] = x.detach()
        hooks.append((f"blocks.{last_layer(graph)}.hook_resid_post", put_final))
    return hooks


def input_groups(graph: Graph) -> list[tuple[str, list[int], int]]:
    """(hook name, input indices in the hook's head order, residual slot) for every input hook,
    in forward order. A q/k/v hook holds one input per head; the MLP and logits hooks one."""
    groups = []
    for layer in range(graph.n_layers):
        groups.append((f"blocks.{layer}.attn.hook_q_input",
                       [graph.q_index(layer, h) for h in range(graph.n_heads)], 2 * layer))
        groups.append((f"blocks.{layer}.attn.hook_k_input",
                       [graph.k_index(layer, g) for g in range(graph.n_kv_heads)], 2 * layer))
        groups.append((f"blocks.{layer}.attn.hook_v_input",
                       [graph.v_index(layer, g) for g in range(graph.n_kv_heads)], 2 * layer))
        groups.append((f"blocks.{layer}.hook_mlp_in", [graph.mlp_input_index(layer)], 2 * layer + 1))
    groups.append((f"blocks.{last_layer(graph)}.hook_resid_post", [graph.logits_index],
                   2 * graph.n_layers))
    return groups
