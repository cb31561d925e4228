"""Activation patching on SmolLM2: the batched patcher equals a plain looped implementation, the
layer-skipping runner equals a full forward, and the normalization means what it says."""

from __future__ import annotations

import pytest
import torch

from interp.errors import InvalidInput
from interp.forward import run
from interp.hooks import cache_activations
from interp.names import hook_name
from interp.patching import PatchResult, activation_patch, patching_prompts
from interp.tasks.ioi import ioi_prompts


@pytest.fixture(scope="module")
def prompts(smollm2):
    return ioi_prompts(smollm2, n=2, seed=5)


def _looped_reference(model, prompts, activation, layers, units, direction):
    """One plain bridge forward per (layer, unit in `units`), full logits, no batching or
    skipping."""
    source, target = ((prompts.tokens, prompts.corrupted) if direction == "denoise"
                      else (prompts.corrupted, prompts.tokens))
    rows = torch.arange(len(prompts))

    def logit_diff(tokens, hooks):
        with torch.no_grad():
            logits = model.bridge.run_with_hooks(tokens.input_ids, fwd_hooks=hooks)
        final = logits[rows, tokens.final_positions]
        return float((final[rows, prompts.answers] - final[rows, prompts.wrong_answers]).mean())

    clean, corrupted = logit_diff(prompts.tokens, []), logit_diff(prompts.corrupted, [])
    names = [hook_name(activation, layer) for layer in layers]
    cache = cache_activations(model, source, names)
    out = torch.zeros(len(layers), len(units))
    for i, name in enumerate(names):
        for j, unit in enumerate(units):
            def patch(activation, hook=None, name=name, unit=unit):
                activation = activation.clone()
                activation[:, :, unit] = cache[name][:, : activation.shape[1], unit]
                return activation
            out[i, j] = (logit_diff(target, [(name, patch)]) - corrupted) / (clean - corrupted)
    return out


@pytest.mark.parametrize("component,activation,direction,layer", [
    ("heads", "z", "denoise", 23),
    ("v", "v", "noise", 4),
])
def test_batched_equals_looped(smollm2, prompts, component, activation, direction, layer):
    layers = [layer]
    batched = activation_patch(smollm2, prompts, component, direction=direction, layers=layers,
                               batch_size=16)
    units = smollm2.n_heads if component == "heads" else smollm2.n_kv_heads
    checked = [0, 3, 8] if component == "heads" else [0, 1, 2]  # a loop over all 9 is slow
    looped = _looped_reference(smollm2, prompts, activation, layers, checked, direction)
    assert batched.values.shape == (1, units)
    assert torch.allclose(batched.values[:, checked], looped, atol=2e-4), (batched.values, looped)
    assert batched.axes == ("layer", "head" if component == "heads" else "kv_head")


def test_resid_patching_is_normalized_and_positioned(smollm2, prompts):
    # Patching the whole residual stream at any layer restores the clean run exactly.
    whole = activation_patch(smollm2, prompts, "resid", positions=None, layers=[0, 17, 29])
    assert torch.allclose(whole.values, torch.ones(3), atol=1e-4)
    # Per named position: at layer 0 only the name tokens differ; by the last layer the answer
    # has moved to "end", nearly all of it.
    named = activation_patch(smollm2, prompts, "resid", layers=[0, 29])
    assert named.labels["position"] == ["IO", "S1", "S1+1", "S2", "end"]
    first, last = named.values
    assert abs(float(first[2])) < 1e-4 and abs(float(first[4])) < 1e-4  # S1+1, end: same tokens
    assert abs(float(first[0])) > 0.1  # the IO name itself
    assert abs(float(last[4]) - 1.0) < 0.1 and float(last[:4].abs().max()) < 0.1


def test_skipping_blocks_matches_full_forward(smollm2, prompts):
    from interp.patching.activation import final_logits_and_cache

    tokens, resid = prompts.tokens, hook_name("resid_pre", 12)
    full, cache = final_logits_and_cache(smollm2, tokens, [resid])
    skipped = run(smollm2, tokens, start_layer=12, start_residual=cache[resid])
    with torch.no_grad():
        plain = smollm2.bridge(tokens.input_ids)[torch.arange(len(prompts)), tokens.final_positions]
    assert torch.allclose(full, plain, atol=1e-4)
    assert torch.allclose(skipped, plain, atol=1e-3)
    # The blocks are restored afterwards.
    assert "forward" not in smollm2.bridge.blocks[0].__dict__


def test_patch_result_json_and_store_roundtrip(smollm2, prompts, tmp_store):
    result = activation_patch(smollm2, prompts, "mlp", layers=[28, 29])
    assert result.axes == ("layer", "position")
    again = PatchResult.from_json(result.to_json())
    assert torch.allclose(again.values, result.values) and again.labels == result.labels
    run_id = result.save(tmp_store)
    (record,) = tmp_store.list_runs(kind="patch", status="complete")
    assert record.id == run_id and record.result["component"] == "mlp"
    loaded = PatchResult.load(tmp_store, run_id)
    assert torch.allclose(loaded.values, result.values)
    assert torch.allclose(tmp_store.load_artifact(run_id, "patch")["values"], result.values)


def test_metrics(smollm2, prompts):
    kl = activation_patch(smollm2, prompts, "resid", metric="kl", positions=None, layers=[5])
    assert kl.clean == pytest.approx(0.0, abs=1e-5) and kl.corrupted > 0
    assert float(kl.values[0]) == pytest.approx(1.0, abs=1e-4)
    prob = activation_patch(smollm2, prompts, "heads", metric="prob", layers=[29], direction="noise")
    assert 0 < prob.corrupted < prob.clean < 1

    def answer_logit(logits, targets):
        return logits[torch.arange(logits.shape[0]), targets.answers]

    custom = activation_patch(smollm2, prompts, "heads", metric=answer_logit, layers=[29])
    assert custom.metric == "answer_logit" and custom.values.shape == (1, 9)


def test_clear_errors(smollm2, prompts):
    with pytest.raises(InvalidInput, match=r"clean prompt 0 .*'The cat sat'.* 3 tokens"):
        patching_prompts(smollm2, ["The cat sat"], ["The big cat sat"], [" on"], [" in"])
    with pytest.raises(InvalidInput, match=r"answers\[0\] = ' Zyxwvutsrq' is \d+ tokens"):
        patching_prompts(smollm2, ["The city of"], ["The town of"], [" Zyxwvutsrq"], [" Rome"])
    bad = prompts.subset(slice(0, 3))
    bad.answers = torch.stack([bad.answers, bad.answers], dim=1)
    with pytest.raises(InvalidInput, match="Multi-token answers"):
        activation_patch(smollm2, bad, "heads", layers=[0])
    with pytest.raises(InvalidInput, match="unknown component"):
        activation_patch(smollm2, prompts, "neurons")
    with pytest.raises(InvalidInput, match="one token length"):
        activation_patch(smollm2, ioi_prompts(smollm2, n=8, seed=0), "resid", positions="each",
                         layers=[0])
    ok = patching_prompts(smollm2, ["The capital of France is"], ["The capital of Italy is"],
                          [" Paris"], [" Rome"])
    assert len(ok) == 1 and ok.answers.tolist() == [smollm2.single_token_id(" Paris")]
