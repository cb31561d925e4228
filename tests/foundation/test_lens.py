"""The logit lens, direct logit attribution and the pattern view's hover data, on SmolLM2's real
weights, each against a reference computed another way:

- the lens after the last layer against the model's own output (`interp.forward.run`);
- the lens at a middle layer against the residual cached at `hook_resid_post` and put through the
  Hugging Face model's own final norm and lm_head;
- per-head DLA against TransformerLens's decomposition (`stack_head_results` + `apply_ln_to_stack`
  + `logit_attrs`): each head's output read at the bridge's own `hook_result`, divided by the
  cached `ln_final.hook_scale`, times the norm's weight parameter, on W_U[:, target] - W_U[:, wrong];
- the sum of every component against the final logit difference;
- hover: top keys from the pattern itself, next-token probabilities from `run`'s logits.
"""

from __future__ import annotations

import pytest
import torch

from interp.errors import InvalidInput

pytestmark = pytest.mark.slow  # a real model

IOI = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def lens(smollm2):
    from interp.lens import logit_lens_and_dla

    return logit_lens_and_dla(smollm2, IOI, " Mary", " John")


def test_components_sum_to_the_final_logit_difference(smollm2, lens):
    from interp.forward import run

    with torch.no_grad():
        logits = run(smollm2, smollm2.tokenize([IOI]))[0].float()
    mary, john = smollm2.single_token_id(" Mary"), smollm2.single_token_id(" John")
    reference = float(logits[mary] - logits[john])
    assert lens.final_metric == pytest.approx(reference, abs=1e-4)
    assert reference > 1.0  # SmolLM2 does IOI: the decomposition explains a real preference
    assert sum(lens.components().values()) == pytest.approx(reference, abs=1e-3)
    # SmolLM2 has no attention output bias: the heads explain every layer's attention output.
    assert float(lens.dla_attn_rest.abs().max()) < 1e-3


def test_head_dla_matches_transformer_lens_decomposition(smollm2, lens):
    from interp.hooks import cache_activations

    names = [f"blocks.{layer}.attn.hook_result" for layer in range(smollm2.n_layers)]
    cache = cache_activations(smollm2, smollm2.tokenize([IOI]), names + ["ln_final.hook_scale"])
    scale = cache["ln_final.hook_scale"][0, -1].float()                     # [1]
    weight = smollm2.bridge.ln_final._original_component.weight.detach().float()  # Llama: g = w
    w_u = smollm2.bridge.W_U.detach().float()
    direction = w_u[:, smollm2.single_token_id(" Mary")] - w_u[:, smollm2.single_token_id(" John")]
    reference = torch.stack([cache[name][0, -1].float() / scale * weight @ direction
                             for name in names])                           # [L, H]
    assert torch.allclose(lens.dla_heads, reference, atol=2e-3), \
        (lens.dla_heads - reference).abs().max()
    # The IOI name movers sit late: the head with the largest positive DLA is past the middle.
    best = lens.top_heads(1)[0]
    assert best["dla"] > 0.5 and best["layer"] >= smollm2.n_layers // 2


def test_logit_lens_against_the_model_and_a_cached_residual(smollm2, lens):
    from interp.forward import run
    from interp.hooks import cache_activations

    with torch.no_grad():
        logprobs = run(smollm2, smollm2.tokenize([IOI]), output="final_logprobs")[0]
    mary = smollm2.single_token_id(" Mary")
    assert float(lens.lens_logprob[-1]) == pytest.approx(float(logprobs[mary]), abs=1e-4)
    assert int(lens.lens_rank[-1]) == int((logprobs > logprobs[mary]).sum()) + 1 == 1
    layer = 15
    resid = cache_activations(smollm2, smollm2.tokenize([IOI]),
                              [f"blocks.{layer}.hook_resid_post"])[f"blocks.{layer}.hook_resid_post"]
    hf = smollm2.hf_model
    with torch.no_grad():
        logits = hf.lm_head(hf.model.norm(resid[:, -1:].to(smollm2.dtype)))[0, -1].float()
    assert float(lens.lens_logprob[layer + 1]) == pytest.approx(
        float(logits.log_softmax(-1)[mary]), abs=1e-3)
    assert len(lens.lens_layers) == smollm2.n_layers + 1 and lens.lens_layers[0] == "embed"


def test_target_defaults_to_the_top_prediction_and_bad_tokens_are_refused(smollm2):
    from interp.lens import logit_lens_and_dla

    result = logit_lens_and_dla(smollm2, "The capital of France is")
    assert result.target_id == result.top_next[0]["id"] and result.wrong is None
    assert sum(result.components().values()) == pytest.approx(result.final_metric, abs=1e-3)
    with pytest.raises(InvalidInput, match="target token.*tokens"):
        logit_lens_and_dla(smollm2, IOI, " Maryjohnsonfield")
    with pytest.raises(InvalidInput, match="same token"):
        logit_lens_and_dla(smollm2, IOI, " Mary", " Mary")
    with pytest.raises(InvalidInput, match="prompt is empty"):
        logit_lens_and_dla(smollm2, "  ", " Mary")


def test_hover_data_top_keys_and_next_tokens(smollm2):
    from interp.forward import run
    from interp.patterns import attention_pattern, query_summaries

    text = "The cat sat on the mat. The cat sat on the"
    pattern = attention_pattern(smollm2, text, layer=5, next_tokens=5)
    rows = query_summaries(pattern, head=2, k_keys=4)
    assert len(rows) == pattern.n_tokens
    head = pattern.head(2)
    for row in rows:
        q = row["position"]
        weights = [k["weight"] for k in row["top_keys"]]
        assert sum(weights) <= 1 + 1e-5 and weights == sorted(weights, reverse=True)
        assert all(k["position"] <= q for k in row["top_keys"])        # causal: no future key
        assert len(weights) == min(4, q + 1)
        assert weights[0] == pytest.approx(float(head[q].max()), abs=1e-6)
    with torch.no_grad():
        logits = run(smollm2, smollm2.tokenize([text]), output="logits")[0].float()  # [N, vocab]
    probs = logits.softmax(-1)
    top = torch.topk(probs, 5, dim=-1)
    assert torch.equal(pattern.next_tokens.ids, top.indices)
    assert torch.allclose(pattern.next_tokens.probs, top.values, atol=1e-5)
    assert rows[-1]["next"][0]["token"] == smollm2.tokenizer.decode([int(top.indices[-1, 0])])


def test_copy_as_python_snippet_runs_and_reproduces_the_view(smollm2, lens, monkeypatch, capsys):
    import interp
    import plotly.graph_objects as go
    from interp.lens import lens_snippet

    monkeypatch.setattr(interp, "load_model", lambda name: smollm2, raising=False)
    shown = []
    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: shown.append(self))
    namespace = {}
    exec(lens_snippet("smollm2-135m", IOI, " Mary", " John"), namespace)
    assert torch.allclose(namespace["lens"].dla_heads, lens.dla_heads, atol=1e-4)
    assert len(shown) == 2
