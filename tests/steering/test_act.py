"""ACT on real SmolLM2 weights, as its authors run it: each head's sinks found inside the forward.

The definition (Yu et al., ICML 2024; GATECH-EIC/ACT's released code) is computed here from the
full [N, N] patterns TransformerLens exposes at `hook_pattern`, and compared with what the
calibrated forward found and did.
"""

from __future__ import annotations

import pytest
import torch

from interp.attention_stats import stream_attention_stats
from interp.patterns import attention_patterns
from interp.steering import act_calibration, calibrated_sinks, generate
from kernels import AttentionEdit, AttentionStatsRequest, SinkCalibration, attention_session

PROMPTS = [
    "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is",
    "When Mary and John went to the store, John gave a drink to",
    "Review: a gorgeous, witty film. Sentiment: positive\nReview: dull and far too long. "
    "Sentiment: negative\nReview: an utterly charming story. Sentiment:",
]
TAU, BETA = 0.1, 0.4


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Short forwards on a shared 2-core machine: one intra-op thread is faster (see
    tests/kernels/conftest.py)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def definition(pattern: torch.Tensor, tau: float = TAU) -> tuple[dict[int, list[int]], torch.Tensor]:
    """One layer's pattern [H, N, N] -> ({head: sinks past the first}, mean received [H, N])."""
    n = pattern.shape[-1]
    mean = pattern.double().sum(-2) / torch.arange(n, 0, -1, dtype=torch.float64)
    return {h: torch.nonzero(mean[h] > tau).flatten().tolist()[1:] for h in range(pattern.shape[0])}, mean


def test_sinks_found_in_the_forward_equal_the_definition_on_full_patterns(smollm2):
    """Calibrating all heads of one layer: the sinks the forward found there equal the rule
    applied to that layer's full pattern (the layers before it are not edited)."""
    layers = [2, 14, 28]
    compared = with_sinks = 0
    for text in PROMPTS:
        patterns = attention_patterns(smollm2, text, layers)
        for layer in layers:
            edit = act_calibration(smollm2, heads=[(layer, h) for h in range(smollm2.n_heads)])
            found = calibrated_sinks(smollm2, text, edit)
            assert {lh[0] for lh in found} <= {layer}
            want, mean = definition(patterns[layer].pattern)
            for head, positions in want.items():
                got = found.get((layer, head), [])
                differ = set(got) ^ set(positions)
                # only a key whose mean sits on tau itself may fall either way (fp32 vs eager)
                assert all(abs(float(mean[head, j]) - TAU) < 1e-5 for j in differ), (text, layer, head)
                compared += 1
                with_sinks += bool(positions)
    assert compared == len(PROMPTS) * len(layers) * smollm2.n_heads
    assert with_sinks > 20, "SmolLM2 has sinks past the first token on many heads"


def test_calibrated_rows_sum_to_one_and_the_first_sink_keeps_its_share(smollm2):
    text = PROMPTS[0]
    layer = 9
    heads = [(layer, h) for h in range(smollm2.n_heads)]
    edit = act_calibration(smollm2, heads=heads)
    batch = smollm2.tokenize(text)
    n = batch.seq_len
    every_key = torch.arange(n).expand(1, n, n)
    request = AttentionStatsRequest(gather_keys=every_key)

    def pattern(edit):
        return stream_attention_stats(smollm2, batch, request, lambda l, s, b: s["gathered"],
                                      batch_size=1, edit=edit, layers=[layer])[0, 0].double()

    before, after = pattern(None), pattern(edit)                        # [H, N, N]
    sinks = calibrated_sinks(smollm2, text, edit)
    assert sinks
    torch.testing.assert_close(after.sum(-1), torch.ones_like(after.sum(-1)), atol=1e-5, rtol=0)
    for (_, head), positions in sinks.items():
        first = 0   # the initial token is every SmolLM2 head's first sink on this prompt
        rows = torch.arange(max(positions), n)                           # rows that see all sinks
        ratio = after[head, rows] / before[head, rows]
        torch.testing.assert_close(ratio[:, positions], torch.full((len(rows), len(positions)), BETA,
                                   dtype=torch.float64), atol=1e-4, rtol=1e-4)
        others = [j for j in range(n) if j not in positions]
        # the first sink is not scaled down: it takes its share of the removed mass, like every
        # other non-sink key (one factor per row, >= 1)
        ratio_others = ratio[:, others]
        torch.testing.assert_close(ratio[:, first], ratio_others[:, 0], atol=1e-4, rtol=1e-4)
        assert (ratio[:, first] >= 1 - 1e-5).all()


def test_decode_equals_the_last_row_of_a_prefill_with_the_same_sinks(smollm2):
    """Generation with the in-forward edit: every decode step keeps the prefill's sinks, so its
    logits equal a full forward over the same tokens with those sinks given as positions."""
    heads = [(layer, h) for layer in (3, 9, 17) for h in range(smollm2.n_heads)]
    edit = act_calibration(smollm2, heads=heads)
    ids = smollm2.tokenize(PROMPTS[1]).input_ids
    model = smollm2.hf_model
    gen = dict(max_new_tokens=3, do_sample=False, output_scores=True, return_dict_in_generate=True,
               pad_token_id=smollm2.pad_token_id)
    with torch.no_grad():
        with attention_session(model, edit=edit) as session:
            edited = model.generate(ids, **gen)
            found = dict(session.sinks)
        fixed = AttentionEdit(tuple(
            SinkCalibration(heads=((layer, h),), sink_positions=tuple(mask[0, h].nonzero().flatten().tolist()),
                            beta=BETA)
            for layer, mask in found.items() for h in range(smollm2.n_heads)))
        with attention_session(model, edit=fixed):
            full = model(edited.sequences[:, :-1]).logits[0]
        plain = model(edited.sequences[:, :-1]).logits[0]
    assert sorted(found) == [3, 9, 17] and sum(int(m.sum()) for m in found.values()) > 0
    n = ids.shape[1]
    for step, scores in enumerate(edited.scores):
        torch.testing.assert_close(scores[0], full[n - 1 + step], atol=2e-4, rtol=1e-4)
    assert not torch.allclose(full[n - 1:], plain[n - 1:], atol=1e-2)   # the edit does something


def test_generate_runs_with_the_edit(smollm2):
    edit = act_calibration(smollm2, heads=[(layer, h) for layer in (2, 3) for h in range(9)])
    edited = generate(smollm2, PROMPTS[0], edit, 3)
    assert len(edited.token_ids) == 3 and edited.text.strip() and edited.edit == edit.to_dict()
    assert edited.edit["parts"][0]["tau"] == TAU and edited.edit["parts"][0]["sink_positions"] is None
