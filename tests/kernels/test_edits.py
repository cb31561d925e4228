"""The declarative edit objects: JSON round trip, materialization, validation."""
import json
import math

import pytest
import torch

from kernels import AttentionEdit, HeadScale, KeyBias, SinkCalibration, pasta


def full_edit():
    return AttentionEdit((
        HeadScale(heads=((0, 1), (2, 0)), scale=0.0),
        KeyBias(heads=[[0, 1]], spans=((1, 3),), bias=2.0),
        pasta(heads=((0, 2),), highlight_spans=(((0, 2),), ((3, 5), (6, 7))), alpha=0.01),
        SinkCalibration(heads=((0, 0), (0, 1)), sink_positions=(0,), beta=0.4),
    ))


ACT_EDITS = [
    SinkCalibration(heads=((3, 1), (2, 0)), beta=0.4, tau=0.1, exclude_first=True),
    SinkCalibration(heads=((3, 1),), beta=0.25, tau=0.2, exclude_first=False),
    SinkCalibration.per_row([(3, 1), None, ((2, 0), (3, 2))], beta=0.4),
    SinkCalibration(heads=((1, 1),), sink_positions=((0,), (2, 3)), beta=0.5),
]


@pytest.mark.parametrize("edit", [full_edit()] + [AttentionEdit((p,)) for p in ACT_EDITS])
def test_json_round_trip(edit):
    text = json.dumps(edit.to_dict())
    back = AttentionEdit.from_dict(json.loads(text))
    assert back == edit
    assert back.to_dict() == edit.to_dict()


def test_old_json_still_loads():
    """A SinkCalibration saved before sinks could be found in the forward: fixed positions."""
    old = {"parts": [{"kind": "sink_calibration", "heads": [[0, 1]], "sink_positions": [0, 4],
                      "beta": 0.4}]}
    part = AttentionEdit.from_dict(old).parts[0]
    assert part.sink_positions == (0, 4) and not part.in_forward
    assert AttentionEdit.from_dict(old).to_dict() == old


def test_in_forward_act_materializes_a_sink_rule():
    edit = AttentionEdit((SinkCalibration(heads=((0, 0), (0, 2)), beta=0.4, tau=0.1),))
    assert edit.parts[0].in_forward and edit.parts[0].sink_positions is None
    le = edit.layer_edit(0, batch_size=2, n_keys=8, n_heads=3)
    assert le.sink_mask is None and le.finds_sinks
    assert le.act_tau == 0.1 and le.act_exclude_first
    assert le.act_beta.tolist() == pytest.approx([0.4, 1.0, 0.4])


def test_per_row_heads_give_per_row_betas():
    """The batched head search: one head per batch row, betas [B, H] per layer."""
    part = SinkCalibration.per_row([(0, 1), (1, 2), None, (0, 0)], beta=0.4)
    assert part.heads == ((0, 0), (0, 1), (1, 2))
    le = AttentionEdit((part,)).layer_edit(0, batch_size=4, n_keys=5, n_heads=3)
    torch.testing.assert_close(le.act_beta, torch.tensor([[1, 0.4, 1], [1, 1, 1], [1, 1, 1], [0.4, 1, 1]]))
    le1 = AttentionEdit((part,)).layer_edit(1, batch_size=4, n_keys=5, n_heads=3)
    assert le1.act_beta[1].tolist() == pytest.approx([1, 1, 0.4]) and (le1.act_beta[[0, 2, 3]] == 1).all()


def test_fixed_positions_per_head_on_one_layer():
    edit = AttentionEdit((SinkCalibration(((0, 0),), (1,), 0.5), SinkCalibration(((0, 2),), (2, 3), 0.3)))
    le = edit.layer_edit(0, batch_size=2, n_keys=5, n_heads=3)
    assert le.sink_mask.shape == (2, 3, 5)
    assert le.sink_mask[:, 0].tolist() == [[False, True, False, False, False]] * 2
    assert le.sink_mask[:, 1].sum() == 0
    assert le.sink_mask[:, 2].tolist() == [[False, False, True, True, False]] * 2
    assert le.act_beta.tolist() == pytest.approx([0.5, 1.0, 0.3])


def test_layer_edit_materializes_every_part():
    le = full_edit().layer_edit(0, batch_size=2, n_keys=8, n_heads=3)
    assert le.head_scale.tolist() == [1.0, 0.0, 1.0]
    # KeyBias on head 1, keys 1..2, both prompts
    assert le.key_bias[:, 1].tolist() == [[0, 2, 2, 0, 0, 0, 0, 0]] * 2
    # PASTA on head 2: log(alpha) outside each prompt's own spans
    a = math.log(0.01)
    assert torch.allclose(le.key_bias[0, 2], torch.tensor([0, 0, a, a, a, a, a, a]))
    assert torch.allclose(le.key_bias[1, 2], torch.tensor([a, a, a, 0, 0, a, 0, a]))
    assert le.key_bias[:, 0].abs().sum() == 0
    assert le.sink_mask.tolist() == [[True] + [False] * 7] * 2
    assert le.act_beta.tolist() == pytest.approx([0.4, 0.4, 1.0])


def test_layer_without_parts_is_none():
    assert full_edit().layer_edit(1, 2, 8, 3) is None
    assert full_edit().layer_edit(2, 2, 8, 3).key_bias is None   # head scale only


def test_key_offset_maps_sliding_cache_slots():
    edit = AttentionEdit((KeyBias(heads=((0, 0),), spans=((5, 7),), bias=1.0),
                          SinkCalibration(heads=((0, 0),), sink_positions=(0, 6), beta=0.5)))
    le = edit.layer_edit(0, 1, n_keys=4, n_heads=1, key_offset=4)   # keys are slots 4..7
    assert le.key_bias[0, 0].tolist() == [0, 1, 1, 0]
    assert le.sink_mask[0].tolist() == [False, False, True, False]


def test_validation():
    with pytest.raises(ValueError):
        AttentionEdit((HeadScale(((0, 5),), 0.0),)).layer_edit(0, 1, 4, n_heads=3)
    with pytest.raises(ValueError):   # per-prompt spans for the wrong batch size
        AttentionEdit((KeyBias(((0, 0),), (((0, 1),), ((1, 2),)), 1.0),)).layer_edit(0, 3, 4, 1)
    with pytest.raises(ValueError):   # fixed sinks and sinks found in the forward on one layer
        AttentionEdit((SinkCalibration(((0, 0),), (0,), 0.5),
                       SinkCalibration(((0, 1),), beta=0.5))).layer_edit(0, 1, 4, 2)
    with pytest.raises(ValueError):   # two sink rules on one layer
        AttentionEdit((SinkCalibration(((0, 0),), tau=0.1),
                       SinkCalibration(((0, 1),), tau=0.2))).layer_edit(0, 1, 4, 2)
    with pytest.raises(ValueError):   # one head calibrated twice
        AttentionEdit((SinkCalibration(((0, 0),)), SinkCalibration(((0, 0),)))).layer_edit(0, 1, 4, 2)
    with pytest.raises(ValueError):   # rows for another batch size
        AttentionEdit((SinkCalibration.per_row([(0, 0), (0, 1)]),)).layer_edit(0, 3, 4, 2)
    with pytest.raises(ValueError, match="tau"):
        SinkCalibration(((0, 0),), tau=1.5)
    with pytest.raises(ValueError, match="union"):
        SinkCalibration(((0, 1),), rows=(((0, 0),),))
    with pytest.raises(ValueError):
        SinkCalibration(((0, 0),), (0,), beta=-1.0)
    with pytest.raises(ValueError):
        pasta(((0, 0),), ((0, 1),), alpha=0.0)
    with pytest.raises(TypeError):
        AttentionEdit(("not a part",))


def test_parts_combine_per_head():
    edit = AttentionEdit((HeadScale(((0, 0),), 0.5), HeadScale(((0, 0), (0, 1)), 4.0),
                          KeyBias(((0, 0),), ((0, 2),), 1.0), KeyBias(((0, 0),), ((1, 3),), 1.0)))
    le = edit.layer_edit(0, 1, 4, 2)
    assert le.head_scale.tolist() == [2.0, 4.0]
    assert le.key_bias[0, 0].tolist() == [1, 2, 1, 0]
