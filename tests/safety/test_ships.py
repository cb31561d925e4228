"""Ships and Sahara: the batched scan against a plain forward per head, the reference's
definitions (KL direction, principal angle), what eps-scaling a query does, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from interp.errors import InvalidInput
from interp.heads.safety import (ABLATIONS, head_ablation, kl_divergence, principal_angle,
                                 sahara, ships_scan)
from interp.names import hook_name
from interp.tasks.safety import safety_prompt_set

LAYER = 22  # late layers: the scan reruns only layers LAYER.., which keeps the test cheap


@pytest.fixture(scope="module")
def two_prompts(qwen, refused):
    return safety_prompt_set(qwen, refused[:2], "harmful")


@pytest.fixture(scope="module")
def base_logprobs(qwen, two_prompts):
    return last_logprobs(qwen, two_prompts)


@torch.no_grad()
def last_logprobs(model, prompts):
    batch = prompts.tokens
    logits = model.hf_model(batch.input_ids, attention_mask=batch.mask.long()).logits
    return torch.log_softmax(logits[torch.arange(len(prompts)), batch.final_positions].float(), -1)


def test_kl_matches_the_reference_formula():
    # lib/SHIPS/pd_diff.py: sum(p_base * log(p_base / p_mask)) with 1e-12 added to both
    base, ablated = torch.log_softmax(torch.randn(4, 100), -1), torch.log_softmax(torch.randn(4, 100), -1)
    p, q = base.exp() + 1e-12, ablated.exp() + 1e-12
    reference = (p * torch.log(p / q)).sum(-1)
    assert torch.allclose(kl_divergence(base, ablated), reference, atol=1e-5)
    assert torch.allclose(kl_divergence(base, base), torch.zeros(4), atol=1e-6)


def test_principal_angle_matches_scipy_and_known_cases():
    gen = torch.Generator().manual_seed(0)
    base, other = torch.randn(6, 32, generator=gen), torch.randn(6, 32, generator=gen)
    u_base = np.linalg.svd(base.numpy().astype(np.float64), full_matrices=False)[0][:, :1]
    u_other = np.linalg.svd(other.numpy().astype(np.float64), full_matrices=False)[0][:, :1]
    expected = np.degrees(scipy.linalg.subspace_angles(u_base, u_other)).sum()
    assert principal_angle(base, other).item() == pytest.approx(expected, abs=1e-3)
    assert principal_angle(base, 3.0 * base).item() == pytest.approx(0.0, abs=1e-2)
    # batched over ablations
    both = principal_angle(base, torch.stack([base, other]))
    assert both.shape == (2,) and both[1].item() == pytest.approx(expected, abs=1e-3)
    # rank 2: two angles summed
    u2b = np.linalg.svd(base.double().numpy(), full_matrices=False)[0][:, :2]
    u2o = np.linalg.svd(other.double().numpy(), full_matrices=False)[0][:, :2]
    assert principal_angle(base, other, rank=2).item() == pytest.approx(
        np.degrees(scipy.linalg.subspace_angles(u2b, u2o)).sum(), abs=1e-3)
    with pytest.raises(InvalidInput, match="at least 2 prompts"):
        principal_angle(base[:1], other[:1])


@pytest.mark.parametrize("method,head", zip(ABLATIONS, (0, 9, 5, 12)))
def test_batched_scan_equals_a_plain_forward_per_head(qwen, two_prompts, base_logprobs, method, head):
    scan = ships_scan(qwen, two_prompts, method, layers=[LAYER + 1])
    assert scan.shared_prefix_tokens > 10  # the chat template's system prompt is shared
    with head_ablation(qwen, [(LAYER + 1, head)], method, z_mean=scan.z_mean):
        ablated = last_logprobs(qwen, two_prompts)
    expected = kl_divergence(base_logprobs, ablated)
    assert torch.allclose(scan.kl[:, LAYER + 1, head], expected, rtol=0.02, atol=2e-6), method
    assert torch.isnan(scan.kl[:, LAYER]).all() and not torch.isnan(scan.kl[:, LAYER + 1]).any()
    assert (scan.kl[:, LAYER + 1] >= 0).all() and scan.kl[:, LAYER + 1].max() > 1e-4


def test_the_model_is_itself_after_an_ablation(qwen, two_prompts, base_logprobs):
    with head_ablation(qwen, [(LAYER, 3)]):
        ablated = last_logprobs(qwen, two_prompts)
    assert not torch.allclose(ablated, base_logprobs, atol=1e-5)
    assert torch.allclose(last_logprobs(qwen, two_prompts), base_logprobs, atol=1e-5)


def test_background_heads_stay_ablated_under_each_scanned_head(qwen, two_prompts):
    background = [(LAYER + 1, 4)]
    scan = ships_scan(qwen, two_prompts, "query_scale", layers=[LAYER], background=background)
    with head_ablation(qwen, background):
        out = qwen.hf_model(two_prompts.tokens.input_ids, output_hidden_states=True)
    rows, last = torch.arange(2), two_prompts.tokens.final_positions
    base = torch.log_softmax(out.logits[rows, last].float(), -1)
    # the scan's base is the background-ablated model; hidden_states[-1] is after the final norm
    assert torch.allclose(scan.base_hidden, out.hidden_states[-1][rows, last], atol=1e-3)
    with head_ablation(qwen, background + [(LAYER, 5)]):
        both = last_logprobs(qwen, two_prompts)
    assert torch.allclose(scan.kl[:, LAYER, 5], kl_divergence(base, both), rtol=0.02, atol=2e-6)


def test_eps_scaled_query_attends_uniformly(qwen, two_prompts):
    """What the paper's ablation does: q * 1e-5 makes the head's scores ~0, so its attention is
    uniform over the causal prefix."""
    patterns = {}

    def keep(pattern, hook):
        patterns["p"] = pattern.detach()

    ids = two_prompts.tokens.input_ids[:1, : int(two_prompts.tokens.lengths[0])]
    with head_ablation(qwen, [(LAYER, 3)]):
        qwen.bridge.run_with_hooks(ids, fwd_hooks=[(hook_name("pattern", LAYER), keep)],
                                   return_type=None)
    pattern = patterns["p"][0]                                       # [H, q, k]
    n = pattern.shape[-1]
    uniform = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]
    assert torch.allclose(pattern[3], uniform, atol=1e-4)
    assert not torch.allclose(pattern[4], uniform, atol=1e-2)       # other heads untouched


def test_sahara_greedy_set_on_a_small_scale(qwen, two_prompts):
    prompts = two_prompts
    result = sahara(qwen, prompts, steps=2, layers=[LAYER + 1])
    first, second = result.heads
    assert first[0] == second[0] == LAYER + 1 and first != second
    # step 1 picks the head with the largest angle; step 2 does not pick it again
    assert result.step_scores[0][first].item() == pytest.approx(result.angles[0])
    assert result.step_scores[0].max().item() == pytest.approx(result.angles[0])
    assert result.step_scores[1][first].item() == 0.0
    # the angle of the pair is what ablating both heads does to the unablated subspace
    hidden = {}
    for heads in ([], [first, second]):
        with head_ablation(qwen, heads):
            out = qwen.hf_model(prompts.tokens.input_ids, output_hidden_states=True).hidden_states[-1]
        hidden[len(heads)] = out[torch.arange(2), prompts.tokens.final_positions]
    assert principal_angle(hidden[0], hidden[2]).item() == pytest.approx(result.angles[1], abs=0.05)


def test_bad_scan_inputs(qwen, two_prompts):
    with pytest.raises(InvalidInput, match="unknown ablation"):
        ships_scan(qwen, two_prompts, "shuffle", layers=[LAYER])
    with pytest.raises(InvalidInput, match="layers must lie"):
        ships_scan(qwen, two_prompts, layers=[24])
    with pytest.raises(InvalidInput, match="outside|does not exist"):
        ships_scan(qwen, two_prompts, layers=[LAYER], background=[(3, 14)])
    with pytest.raises(InvalidInput, match="z_mean"):
        with head_ablation(qwen, [(1, 1)], "mean"):
            pass
    with pytest.raises(InvalidInput, match="steps"):
        sahara(qwen, two_prompts, steps=0)
