"""Steering edits on real SmolLM2 weights: each edit does what its paper defines, and only that."""

from __future__ import annotations

import pytest
import torch

from interp.attention_stats import stream_attention_stats
from interp.errors import InvalidInput
from interp.steering import (act_calibration, calibrated_sinks, find_sinks, generate, pasta_highlight,
                            scale_heads, token_spans)
from kernels import AttentionStatsRequest

IOI = "When Mary and John went to the store, John gave a drink to"
FACTS = "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is"


def _key_mass(model, text, positions, edit=None):
    """[L, H] mean, over the queries that see all `positions`, of the attention mass on them."""
    batch = model.tokenize(text)
    mask = torch.zeros_like(batch.mask)
    mask[:, positions] = True
    start = max(positions)  # the queries that see every one of the positions
    return stream_attention_stats(
        model, batch, AttentionStatsRequest(key_mask=mask),
        lambda layer, s, b: s["key_mass"][:, :, start:].mean(-1), edit=edit, batch_size=1,
    )[:, 0]


def test_unedited_generation_matches_hf_greedy(smollm2):
    ours = generate(smollm2, IOI, max_new_tokens=4)
    batch = smollm2.tokenize(IOI)
    with torch.no_grad():
        reference = smollm2.hf_model.generate(batch.input_ids, max_new_tokens=4, do_sample=False,
                                              pad_token_id=smollm2.pad_token_id)
    assert ours.token_ids == reference[0, batch.seq_len:].tolist()
    assert ours.text.startswith(" Mary")


def test_ablating_late_heads_breaks_the_answer_and_scale_one_is_identity(smollm2):
    late = [(layer, head) for layer in range(20, 30) for head in range(9)]
    assert generate(smollm2, IOI, scale_heads(smollm2, late, 1.0), 3).text.startswith(" Mary")
    assert not generate(smollm2, IOI, scale_heads(smollm2, late, 0.0), 3).text.startswith(" Mary")


def test_act_scales_sink_mass_by_beta(smollm2):
    """ACT's definition: on a calibrated head the sinks' mass becomes beta times the original."""
    sinks = find_sinks(smollm2, FACTS)
    assert sinks, "SmolLM2 has sinks past the first token on this prompt"
    (layer, head), positions = min(sinks.items())   # the first layer with one: nothing upstream edited
    edit = act_calibration(smollm2, FACTS, heads=[(layer, head)], beta=0.4)
    assert calibrated_sinks(smollm2, FACTS, edit) == {(layer, head): positions}
    before = _key_mass(smollm2, FACTS, positions)
    after = _key_mass(smollm2, FACTS, positions, edit)
    # Per row s' = beta * s; the mean over rows keeps the factor.
    assert float(after[layer, head]) == pytest.approx(0.4 * float(before[layer, head]), rel=1e-3)
    untouched = [h for h in range(9) if h != head]   # heads not calibrated keep their attention
    assert torch.allclose(after[layer, untouched], before[layer, untouched], atol=1e-5)
    assert torch.allclose(after[:layer], before[:layer], atol=1e-5)


def test_find_sinks_follows_the_threshold(smollm2):
    loose, strict = find_sinks(smollm2, FACTS, tau=0.05), find_sinks(smollm2, FACTS, tau=0.2)
    assert strict and set(strict) <= set(loose)
    assert all(set(strict[h]) <= set(loose[h]) for h in strict)
    assert all(0 not in positions for positions in loose.values())   # the first sink is left alone
    every = find_sinks(smollm2, FACTS, tau=0.05, exclude_first=False)
    assert all(every[h][1:] == loose[h] for h in loose)
    assert sum(0 in positions for positions in every.values()) > 200   # BOS sinks nearly everywhere


def test_pasta_moves_attention_to_the_highlight(smollm2):
    heads = [(layer, head) for layer in range(10, 20) for head in range(9)]
    [span] = token_spans(smollm2, IOI, "Mary")
    positions = list(range(*span))
    edit = pasta_highlight(smollm2, IOI, "Mary", heads, alpha=0.01)
    before = _key_mass(smollm2, IOI, positions)
    after = _key_mass(smollm2, IOI, positions, edit)
    assert (after[10:20] > before[10:20]).all()
    assert torch.allclose(after[:10], before[:10], atol=1e-5)


def test_token_spans_and_bad_input(smollm2):
    spans = token_spans(smollm2, IOI, "John")
    assert len(spans) == 2
    tokens = smollm2.to_str_tokens(smollm2.encode(IOI))
    assert all("John" in "".join(tokens[a:b]) for a, b in spans)
    with pytest.raises(InvalidInput, match="does not occur"):
        token_spans(smollm2, IOI, "Alice")
    with pytest.raises(InvalidInput, match="do not exist"):
        scale_heads(smollm2, [(30, 0)], 0.0)
    with pytest.raises(InvalidInput, match="beta"):
        act_calibration(smollm2, FACTS, heads=[(3, 1)], beta=1.5)
    with pytest.raises(InvalidInput, match="tau"):
        act_calibration(smollm2, FACTS, heads=[(3, 1)], tau=5.0)   # a fraction, not a multiple of 1/N
    with pytest.raises(InvalidInput, match="name them"):            # no "every head with a sink"
        act_calibration(smollm2, FACTS)
    with pytest.raises(InvalidInput, match="does not exist"):
        act_calibration(smollm2, FACTS, heads=[(30, 0)])


def test_steer_command_prints_both_generations(smollm2, capsys, tmp_path):
    from interp_cli.main import main

    edit_path = tmp_path / "edit.json"
    assert main(["steer", "--device", "cpu", "--prompt", IOI, "--heads", "20.0,21.1",
                 "--scale", "0", "--max-new-tokens", "2", "--edit-json", str(edit_path)]) == 0
    out = capsys.readouterr().out
    assert "without: ' Mary" in out and "with:" in out
    import json

    from kernels import AttentionEdit

    edit = AttentionEdit.from_dict(json.loads(edit_path.read_text()))
    assert edit.parts[0].heads == ((20, 0), (21, 1)) and edit.parts[0].scale == 0.0


def test_steer_command_rejects_bad_heads(capsys):
    from interp_cli.main import main

    assert main(["steer", "--prompt", "x", "--heads", "20-1", "--scale", "0"]) == 2
    assert "LAYER.HEAD" in capsys.readouterr().err
