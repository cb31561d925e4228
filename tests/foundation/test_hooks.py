"""Caching and hook reducers see what a plain forward computes; padding changes nothing."""

from __future__ import annotations

import pytest
import torch

from interp.errors import InvalidInput
from interp.hooks import cache_activations, final_position, run_with_reducers
from interp.names import hook_name

PROMPTS = ["When Mary and John went to the store, John gave a drink to", "The cat sat on the mat"]


def test_cached_residuals_equal_hf_hidden_states(smollm2):
    batch = smollm2.tokenize(PROMPTS[0])
    cache = cache_activations(smollm2, batch, [hook_name("resid_post", L) for L in (0, 14, 29)])
    with torch.no_grad():
        hidden = smollm2.hf_model(batch.input_ids, output_hidden_states=True).hidden_states
    for layer in (0, 14):  # the last hidden state HF returns is after the final norm
        assert torch.allclose(cache[hook_name("resid_post", layer)], hidden[layer + 1], atol=1e-4)


def test_padded_batch_equals_unpadded_runs(smollm2):
    z, pattern, resid = names = [hook_name("z", 5), hook_name("pattern", 5), hook_name("resid_post", 29)]
    together = cache_activations(smollm2, PROMPTS, names, batch_size=2)
    for row, prompt in enumerate(PROMPTS):
        alone = cache_activations(smollm2, prompt, names)
        n = alone[z].shape[1]
        assert torch.allclose(together[z][row, :n], alone[z][0], atol=1e-4)
        assert torch.allclose(together[pattern][row, :, :n, :n], alone[pattern][0], atol=1e-5)
        assert torch.allclose(together[resid][row, :n], alone[resid][0], atol=1e-3)


def test_sub_batches_concatenate_with_padding(smollm2):
    """batch_size=1 runs each prompt alone; results still line up with one padded batch."""
    name = hook_name("resid_pre", 2)
    one_by_one = cache_activations(smollm2, PROMPTS, name, batch_size=1)
    together = cache_activations(smollm2, PROMPTS, name, batch_size=2)
    batch = smollm2.tokenize(PROMPTS)
    mask = batch.mask[..., None]
    assert one_by_one[name].shape == together[name].shape
    assert torch.allclose(one_by_one[name] * mask, together[name] * mask, atol=1e-4)


def test_reducer_keeps_only_its_result(smollm2):
    batch, name = smollm2.tokenize(PROMPTS), hook_name("resid_post", 29)
    out = run_with_reducers(smollm2, batch, {name: final_position})
    assert out[name].shape == (2, smollm2.d_model)
    full = cache_activations(smollm2, batch, name)[name]
    expected = full[torch.arange(2), batch.final_positions]
    assert torch.allclose(out[name], expected, atol=1e-4)


def test_gated_hook_is_switched_on_when_named(smollm2):
    out = cache_activations(smollm2, PROMPTS[1], hook_name("result", 3))
    z = cache_activations(smollm2, PROMPTS[1], hook_name("z", 3))[hook_name("z", 3)]
    result = out[hook_name("result", 3)]  # [b, pos, head, d_model]: each head's output
    assert result.shape[2] == smollm2.n_heads
    w_o = smollm2.hf_model.model.layers[3].self_attn.o_proj.weight  # [d_model, H * d_head]
    per_head = torch.einsum("bphd,mhd->bphm", z, w_o.view(smollm2.d_model, smollm2.n_heads, -1))
    assert torch.allclose(result, per_head, atol=1e-4)


def test_unknown_hook_name_is_a_clear_error(smollm2):
    with pytest.raises(InvalidInput, match="blocks.0.hook_resid_pre"):
        cache_activations(smollm2, "hi", "blocks.0.hook_resid_prexx")
