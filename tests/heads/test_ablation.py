"""Head ablation through hook_z: zero ablation equals the fused kernel's HeadScale(0); mean
ablation writes the reference means; the hooks reach hf_model forwards and generate()."""

import pytest
import torch

from interp.ablation import ablate_heads, head_means
from interp.errors import InvalidInput
from interp.names import check_heads, hook_name
from interp.forward import kernel_attention
from kernels import AttentionEdit, HeadScale

pytestmark = pytest.mark.slow

TEXTS = ["The cat sat on the mat and looked at the door.", "Bread rises slowly in a cool room."]
HEADS = [(3, 1), (18, 6), (18, 2)]


@torch.no_grad()
def test_zero_ablation_equals_kernel_head_scale_zero(smollm2):
    batch = smollm2.tokenize(TEXTS)
    mask = batch.mask.long()
    clean = smollm2.hf_model(batch.input_ids, attention_mask=mask).logits
    with ablate_heads(smollm2, HEADS, "zero"):
        hooked = smollm2.hf_model(batch.input_ids, attention_mask=mask).logits
    with kernel_attention(smollm2, edit=AttentionEdit((HeadScale(HEADS, 0.0),))):
        fused = smollm2.hf_model(batch.input_ids, attention_mask=mask).logits
    real = batch.mask
    assert (hooked - clean)[real].abs().max() > 1e-2          # the ablation did something
    assert (hooked - fused)[real].abs().max() < 1e-3
    # and the hooks are gone after the block
    again = smollm2.hf_model(batch.input_ids, attention_mask=mask).logits
    torch.testing.assert_close(again, clean)


@torch.no_grad()
def test_mean_ablation_writes_the_reference_means(smollm2):
    batch = smollm2.tokenize(TEXTS)
    means = head_means(smollm2, batch)
    assert means.shape == (smollm2.n_layers, smollm2.n_heads, smollm2.d_head)
    # head_means skips pads: the padded batch gives the length-weighted mean of the single runs
    singles = [head_means(smollm2, [t]) for t in TEXTS]
    lengths = batch.lengths.float()
    expected = (singles[0] * lengths[0] + singles[1] * lengths[1]) / lengths.sum()
    torch.testing.assert_close(means, expected, atol=1e-5, rtol=1e-4)

    seen = {}
    def record(z, hook):
        seen["z"] = z.detach().clone()
    with ablate_heads(smollm2, HEADS, "mean", means):
        with smollm2.bridge.hooks(fwd_hooks=[(hook_name("z", 18), record)]):
            smollm2.hf_model(batch.input_ids[:1])
    z = seen["z"][0]                                          # [pos, H, dh]
    torch.testing.assert_close(z[:, 6], means[18, 6].expand_as(z[:, 6]))
    torch.testing.assert_close(z[:, 2], means[18, 2].expand_as(z[:, 2]))
    assert (z[:, 0] - means[18, 0]).abs().max() > 1e-3      # other heads untouched


@torch.no_grad()
def test_ablation_reaches_generate(smollm2):
    ids = smollm2.tokenize(["The capital of France is"]).input_ids
    clean = smollm2.hf_model.generate(ids, max_new_tokens=4, do_sample=False)
    all_heads = [(l, h) for l in range(smollm2.n_layers) for h in range(smollm2.n_heads)]
    with ablate_heads(smollm2, all_heads, "zero"):
        ablated = smollm2.hf_model.generate(ids, max_new_tokens=4, do_sample=False)
    assert not torch.equal(clean, ablated)


def test_bad_ablation_requests_are_clear_errors(smollm2):
    with pytest.raises(InvalidInput, match="does not exist"):
        check_heads(smollm2, [(30, 0)])
    with pytest.raises(InvalidInput, match="layer, head"):
        check_heads(smollm2, [(1,)])
    with pytest.raises(InvalidInput, match="head_means"):
        with ablate_heads(smollm2, HEADS, "mean"):
            pass
    with pytest.raises(InvalidInput, match="method"):
        with ablate_heads(smollm2, HEADS, "resample"):
            pass
    with pytest.raises(InvalidInput, match="d_head"):
        with ablate_heads(smollm2, HEADS, "mean", torch.zeros(2, 2, 2)):
            pass
