"""ICL tasks: loaders, prompts, scoring, and the errors a user meets (no model forward here)."""

from __future__ import annotations

import json

import pytest
import torch

from interp.errors import InvalidInput
from interp.tasks.icl import (ICLTask, build_prompts, demonstrations, label_token_ids,
                              load_examples, load_task, margins, score, tokenize_prompts,
                              wilson_interval)


def test_sst2_files_load_with_their_label_words(shared_data):
    sst2 = shared_data / "icl" / "sst2"
    task, train = load_task(sst2 / "stsa.binary.train")
    _, test = load_task(sst2 / "stsa.binary.test", task=task)
    assert task.labels == ("negative", "positive")
    assert (len(train), len(test)) == (6920, 1821)
    first = (sst2 / "stsa.binary.train").read_text().splitlines()[0]
    assert train[0].text == first[2:] and train[0].label == ("positive" if first[0] == "1"
                                                             else "negative")


def test_jsonl_csv_tsv_agree(tmp_path):
    rows = [("great film", "good"), ("dull, slow", "bad"), ("a joy", "good")]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"text": t, "label": l})
                                                for t, l in rows))
    (tmp_path / "d.csv").write_text("label,review\n" + "\n".join(f'{l},"{t}"' for t, l in rows))
    (tmp_path / "d.tsv").write_text("review\tlabel\n" + "\n".join(f"{t}\t{l}" for t, l in rows))
    a = load_examples(tmp_path / "d.jsonl")
    b = load_examples(tmp_path / "d.csv", text_col="review")
    c = load_examples(tmp_path / "d.tsv", text_col="review")
    assert a == b == c and [(e.text, e.label) for e in a] == rows
    assert load_task(tmp_path / "d.jsonl")[0].labels == ("bad", "good")


@pytest.mark.parametrize("name, content, fmt, message", [
    ("empty.jsonl", "", None, "empty"),
    ("cols.csv", "sentence,label\nhi,good\n", None, "no column 'text'"),
    ("bad.txt", "1 fine\n", None, "--format"),
    ("bad_sst2.txt", "2 fine\n", "sst2", "SST-2 line"),
    ("keys.jsonl", '{"sentence": "x", "label": "good"}\n', None, "--text-col"),
])
def test_bad_files_get_a_clear_error(tmp_path, name, content, fmt, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(InvalidInput, match=message):
        load_examples(tmp_path / name, fmt)


def test_label_outside_the_train_label_set(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "good"}\n'
                                          '{"text": "b", "label": "bad"}\n')
    (tmp_path / "test.jsonl").write_text('{"text": "c", "label": "meh"}\n')
    task, _ = load_task(tmp_path / "train.jsonl")
    with pytest.raises(InvalidInput, match="outside the task's label set"):
        load_task(tmp_path / "test.jsonl", task=task)


def test_demonstrations_are_seeded_and_come_from_train_only(shared_data):
    task, train = load_task(shared_data / "icl" / "sst2" / "stsa.binary.train")
    _, test = load_task(shared_data / "icl" / "sst2" / "stsa.binary.test", task=task)
    prompts = build_prompts(task, test[:5], train[:50], shots=3, seed=7)
    assert prompts == build_prompts(task, test[:5], train[:50], shots=3, seed=7)
    assert prompts != build_prompts(task, test[:5], train[:50], shots=3, seed=8)
    train_texts = {e.text for e in train[:50]}
    for prompt, example in zip(prompts, test[:5]):
        shown = [line[len("Review: "):] for line in prompt.splitlines() if line.startswith("Review")]
        assert shown[-1] == example.text and set(shown[:-1]) <= train_texts
        assert prompt.endswith("\nSentiment:") and prompt.count("Sentiment: ") == 3
    # the query itself is never one of its own demonstrations
    assert all(d.text != train[0].text for d in demonstrations(train[:4], 3, 0, 0, train[0].text))
    with pytest.raises(InvalidInput, match="--train"):
        build_prompts(task, test[:1], [], shots=2)


def test_wilson_interval_matches_the_textbook_values():
    # Wilson 95% by hand: 8/10 -> (0.4902, 0.9433); 0/20 -> (0, 0.1611)
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 20) == pytest.approx((0.0, 0.1611), abs=1e-4)


def test_score_counts_per_class_and_margins_sign():
    task = ICLTask("t", ("a", "b", "c"), "")
    logprobs = torch.log(torch.tensor([[.7, .2, .1], [.1, .8, .1], [.5, .4, .1], [.2, .2, .6]]))
    result = score(task, logprobs, ["a", "b", "b", "a"])
    assert (result.correct, result.n) == (2, 4)
    assert result.per_class["b"] == {"n": 2, "correct": 1, "predicted": 1}
    assert result.per_class["a"] == {"n": 2, "correct": 1, "predicted": 2}
    gold = torch.tensor([0, 1, 1, 0])
    assert ((margins(logprobs, gold) > 0) == torch.tensor([True, True, False, False])).all()


def test_labels_sharing_a_first_token_are_refused(smollm2):
    clash = ICLTask("t", ("new york", "new jersey"), "")
    with pytest.raises(InvalidInput, match="same token"):
        label_token_ids(smollm2, clash)
    ids = label_token_ids(smollm2, ICLTask("sst2", ("negative", "positive"), ""))
    assert ids == [smollm2.encode(" negative")[0], smollm2.encode(" positive")[0]]


def test_demonstrations_past_the_context_are_refused(smollm2):
    task = ICLTask("t", ("a", "b"), "")
    long = "word " * (smollm2.n_ctx // 3)
    from interp.tasks.icl import Example

    train = [Example(long, "a"), Example(long + "x", "b"), Example(long + "y", "a")]
    prompts = build_prompts(task, [Example("q", "a")], train, shots=3)
    with pytest.raises(InvalidInput, match="lower --shots"):
        tokenize_prompts(smollm2, prompts)
