"""Run prompts from a layer on, on the residual an earlier unedited pass stored.

A head search (ACT's `act_search`, PASTA's `pasta_profile`) edits one layer at a time: the
layers below it are unedited, so their output is the residual the unedited pass saw. Storing
that residual once per prompt and starting each edited forward at the edited layer skips them.

    resid = [[None] * n for _ in range(model.n_layers)]
    run(model, batch, hooks=residual_recorders(resid, rows, tokens, model.n_layers))
    logprobs = run_from_layer(model, tokens, resid, rows, layer, edit)     # [len(rows), vocab]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.tokens import TokenBatch


def residual_recorders(resid: list[list], rows: Sequence[int], tokens: Sequence[Sequence[int]],
                       n_layers: int) -> list:
    """Hooks storing resid[L][i] = the residual entering layer L ([len_i, d_model], CPU) for
    the prompts `rows` of a batch (batch row j is prompt rows[j]), layers 1..n_layers - 1."""
    def keep(layer: int):
        def hook(activation, hook=None):
            for j, i in enumerate(rows):
                resid[layer][i] = activation[j, : len(tokens[i])].detach().cpu().clone()
        return hook

    return [(f"blocks.{layer}.hook_resid_pre", keep(layer)) for layer in range(1, n_layers)]


def run_from_layer(model, tokens: Sequence[Sequence[int]], resid: list[list], rows: Sequence[int],
                   layer: int, edit) -> torch.Tensor:
    """[len(rows), vocab] final log-probs of prompts `rows` run with `edit` from `layer` on (the
    layers below come from the stored `resid`)."""
    from interp.forward import run

    batch = TokenBatch.from_lists([tokens[i] for i in rows], model.pad_token_id)
    options = {}
    if layer > 0:
        start = torch.zeros(len(rows), batch.seq_len, model.d_model, dtype=model.dtype)
        for j, i in enumerate(rows):
            start[j, : len(tokens[i])] = resid[layer][i]
        options = {"start_layer": layer, "start_residual": start.to(model.device)}
    with torch.no_grad():
        return run(model, batch.to(model.device), output="final_logprobs", edit=edit, **options)
