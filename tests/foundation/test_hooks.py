"""Caching and hook reducers see what a plain forward computes; padding changes nothing."""

from __future__ import annotations

import pytest
import torch

from interp.errors import InvalidInput
from interp.hooks import cache_activations, final_position, run_with_reducers

PROMPTS = ["When Mary and John went to the store, John gave a drink to", "The cat sat on the mat"]


def test_cached_residuals_equal_hf_hidden_states(smollm2):
    batch = smollm2.tokenize(PROMPTS[0])
    cache = cache_activations(smollm2, batch, [f"blocks.{L}.hook_resid_post" for L in (0, 14, 29)])
    with torch.no_grad():
        hidden = smollm2.hf_model(batch.input_ids, output_hidden_states=True).hidden_states
    for layer in (0, 14):  # the last hidden state HF returns is after the final norm
        assert torch.allclose(cache[f"blocks.{layer}.hook_resid_post"], hidden[layer + 1], atol=1e-4)


def test_padded_batch_equals_unpadded_runs(smollm2):
    names = ["blocks.5.attn.hook_z", "blocks.5.attn.hook_pattern", "blocks.29.hook_resid_post"]
    together = cache_activations(smollm2, PROMPTS, names, batch_size=2)
    for row, prompt in enumerate(PROMPTS):
        alone = cache_activations(smollm2, prompt, names)
        n = alone["blocks.5.attn.hook_z"].shape[1]
        assert torch.allclose(together["blocks.5.attn.hook_z"][row, :n], alone["blocks.5.attn.hook_z"][0], atol=1e-4)
        assert torch.allclose(together["blocks.5.attn.hook_pattern"][row, :, :n, :n],
                              alone["blocks.5.attn.hook_pattern"][0], atol=1e-5)
        assert torch.allclose(together["blocks.29.hook_resid_post"][row, :n],
                              alone["blocks.29.hook_resid_post"][0], atol=1e-3)


def test_sub_batches_concatenate_with_padding(smollm2):
    """batch_size=1 runs each prompt alone; results still line up with one padded batch."""
    one_by_one = cache_activations(smollm2, PROMPTS, "blocks.2.hook_resid_pre", batch_size=1)
    together = cache_activations(smollm2, PROMPTS, "blocks.2.hook_resid_pre", batch_size=2)
    batch = smollm2.tokenize(PROMPTS)
    mask = batch.mask[..., None]
    assert one_by_one["blocks.2.hook_resid_pre"].shape == together["blocks.2.hook_resid_pre"].shape
    assert torch.allclose(one_by_one["blocks.2.hook_resid_pre"] * mask,
                          together["blocks.2.hook_resid_pre"] * mask, atol=1e-4)


def test_reducer_keeps_only_its_result(smollm2):
    batch = smollm2.tokenize(PROMPTS)
    out = run_with_reducers(smollm2, batch, {"blocks.29.hook_resid_post": final_position})
    assert out["blocks.29.hook_resid_post"].shape == (2, smollm2.d_model)
    full = cache_activations(smollm2, batch, "blocks.29.hook_resid_post")["blocks.29.hook_resid_post"]
    expected = full[torch.arange(2), batch.final_positions]
    assert torch.allclose(out["blocks.29.hook_resid_post"], expected, atol=1e-4)


def test_gated_hook_is_switched_on_when_named(smollm2):
    out = cache_activations(smollm2, PROMPTS[1], "blocks.3.attn.hook_result")
    z = cache_activations(smollm2, PROMPTS[1], "blocks.3.attn.hook_z")["blocks.3.attn.hook_z"]
    result = out["blocks.3.attn.hook_result"]  # [b, pos, head, d_model]: each head's output
    assert result.shape[2] == smollm2.n_heads
    w_o = smollm2.hf_model.model.layers[3].self_attn.o_proj.weight  # [d_model, H * d_head]
    per_head = torch.einsum("bphd,mhd->bphm", z, w_o.view(smollm2.d_model, smollm2.n_heads, -1))
    assert torch.allclose(result, per_head, atol=1e-4)


def test_unknown_hook_name_is_a_clear_error(smollm2):
    with pytest.raises(InvalidInput, match="blocks.0.hook_resid_pre"):
        cache_activations(smollm2, "hi", "blocks.0.hook_resid_prexx")
