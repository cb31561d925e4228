"""Attribution patching tracks activation patching; path patching reduces to activation patching
where it must, and its first-order estimate tracks it."""

from __future__ import annotations

import pytest
import torch

from interp.errors import InvalidInput
from interp.names import hook_name
from interp.patching import activation_patch
from interp.patching.attribution import attribution_patch, correlation, path_attribution
from interp.patching.path import Receiver, path_patch
from interp.tasks.ioi import ioi_prompts


@pytest.fixture(scope="module")
def prompts(smollm2):
    return ioi_prompts(smollm2, n=4, seed=9)


def test_attribution_correlates_with_activation_patching(smollm2, prompts):
    """Late layers (where SmolLM2's IOI heads with large effects sit), noising under ABC."""
    layers = list(range(20, 30))
    prompts = prompts.subset(slice(0, 3))
    exact = activation_patch(smollm2, prompts, "heads", direction="noise", layers=layers)
    estimate = attribution_patch(smollm2, prompts, "heads", direction="noise", layers=layers)
    assert estimate.axes == exact.axes and estimate.values.shape == exact.values.shape
    assert estimate.clean == pytest.approx(exact.clean, abs=1e-3)
    assert estimate.corrupted == pytest.approx(exact.corrupted, abs=1e-3)
    agreement = correlation(exact.values, estimate.values)
    assert agreement["pearson"] > 0.7, agreement
    assert agreement["n_cells"] == len(layers) * smollm2.n_heads


def test_attribution_equals_manual_gradient_times_difference(smollm2, prompts):
    """The bridge's backward hooks deliver d(mean logit diff)/dz: recompute it with autograd."""
    from interp.hooks import cache_activations

    layer = 21
    name = hook_name("z", layer)
    prompts = prompts.subset(slice(0, 2))
    result = attribution_patch(smollm2, prompts, "heads", layers=[layer])
    clean_z = cache_activations(smollm2, prompts.tokens, [name])[name]
    kept = {}

    def keep(z, hook=None):
        kept["z"] = z
        return z

    tokens = prompts.corrupted
    rows = torch.arange(len(prompts))
    with torch.enable_grad():
        logits = smollm2.bridge.run_with_hooks(tokens.input_ids, fwd_hooks=[(name, keep)])
        final = logits[rows, tokens.final_positions]
        diff = (final[rows, prompts.answers] - final[rows, prompts.wrong_answers]).mean()
        (grad,) = torch.autograd.grad(diff, [kept["z"]])
    width = grad.shape[1]
    manual = (grad * (clean_z[:, :width] - kept["z"].detach())).sum(dim=(0, 1, 3))
    expected = manual / (result.clean - result.corrupted)
    assert torch.allclose(result.values[0], expected, atol=1e-4)


def test_path_to_logits_from_last_layer_equals_activation_noising(smollm2, prompts):
    """Nothing lies downstream of the last layer's heads, so their path to the logits is their
    total effect."""
    last = smollm2.n_layers - 1
    senders = [(last, h) for h in range(smollm2.n_heads)]
    path = path_patch(smollm2, prompts, "logits", senders=senders)
    exact = activation_patch(smollm2, prompts, "heads", direction="noise", layers=[last])
    assert torch.allclose(path.values[last], exact.values[0], atol=2e-4)
    assert torch.isnan(path.values[:last]).all()


def test_path_attribution_tracks_path_patching(smollm2, prompts):
    receivers = [Receiver(23, 3, "q", "end"), Receiver(23, 3, "k", None), Receiver(20, 0, "v", "IO")]
    senders = [(17, 4), (19, 2), (16, 0), (20, 0), (12, 3), (22, 7), (21, 3), (18, 1)]
    exact = path_patch(smollm2, prompts, receivers, senders=senders)
    estimate = path_attribution(smollm2, prompts, receivers, senders=senders)
    pairs = [(float(exact.values[s]) - 1, float(estimate.values[s]) - 1) for s in senders]
    a, b = torch.tensor(pairs).T
    assert correlation(a, b)["pearson"] > 0.8, pairs
    assert exact.params["key_receivers_are_kv_groups"] is True
    # Senders at or after a receiver's layer cannot reach it.
    only_late = path_patch(smollm2, prompts, [Receiver(10, 0, "q", "end")], senders=[(9, 1), (12, 0)])
    assert torch.isnan(only_late.values[12, 0]) and not torch.isnan(only_late.values[9, 1])


def test_value_receiver_is_exact_per_query_head(smollm2, prompts):
    """z = pattern @ v in the bridge (what the per-query-head value receiver relies on), and a
    value receiver changes only its own head's output, not its KV-group siblings'."""
    from interp.hooks import cache_activations

    names = [hook_name(activation, 20) for activation in ("v", "pattern", "z")]
    cache = cache_activations(smollm2, prompts.tokens, names)
    group = smollm2.n_heads // smollm2.n_kv_heads
    v = cache[names[0]].repeat_interleave(group, dim=2)
    z = torch.einsum("bhqk,bkhd->bqhd", cache[names[1]], v)
    mask = prompts.tokens.mask[:, :, None, None]
    assert torch.allclose(z * mask, cache[names[2]] * mask, atol=1e-5)


def test_bad_receivers(smollm2, prompts):
    with pytest.raises(InvalidInput, match="receiver input"):
        path_patch(smollm2, prompts, [Receiver(5, 0, "o")])
    with pytest.raises(InvalidInput, match="at or after"):
        path_patch(smollm2, prompts, [Receiver(5, 0, "q")], senders=[(6, 0)])
    with pytest.raises(InvalidInput, match=r"head \(2, 40\) does not exist"):
        path_attribution(smollm2, prompts, [Receiver(5, 0, "q")], senders=[(2, 40)])
    with pytest.raises(InvalidInput, match=r"head \(5, 12\) does not exist"):
        path_attribution(smollm2, prompts, [Receiver(5, 12, "q")])


def test_a_sender_above_a_lower_receiver_leaves_that_receiver_clean(smollm2, prompts):
    """Receivers in two layers and a sender between them (what discovery does on Gemma): the
    lower receiver keeps its clean input, so the result equals the upper receiver's alone.
    (Step A used to start the sender's rows above the lower receiver, whose hook never fired.)"""
    senders = [(6, 1), (7, 4)]
    both = path_patch(smollm2, prompts, [Receiver(3, 2, "q"), Receiver(12, 0, "q")], senders=senders)
    upper = path_patch(smollm2, prompts, [Receiver(12, 0, "q")], senders=senders)
    for layer, head in senders:
        assert float(both.raw[layer, head]) == pytest.approx(float(upper.raw[layer, head]), abs=1e-4)
