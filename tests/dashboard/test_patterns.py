"""interp.patterns: one layer's pattern on one text (the dashboard's head page), on real weights."""

from __future__ import annotations

import pytest
import torch

from interp.errors import InvalidInput
from interp.names import hook_name
from interp.patterns import (attention_pattern, attention_patterns, received_attention,
                             sink_positions, top_attended)

TEXT = "When Mary and John went to the store, John gave a drink to"


@pytest.mark.slow
def test_pattern_matches_llama_attention_computed_from_the_weights(smollm2):
    """The pattern equals softmax(q k^T / sqrt(d_head)) computed here from the HF attention
    module's own projections and rotary embedding (GQA: each KV head serves H / Hkv heads)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from interp.hooks import cache_activations

    layer = 7
    pattern = attention_pattern(smollm2, TEXT, layer)
    x = cache_activations(smollm2, TEXT, hook_name("in", layer, "attn"))[hook_name("in", layer, "attn")]
    attention = smollm2.hf_model.model.layers[layer].self_attn.original_component
    n, heads, kv_heads, d_head = x.shape[1], smollm2.n_heads, smollm2.n_kv_heads, smollm2.d_head
    with torch.no_grad():
        q = attention.q_proj(x).view(1, n, heads, d_head).transpose(1, 2)
        k = attention.k_proj(x).view(1, n, kv_heads, d_head).transpose(1, 2)
        cos, sin = smollm2.hf_model.model.rotary_emb(x, torch.arange(n)[None])
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        scores = (q @ k.transpose(-1, -2) / d_head ** 0.5).masked_fill(
            torch.ones(n, n).triu(1).bool(), float("-inf"))
        reference = scores.softmax(-1)[0]
    assert pattern.pattern.shape == (heads, n, n)
    assert torch.allclose(pattern.pattern, reference, atol=1e-5)
    assert "".join(pattern.tokens) == TEXT


@pytest.mark.slow
def test_several_layers_in_one_pass_equal_the_full_cache(smollm2):
    """One forward, stopped after the last layer asked for, gives what a full
    run_with_cache-style pass keeps at each layer."""
    from interp.hooks import cache_activations

    names = [hook_name("pattern", layer) for layer in (2, 11, 20)]
    full = cache_activations(smollm2, TEXT, names)
    patterns = attention_patterns(smollm2, TEXT, [20, 2, 11])
    assert sorted(patterns) == [2, 11, 20]
    for layer, name in zip((2, 11, 20), names):
        assert torch.equal(patterns[layer].pattern, full[name][0])


def test_received_attention_is_gu_et_al_alpha():
    """alpha_k = mean over queries i >= k of A[i, k], computed here by the definition's loop."""
    torch.manual_seed(0)
    n = 7
    scores = torch.randn(2, n, n).masked_fill(torch.ones(n, n).triu(1).bool(), float("-inf"))
    pattern = scores.softmax(-1)
    expected = torch.tensor([[sum(pattern[h, i, k] for i in range(k, n)) / (n - k) for k in range(n)]
                             for h in range(2)])
    assert torch.allclose(received_attention(pattern), expected, atol=1e-6)


def test_sinks_and_top_tokens_on_a_hand_made_pattern():
    n = 10
    pattern = torch.zeros(n, n)
    for q in range(n):  # every query puts 0.6 on key 0, the rest on itself
        pattern[q, 0] += 0.6
        pattern[q, q] += 0.4
    assert sink_positions(pattern) == [0]  # diagonal keys: alpha 0.4 only near the end, excluded
    from interp.patterns import AttentionPattern

    view = AttentionPattern(layer=0, token_ids=list(range(n)), tokens=[f"t{i}" for i in range(n)],
                            pattern=pattern[None])
    top = top_attended(view, head=0, k=2)
    assert top[0]["position"] == 0 and top[0]["token"] == "t0"
    # (10 queries x 0.6 + query 0's own 0.4) / 10 queries
    assert top[0]["received"] == pytest.approx(0.64)
    assert top[0]["from_last"] == pytest.approx(0.6)
    # Key 9 is seen only by itself (alpha 0.4, all self-attention): never a "top" key or sink.
    assert [t["position"] for t in top_attended(view, head=0, k=20)] == [0, 6, 5, 4, 3, 2, 1]


@pytest.mark.slow
@pytest.mark.parametrize("text, layer, message", [
    ("   ", 0, "empty"),
    (TEXT, 30, "layer 30 does not exist"),
    (TEXT, -1, "layer -1 does not exist"),
    ("word " * 300, 0, "at most 100 tokens"),
])
def test_bad_input_is_a_clear_error(smollm2, text, layer, message):
    with pytest.raises(InvalidInput, match=message):
        attention_pattern(smollm2, text, layer, max_tokens=100)


@pytest.mark.slow
def test_bad_head_is_a_clear_error(smollm2):
    pattern = attention_pattern(smollm2, "Hello there", 0)
    with pytest.raises(InvalidInput, match="head 9 does not exist"):
        pattern.head(9)
