"""The steering playground's analysis on real SmolLM2 weights (`interp.steering.playground`).

References: the unedited forward of the bridge engine (TransformerLens `hook_pattern`, final
log-probs) for the "before" side; ACT's sink definition computed from those full patterns; the
single-edit forward for every point of the batched sweep.
"""

from __future__ import annotations

import json

import pytest
import torch

from interp.errors import InvalidInput
from interp.forward import run
from interp.patterns import attention_patterns
from interp.steering import build_edit
from interp.steering.act_eval import check_search_sizes
from interp.steering.playground import (calibration_search, inspect_edit,
                                        load_search_files, save_upload, sink_rows,
                                        stored_calibrations, sweep_strength)

PROMPT = "When Mary and John went to the store, John gave a drink to"
TARGETS = (" Mary", " John")
TAU = 0.1


@pytest.fixture(scope="module")
def pasta_view(smollm2):
    edit = build_edit(smollm2, "pasta", PROMPT, "3.1, 7.4", 0.01, "Mary and John")
    return edit, inspect_edit(smollm2, PROMPT, edit, head=(7, 4), targets=TARGETS)


def test_distribution_diff(smollm2, pasta_view):
    _, view = pasta_view
    assert view.plain.sum().item() == pytest.approx(1.0, abs=1e-4)
    assert view.edited.sum().item() == pytest.approx(1.0, abs=1e-4)
    # the unedited side is the model itself (bridge engine, no edit)
    with torch.no_grad():
        reference = run(smollm2, smollm2.tokenize(PROMPT), output="final_logprobs")[0].exp()
    assert torch.allclose(view.plain, reference.float(), atol=1e-4)
    top = view.top_tokens(10)
    assert len(top) == 10
    for row in top:
        assert row["change"] == pytest.approx(row["p_edited"] - row["p_plain"], abs=1e-7)
        assert row["token"] == smollm2.tokenizer.decode([row["token_id"]])
    assert top[0]["token"] == " Mary"
    shown = [max(r["p_plain"], r["p_edited"]) for r in top]
    assert shown == sorted(shown, reverse=True)
    plain_ld, edited_ld = view.logit_diff()
    mary, john = smollm2.single_token_id(" Mary"), smollm2.single_token_id(" John")
    assert plain_ld == pytest.approx(float(reference[mary].log() - reference[john].log()), abs=1e-3)
    assert edited_ld != pytest.approx(plain_ld, abs=1e-3)     # PASTA on these heads moves it


def test_pattern_before_and_after(smollm2, pasta_view):
    _, view = pasta_view
    n = len(view.tokens)
    for pattern in (view.pattern_plain, view.pattern_edited):
        assert pattern.shape == (n, n)
        assert torch.allclose(pattern.sum(-1), torch.ones(n), atol=1e-4)
        assert pattern.triu(1).abs().max() == 0                      # causal
    reference = attention_patterns(smollm2, PROMPT, [7])[7].head(4)  # bridge engine, hook_pattern
    assert torch.allclose(view.pattern_plain, reference, atol=1e-4)
    # PASTA moves the last query's mass onto the highlighted span (tokens 1..3)
    assert view.pattern_edited[-1, 1:4].sum() > view.pattern_plain[-1, 1:4].sum() + 0.1


def test_act_sinks_listed_as_the_definition(smollm2):
    heads = [(3, 1), (3, 5)]            # one layer: its sinks are those of the unedited forward
    edit = build_edit(smollm2, "act", PROMPT, heads, 0.4)
    view = inspect_edit(smollm2, PROMPT, edit)
    pattern = attention_patterns(smollm2, PROMPT, [3])[3].pattern.double()       # [H, N, N]
    n = pattern.shape[-1]
    mean = pattern.sum(-2) / torch.arange(n, 0, -1, dtype=torch.float64)
    rows = {r["head"]: r for r in sink_rows(view)}
    assert set(rows) == {"3.1", "3.5"}
    for layer, head in heads:
        sinks = (mean[head] > TAU).nonzero().flatten().tolist()[1:]           # first left alone
        row = rows[f"{layer}.{head}"]
        assert row["positions"] == sinks
        assert row["tokens"] == [view.tokens[p] for p in sinks]
    assert any(rows[h]["positions"] for h in rows)                   # the test can fail
    # the pattern after: ACT's sink columns scaled by beta (layer 3 is the lowest edited layer,
    # so the pattern before is its input), every row still sums to 1
    view = inspect_edit(smollm2, PROMPT, edit, head=(3, 1))
    sinks = rows["3.1"]["positions"]
    assert torch.allclose(view.pattern_edited[:, sinks], 0.4 * view.pattern_plain[:, sinks], atol=1e-5)
    assert torch.allclose(view.pattern_edited.sum(-1), torch.ones(n), atol=1e-4)


def test_sweep_is_the_single_edit_at_each_strength(smollm2, pasta_view):
    edit, view = pasta_view
    sweep = sweep_strength(smollm2, PROMPT, edit, [0.01, 0.2, 1.0], targets=TARGETS)
    assert sweep.strength == "alpha" and sweep.values == [0.01, 0.2, 1.0]
    assert sweep.metric[0] == pytest.approx(view.logit_diff()[1], abs=2e-3)   # batched == alone
    assert sweep.metric[2] == pytest.approx(sweep.plain, abs=2e-3)            # alpha 1: no edit
    scale = build_edit(smollm2, "scale", PROMPT, "7.4, 9.2", 0.0)
    swept = sweep_strength(smollm2, PROMPT, scale, [0.0, 1.0, 2.0])
    alone = inspect_edit(smollm2, PROMPT, scale)
    top = int(alone.plain.argmax())
    assert "unedited top token" in swept.metric_name
    assert swept.plain == pytest.approx(float(alone.plain[top]), abs=1e-4)
    assert swept.metric[1] == pytest.approx(swept.plain, abs=1e-5)           # scale 1: no edit
    assert swept.metric[0] == pytest.approx(float(alone.edited[top]), abs=1e-4)
    assert swept.metric[0] != pytest.approx(swept.metric[2], abs=1e-4)


def test_bad_input_is_refused(smollm2):
    edit = build_edit(smollm2, "scale", PROMPT, "7.4", 0.0)
    with pytest.raises(InvalidInput, match="two target tokens"):
        inspect_edit(smollm2, PROMPT, edit, targets=(" Mary", ""))
    with pytest.raises(InvalidInput, match="single tokens"):
        sweep_strength(smollm2, PROMPT, edit, [0.0], targets=(" Mary", " Johnathanson"))
    with pytest.raises(InvalidInput, match="out of range"):
        sweep_strength(smollm2, PROMPT, build_edit(smollm2, "act", PROMPT, "3.1", 0.4), [1.5])
    with pytest.raises(InvalidInput, match=r"n_dev must be a whole number in \[1, 512\]"):
        check_search_sizes(n_dev="1e9")
    assert check_search_sizes(shots="2", screen=None)["shots"] == 2


def test_calibration_search_lands_in_the_store(smollm2, tmp_store, tmp_path):
    import base64

    from interp.steering import Calibration

    lines = [{"text": t, "label": l} for t, l in (
        ("a gorgeous, witty film", "positive"), ("dull and far too long", "negative"),
        ("an utterly charming story", "positive"), ("a tedious mess", "negative"),
        ("warm and funny", "positive"), ("painfully boring", "negative"))]
    data = "\n".join(json.dumps(x) for x in lines).encode()
    url = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
    paths = [save_upload(tmp_path / "uploads", f"{name}.jsonl", url) for name in ("tr", "dv", "ev")]
    assert paths[0].read_bytes() == data and paths[0].name == "tr.jsonl"
    with pytest.raises(InvalidInput, match="dev file is missing"):
        load_search_files(paths[0], " ", paths[2])
    files = load_search_files(*paths, shots=0, n_eval=2)
    run_id = calibration_search(smollm2, files, tmp_store, n_calibration=2, n_dev=2, screen=2,
                                batch_size=4)
    record = tmp_store.get_run(run_id)
    assert record.status == "complete" and record.kind == "calibration"
    listed = stored_calibrations(tmp_store, smollm2.model_id)
    assert [r["run_id"] for r in listed] == [run_id]
    assert set(record.result["report"]) >= {"baseline", "calibrated", "all_heads", "heads"}
    assert record.result["report"]["n"] == 2
    assert Calibration.from_store(tmp_store, run_id).heads == [tuple(h) for h in listed[0]["heads"]]


def test_generations_export_round_trips(smollm2):
    import csv
    import io

    from interp.exports import generations_csv, generations_json
    from interp.steering import compare
    from kernels import AttentionEdit

    edit = build_edit(smollm2, "scale", PROMPT, "7.4", 0.0)
    plain, edited = compare(smollm2, PROMPT, edit, max_new_tokens=2)
    data = generations_json(smollm2.name, PROMPT, plain, edited, edit, max_new_tokens=2)
    assert json.loads(json.dumps(data)) == data
    assert data["edited"] == {"text": edited.text, "token_ids": edited.token_ids}
    assert AttentionEdit.from_dict(data["edit"]) == edit
    rows = list(csv.DictReader(io.StringIO(generations_csv(data))))
    assert [r["condition"] for r in rows] == ["plain", "edited"]
    assert rows[0]["continuation"] == plain.text and rows[1]["prompt"] == PROMPT
    assert [int(i) for i in rows[1]["token_ids"].split()] == edited.token_ids
    assert json.loads(rows[1]["edit"]) == data["edit"] and rows[0]["edit"] == ""
