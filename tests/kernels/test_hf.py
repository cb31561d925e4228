"""`kernels.hf`: the "interp" attention inside transformers models.

Tiny random models (2 layers) check the API on the three families quickly; the real SmolLM2 and
Gemma-3 weights check "matches eager" where the numbers are realistic (marked slow).
"""
import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, Qwen2Config

from kernels import (AttentionEdit, AttentionStatsRequest, HeadScale, SinkCalibration,
                     attention_session, pasta, register_interp_attention)

TINY = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128)


def tiny(kind: str):
    torch.manual_seed(0)
    if kind == "llama":
        cfg = LlamaConfig(**TINY)
    elif kind == "qwen2":
        cfg = Qwen2Config(**TINY)
    else:   # a sliding-window layer, then a global one; a query_pre_attn_scalar of its own
        cfg = Gemma3TextConfig(**TINY, sliding_window=4, query_pre_attn_scalar=24,
                               layer_types=["sliding_attention", "full_attention"])
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():   # random init is near-uniform attention; sharpen it to test something
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
    return model


def batch(vocab: int, n: int = 11, left_pad: int = 3):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (2, n), generator=g)
    mask = torch.ones(2, n, dtype=torch.long)
    mask[1, :left_pad] = 0
    return ids, mask


def eager_logits(model, ids, mask=None):
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits


def session_logits(model, ids, mask=None, **kw):
    with torch.no_grad(), attention_session(model, **kw):
        return model(ids, attention_mask=mask).logits


def test_register_is_idempotent():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    register_interp_attention()
    first = AttentionInterface._global_mapping["interp"]
    register_interp_attention()
    assert AttentionInterface._global_mapping["interp"] is first
    assert "interp" in AttentionMaskInterface._global_mapping


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gemma3"])
def test_tiny_models_match_eager(kind):
    model = tiny(kind)
    ids, mask = batch(model.config.vocab_size)
    real = mask.bool()[..., None]
    torch.testing.assert_close(session_logits(model, ids), eager_logits(model, ids),
                               atol=1e-5, rtol=1e-5)
    # left padding: compare the real positions (padded ones are arbitrary in both)
    a, b = session_logits(model, ids, mask), eager_logits(model, ids, mask)
    torch.testing.assert_close(a * real, b * real, atol=1e-5, rtol=1e-5)
    assert model.config._attn_implementation == "eager"


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_generate_with_cache_matches_eager_and_edits_apply_on_decode(kind):
    model = tiny(kind)
    ids, mask = batch(model.config.vocab_size)
    gen = dict(max_new_tokens=6, do_sample=False, output_scores=True, return_dict_in_generate=True,
               pad_token_id=0)
    with torch.no_grad():
        plain = model.generate(ids, attention_mask=mask, **gen)
        with attention_session(model):
            same = model.generate(ids, attention_mask=mask, **gen)
        assert torch.equal(plain.sequences, same.sequences)
        torch.testing.assert_close(torch.stack(same.scores), torch.stack(plain.scores),
                                   atol=1e-4, rtol=1e-4)

        n = model.config.num_attention_heads
        edit = AttentionEdit((
            SinkCalibration(heads=[(1, h) for h in range(n)], sink_positions=(3, 4), beta=0.2),
            pasta(heads=((0, 1), (1, 2)), highlight_spans=((3, 6),), alpha=0.05),
            HeadScale(heads=((0, 0),), scale=0.0),
        ))
        with attention_session(model, edit=edit):
            edited = model.generate(ids, attention_mask=mask, **gen)
        assert not torch.allclose(torch.stack(edited.scores), torch.stack(plain.scores), atol=1e-3)
        # a decode step with the KV cache equals a full forward over the same tokens, edit on:
        # key positions, sliding-window offsets and cached edit tensors all line up
        seq = edited.sequences[:, :-1]
        full_mask = torch.cat([mask, torch.ones(2, seq.shape[1] - mask.shape[1], dtype=mask.dtype)], 1)
        full = session_logits(model, seq, full_mask, edit=edit)[:, -1]
        torch.testing.assert_close(edited.scores[-1], full, atol=1e-4, rtol=1e-4)


def test_session_restores_implementation_even_on_error():
    model = tiny("llama")
    model.set_attn_implementation("sdpa")
    with pytest.raises(RuntimeError, match="boom"):
        with attention_session(model):
            assert model.config._attn_implementation == "interp"
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"


def _pattern_stats(attn, key_mask, real_q):
    """Row statistics from an explicit pattern [B,H,Nq,Nk] (the definition)."""
    p = attn.double()
    return {
        "entropy": -torch.special.xlogy(p, p).sum(-1),
        "argmax": p.argmax(-1),
        "key_mass": (p * key_mask[:, None, None, :]).sum(-1),
        "received": (p * real_q[:, None, :, None]).sum(-2),
    }


def test_session_stats_equal_eager_patterns():
    model = tiny("llama")
    ids, mask = batch(model.config.vocab_size)
    real = mask.bool()
    key_mask = torch.zeros_like(real)
    key_mask[:, 3:5] = True
    calls, got = [], {}

    def request(layer, b, n_q, n_k):
        calls.append((layer, b, n_q, n_k))
        return AttentionStatsRequest(entropy=True, argmax=True, key_mask=key_mask, received=True)

    with torch.no_grad():
        with attention_session(model, stats=request, on_stats=lambda l, s: got.__setitem__(l, s)):
            model(ids, attention_mask=mask)
        eager = model(ids, attention_mask=mask, output_attentions=True).attentions
    assert calls == [(0, 2, 11, 11), (1, 2, 11, 11)]
    for layer, attn in enumerate(eager):
        want = _pattern_stats(attn, key_mask, real)
        for name, value in want.items():
            a, b = got[layer][name], value
            if name != "received":   # padded query rows are arbitrary in eager
                a, b = a * real[:, None], b * real[:, None]
            torch.testing.assert_close(a.double(), b.double(), atol=1e-5, rtol=1e-5, msg=name)


def test_session_without_callback_keeps_latest_per_layer():
    model = tiny("qwen2")
    ids, _ = batch(model.config.vocab_size)
    with torch.no_grad(), attention_session(model, stats=AttentionStatsRequest(lse=True)) as session:
        model(ids)
    assert sorted(session.stats) == [0, 1]
    assert session.stats[0]["lse"].shape == (2, 4, 11)


# ---- real weights ---------------------------------------------------------------------------

@pytest.mark.slow
def test_smollm2_matches_eager_and_edits_generate(smol_model, monkeypatch):
    model, tok = smol_model.hf_model, smol_model.tokenizer
    model.set_attn_implementation("eager")  # the loader's own setting (the suite shares the model)
    text = ["The capital of France is Paris. The capital of Italy is", "Once upon a time,"]
    monkeypatch.setattr(tok, "padding_side", "left")
    enc = tok(text, return_tensors="pt", padding=True)
    ids, mask = enc.input_ids, enc.attention_mask
    real = mask.bool()[..., None]
    a, b = session_logits(model, ids, mask), eager_logits(model, ids, mask)
    torch.testing.assert_close(a * real, b * real, atol=1e-4, rtol=1e-4)

    first_real = (mask == 0).sum(-1)   # each prompt's first token: ACT's sink
    sinks = tuple((int(i),) for i in first_real)
    edit = AttentionEdit((SinkCalibration(heads=[(l, h) for l in range(2, 12) for h in range(9)],
                                          sink_positions=sinks, beta=0.4),))
    gen = dict(max_new_tokens=4, do_sample=False, output_scores=True,
               return_dict_in_generate=True, pad_token_id=tok.pad_token_id or 0)
    with torch.no_grad():
        plain = model.generate(ids, attention_mask=mask, **gen)
        with attention_session(model, edit=edit):
            edited = model.generate(ids, attention_mask=mask, **gen)
    assert not torch.allclose(torch.stack(edited.scores), torch.stack(plain.scores), atol=1e-2)

    # statistics from the session equal those of eager's explicit patterns
    got = {}
    layers = (0, 15)
    km = torch.zeros_like(mask, dtype=torch.bool)
    km[torch.arange(2), first_real] = True
    req = lambda l, *_: (AttentionStatsRequest(entropy=True, argmax=True, key_mask=km, received=True)
                         if l in layers else None)
    eager = {}   # the bridge's hook_pattern: the explicit pattern of its eager attention
    hooks = [model.model.layers[l].self_attn.hook_pattern.register_forward_hook(
        lambda _m, _i, out, l=l: eager.__setitem__(l, out)) for l in layers]
    with torch.no_grad():
        with attention_session(model, stats=req, on_stats=got.__setitem__):
            model(ids, attention_mask=mask)
        assert eager == {}   # inside the session the bridge's N x N path did not run
        model(ids, attention_mask=mask)
    for h in hooks:
        h.remove()
    for layer in layers:
        want = _pattern_stats(eager[layer], km, mask.bool())
        for name in ("entropy", "key_mass", "received"):
            g, w = got[layer][name].double(), want[name]
            if name != "received":
                g, w = g * mask[:, None], w * mask[:, None]
            torch.testing.assert_close(g, w, atol=2e-4, rtol=1e-4, msg=name)
        agree = (got[layer]["argmax"] == want["argmax"])[mask[:, None].bool().expand_as(want["argmax"])]
        assert agree.float().mean() > 0.99


@pytest.mark.slow
def test_gemma3_matches_eager_beyond_the_sliding_window(gemma_model):
    model = gemma_model.hf_model
    model.set_attn_implementation("eager")
    window = model.config.sliding_window
    ids = torch.randint(10, 5000, (1, window + 8), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = gemma_model.tokenizer.bos_token_id
    # the prefill's last position sees every earlier error; the decode steps run past the
    # window with the sliding cache dropping keys
    gen = dict(max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True)
    with torch.no_grad():
        plain = model.generate(ids, **gen)
        with attention_session(model):
            ours = model.generate(ids, **gen)
    torch.testing.assert_close(torch.stack(ours.logits), torch.stack(plain.logits), atol=1e-4, rtol=1e-4)


# ---- ACT with the sinks found in the forward ----------------------------------------------------

def _definition_sinks(attn, real, tau=0.1):
    """ACT's sinks from an explicit pattern attn [B,H,N,N]: mean over the real queries that see
    each key (causal) > tau, the first sink dropped (GATECH-EIC/ACT's rule)."""
    p = attn.double() * real[:, None, :, None]
    seen = (torch.ones(attn.shape[-2:]).tril().bool()[None] & real[:, :, None]).sum(-2)   # [B,N]
    sinks = p.sum(-2) > 0.1 * seen[:, None]
    return sinks & (sinks.cumsum(-1) > 1)


@pytest.mark.parametrize("layer", [0, 1])
def test_session_finds_each_heads_sinks_as_defined_on_the_pattern(layer):
    model = tiny("llama")
    ids, mask = batch(model.config.vocab_size)
    real = mask.bool()
    n = model.config.num_attention_heads
    edit = AttentionEdit((SinkCalibration(heads=[(layer, h) for h in range(n)], beta=0.4),))
    with torch.no_grad():
        with attention_session(model, edit=edit) as session:
            edited = model(ids, attention_mask=mask).logits
        eager = model(ids, attention_mask=mask, output_attentions=True)
    assert sorted(session.sinks) == [layer]
    want = _definition_sinks(eager.attentions[layer], real)
    assert want.any(), "the tiny model should have sinks past the first token"
    assert torch.equal(session.sinks[layer], want)
    assert not torch.allclose(edited * real[..., None], eager.logits * real[..., None], atol=1e-3)


def _fixed_edit_from(sinks: dict, beta: float) -> AttentionEdit:
    """The same calibration with the found sinks written as fixed per-prompt positions."""
    parts = []
    for layer, mask in sinks.items():
        for h in range(mask.shape[1]):
            positions = tuple(tuple(mask[b, h].nonzero().flatten().tolist()) for b in range(mask.shape[0]))
            parts.append(SinkCalibration(heads=((layer, h),), sink_positions=positions, beta=beta))
    return AttentionEdit(tuple(parts))


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_decode_keeps_the_prefill_sinks(kind):
    """Every decode step calibrates its row with the sinks found at the prefill: its logits equal
    the last row of a full forward over the same tokens with those sinks given as positions."""
    model = tiny(kind)
    ids, mask = batch(model.config.vocab_size)
    n = model.config.num_attention_heads
    edit = AttentionEdit((SinkCalibration(heads=[(l, h) for l in range(2) for h in range(n)], beta=0.4),))
    gen = dict(max_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True,
               pad_token_id=0)
    with torch.no_grad(), attention_session(model, edit=edit) as session:
        edited = model.generate(ids, attention_mask=mask, **gen)
        found = dict(session.sinks)
    assert sorted(found) == [0, 1] and all(m.shape[-1] == ids.shape[1] for m in found.values())
    assert any(m.any() for m in found.values())
    fixed = _fixed_edit_from(found, 0.4)
    seq = edited.sequences
    full_mask = torch.cat([mask, torch.ones(2, seq.shape[1] - mask.shape[1], dtype=mask.dtype)], 1)
    full = session_logits(model, seq[:, :-1], full_mask[:, :-1], edit=fixed)
    n_prompt = ids.shape[1]
    for step, scores in enumerate(edited.scores):
        torch.testing.assert_close(scores, full[:, n_prompt - 1 + step], atol=1e-4, rtol=1e-4)
    # the prefill step itself found the same sinks as the fixed edit names
    prefill = session_logits(model, ids, mask, edit=edit)
    torch.testing.assert_close(prefill[:, -1], edited.scores[0], atol=1e-4, rtol=1e-4)


def test_one_head_per_row_equals_each_head_alone():
    """The batched head search: row b calibrates its own head; each row's logits equal a forward
    of that prompt with only that head calibrated."""
    model = tiny("llama")
    ids, _ = batch(model.config.vocab_size)
    one = ids[:1]
    heads = [(1, 0), (0, 2), (1, 3), None]
    rows = one.expand(len(heads), -1)
    together = session_logits(model, rows, edit=AttentionEdit((SinkCalibration.per_row(heads, beta=0.4),)))
    plain = session_logits(model, one)
    for b, head in enumerate(heads):
        alone = plain if head is None else \
            session_logits(model, one, edit=AttentionEdit((SinkCalibration(heads=(head,), beta=0.4),)))
        torch.testing.assert_close(together[b], alone[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(together[0], plain[0], atol=1e-3)


@pytest.mark.slow
def test_triton_finds_the_same_sinks_on_a_real_layer(smol_model, monkeypatch):
    """One SmolLM2 layer's real q, k, v: in-forward ACT under the Triton kernel (interpreter on
    CPU) finds the same sinks and gives the same output as the torch reference and naive."""
    import os

    import kernels.hf as hf
    from kernels import LayerEdit, naive_attention, reference_attention

    if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        pytest.skip("needs a GPU or TRITON_INTERPRET=1")
    from kernels.triton_attention import triton_attention

    captured = []
    real_attention = hf.attention

    def capture(q, k, v, **kw):
        captured.append((q.detach().clone(), k.detach().clone(), v.detach().clone(), kw["scale"]))
        return real_attention(q, k, v, **kw)

    monkeypatch.setattr(hf, "attention", capture)
    model, tok = smol_model.hf_model, smol_model.tokenizer
    ids = tok("The capital of France is Paris. The capital of Italy is Rome. The capital of "
              "Spain is", return_tensors="pt").input_ids
    with torch.no_grad(), attention_session(model):
        model(ids)
    q, k, v, scale = captured[9]
    H = q.shape[1]
    edit = LayerEdit(act_beta=torch.full((H,), 0.4), act_tau=0.1)
    stats = AttentionStatsRequest(lse=True, entropy=True, sinks=True)
    ref = reference_attention(q, k, v, scale=scale, edit=edit, stats=stats)
    assert ref[1]["sinks"].sum() >= 3, "layer 9 of SmolLM2 has sinks past the first token"
    for other in (naive_attention(q, k, v, scale=scale, edit=edit, stats=stats),
                  triton_attention(q, k, v, scale=scale, edit=edit, stats=stats)):
        assert torch.equal(other[1]["sinks"], ref[1]["sinks"])
        torch.testing.assert_close(other[0].float(), ref[0].float(), atol=1e-4, rtol=1e-4)
        for name in ("lse", "entropy"):
            torch.testing.assert_close(other[1][name], ref[1][name], atol=1e-4, rtol=1e-4)
