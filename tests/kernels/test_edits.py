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


def test_json_round_trip():
    edit = full_edit()
    text = json.dumps(edit.to_dict())
    back = AttentionEdit.from_dict(json.loads(text))
    assert back == edit
    assert back.to_dict() == edit.to_dict()


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
    with pytest.raises(ValueError):   # two sink sets on one layer
        AttentionEdit((SinkCalibration(((0, 0),), (0,), 0.5),
                       SinkCalibration(((0, 1),), (1,), 0.5))).layer_edit(0, 1, 4, 2)
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
