"""ACT head search on real SmolLM2 weights: its shortcuts are exact, it is deterministic, and a
saved calibration round-trips and applies."""

from __future__ import annotations

import pytest
import torch

from interp.errors import InvalidInput
from interp.forward import run
from interp.steering.act import act_calibration
from interp.steering.act_search import (Calibration, _baseline, _from_layer, search_heads,
                                        single_head_gains)
from interp.tasks.icl import (build_prompts, evaluate, label_token_ids, load_task, margins,
                              tokenize_prompts)
from interp.tokens import TokenBatch
from kernels import AttentionEdit, SinkCalibration


@pytest.fixture(scope="module")
def sst2(shared_data):
    folder = shared_data / "icl" / "sst2"
    task, train = load_task(folder / "stsa.binary.train")
    _, dev = load_task(folder / "stsa.binary.dev", task=task)
    return task, train[:200], dev[:100]


@pytest.fixture(scope="module")
def searched(smollm2, sst2):
    task, train, dev = sst2
    return search_heads(smollm2, task, train, dev, shots=0, n_calibration=3, n_dev=3, seed=0,
                        screen=4, max_candidates=2, patience=1)


def _full(model, tokens, edit, label_ids):
    batch = TokenBatch.from_lists(tokens, model.pad_token_id)
    with torch.no_grad():
        out = run(model, batch, output="final_logprobs", edit=edit)
    return out[:, label_ids]


def test_single_head_shortcuts_equal_full_calibrated_forwards(smollm2, sst2):
    """The search runs a head only on prompts where it has a hidden sink, from its own layer:
    both must equal a full forward with that head calibrated."""
    task, train, _ = sst2
    label_ids = label_token_ids(smollm2, task)
    tokens = tokenize_prompts(smollm2, build_prompts(task, train[10:12], train, shots=1))
    base = _baseline(smollm2, tokens, label_ids, 0.1, 8, None)
    torch.testing.assert_close(base.logprobs, _full(smollm2, tokens, None, label_ids))
    with_sink = base.has_sink[0].nonzero().tolist()
    without = (~base.has_sink[0]).nonzero().tolist()
    (layer, head), (layer0, head0) = with_sink[len(with_sink) // 2], without[-1]
    edit = AttentionEdit((SinkCalibration(heads=((layer, head),)),))
    shortcut = _from_layer(smollm2, tokens, base.resid, [0], layer, edit, label_ids)
    full = _full(smollm2, tokens[:1], edit, label_ids)
    torch.testing.assert_close(shortcut, full, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(full, base.logprobs[:1], atol=1e-6)   # the head's sink mattered
    identity = AttentionEdit((SinkCalibration(heads=((layer0, head0),)),))
    torch.testing.assert_close(_full(smollm2, tokens[:1], identity, label_ids), base.logprobs[:1])


def test_single_head_gains_match_one_head_at_a_time(smollm2, sst2):
    task, train, _ = sst2
    label_ids = label_token_ids(smollm2, task)
    tokens = tokenize_prompts(smollm2, build_prompts(task, train[20:22], train, shots=1))
    gold = torch.tensor([task.labels.index(e.label) for e in train[20:22]])
    base = _baseline(smollm2, tokens, label_ids, 0.1, 8, None)
    tried = base.has_sink.any(0).nonzero().tolist()[::25]        # a spread of heads with sinks
    acc_gain, margin_gain = single_head_gains(smollm2, tokens, gold, label_ids, base, heads=tried)
    layer, head = divmod(int(margin_gain.abs().argmax()), smollm2.n_heads)
    untried = [(l, h) for l in range(smollm2.n_layers) for h in range(smollm2.n_heads)
               if [l, h] not in tried]
    assert all(margin_gain[x] == 0 for x in untried)
    edit = AttentionEdit((SinkCalibration(heads=((layer, head),)),))
    full = margins(_full(smollm2, tokens, edit, label_ids), gold)
    expected = (full - margins(base.logprobs, gold)).mean()
    assert float(margin_gain[layer, head]) == pytest.approx(float(expected), abs=1e-4)
    assert margin_gain.abs().max() > 0


def test_search_is_deterministic_for_a_seed(smollm2, sst2, searched):
    task, train, dev = sst2
    again = search_heads(smollm2, task, train, dev, shots=0, n_calibration=3, n_dev=3, seed=0,
                         screen=4, max_candidates=2, patience=1)
    assert again.heads == searched.heads and again.head_gains == searched.head_gains
    assert again.dev_accuracy == searched.dev_accuracy
    assert searched.dev_accuracy >= searched.baseline_dev_accuracy
    assert searched.data["n_calibration"] == 3 and searched.data["shots"] == 0
    assert len(searched.head_gains) == 4           # the screen kept 4 heads for the exact step


def test_a_saved_calibration_round_trips_and_applies(smollm2, sst2, searched, tmp_path, tmp_store):
    task, train, dev = sst2
    calibration = Calibration(smollm2.model_id, [(5, 1), (9, 3)], data={"task": "sst2"},
                              dev_accuracy=0.5)
    calibration.save(tmp_path / "cal.json")
    loaded = Calibration.load(tmp_path / "cal.json")
    assert loaded == calibration
    run_id = loaded.save_to_store(tmp_store)
    assert Calibration.from_store(tmp_store, run_id) == calibration
    assert Calibration.from_store(tmp_store, model_id=smollm2.model_id) == calibration
    applied = evaluate(smollm2, task, dev[:4], train, shots=1, edit=loaded.edit(smollm2))
    direct = evaluate(smollm2, task, dev[:4], train, shots=1,
                      edit=act_calibration(smollm2, heads=[(5, 1), (9, 3)]))
    assert applied.predictions == direct.predictions
    assert Calibration.from_json(searched.to_json()) == searched
    (tmp_path / "bad.json").write_text('{"heads": []}')
    with pytest.raises(InvalidInput, match="interp calibrate --save"):
        Calibration.load(tmp_path / "bad.json")
    other = Calibration("gemma-3-270m@000000000000", [(0, 0)])
    with pytest.raises(InvalidInput, match="searched on gemma"):
        other.edit(smollm2)


def test_the_screens_pattern_change_is_act_on_a_real_pattern(smollm2):
    """The first-order screen's A' - A: sinks as `find_sinks` finds them, sink entries scaled by
    beta, the first sink and rows' totals untouched."""
    from interp.steering.act import find_sinks
    from interp.steering.act_search import act_pattern_change

    text = "The cat sat on the mat. The dog sat on the log. Then the cat, the dog and I went home."
    batch = smollm2.tokenize(text)
    kept = {}
    layer = 9
    run(smollm2, batch, output=None, engine="bridge",
        hooks=[(f"blocks.{layer}.attn.hook_pattern", lambda p, hook=None: kept.update(p=p))])
    pattern = kept["p"].detach().float()                                      # [1, H, N, N]
    change = act_pattern_change(pattern, batch.mask, 0.1, 0.4)
    after = pattern + change
    torch.testing.assert_close(after.sum(-1), pattern.sum(-1))                # rows still sum to 1
    assert (after >= -1e-7).all()
    sinks = find_sinks(smollm2, text)
    heads = [h for (l, h) in sinks if l == layer]
    assert heads, "layer 9 of SmolLM2 has hidden sinks on this prompt"
    for head in range(smollm2.n_heads):
        moved = change[0, head].abs().sum(0) > 0                              # [N] keys touched
        if head not in heads:
            assert not moved.any()
            continue
        for position in sinks[(layer, head)]:
            rows = slice(position, None)
            torch.testing.assert_close(after[0, head, rows, position],
                                       0.4 * pattern[0, head, rows, position])
        # the first sink (the initial token) is left alone: it only ever gains mass back
        assert 0 not in sinks[(layer, head)]
        assert (after[0, head, :, 0] >= pattern[0, head, :, 0] - 1e-7).all()
