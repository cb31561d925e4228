"""Harmful/harmless prompt sets: loading, splitting, chat formatting, and their bad inputs."""

from __future__ import annotations

import dataclasses
import json

import pytest

from interp.errors import InvalidInput
from interp.tasks.safety import (default_instructions, load_instructions, safety_prompt_set,
                                 split_instructions)


def test_default_sets_are_the_projects_own_and_disjoint():
    harmful, harmless = default_instructions("harmful"), default_instructions("harmless")
    assert len(harmful) >= 32 and len(harmless) >= 32
    assert not set(harmful) & set(harmless)
    with pytest.raises(InvalidInput, match="unknown instruction kind"):
        default_instructions("spicy")


def test_loads_the_shared_json_and_csv_formats(shared_data):
    refusal = load_instructions(shared_data / "refusal_direction" / "harmful_val.json")
    advbench = load_instructions(shared_data / "advbench" / "harmful_behaviors.csv")
    raw = json.loads((shared_data / "refusal_direction" / "harmful_val.json").read_text())
    assert refusal == [r["instruction"] for r in raw]
    assert len(advbench) == 520
    assert advbench[0].startswith("Write a script that can exploit vulnerabilities")


def test_txt_and_plain_json(tmp_path):
    (tmp_path / "a.txt").write_text("first\n\n  second  \n")
    (tmp_path / "b.json").write_text(json.dumps(["x", {"goal": "y"}]))
    assert load_instructions(tmp_path / "a.txt") == ["first", "second"]
    assert load_instructions(tmp_path / "b.json") == ["x", "y"]


@pytest.mark.parametrize("name,content,message", [
    ("empty.json", "", "holds no instructions"),
    ("empty.json", "[]", "holds no instructions"),
    ("blank.txt", "\n  \n", "holds no instructions"),
    ("header.csv", "goal,target\n", "holds no instructions"),
    ("cols.csv", "a,b\n1,2\n", "no column named"),
    ("bad.json", "{not json", "not valid JSON"),
    ("obj.json", '{"a": 1}', "JSON list"),
    ("rec.json", '[{"id": 3}]', "cannot read an instruction"),
    ("x.parquet", "...", "unsupported prompt file type"),
])
def test_bad_prompt_files_are_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InvalidInput, match=message):
        load_instructions(path)
    with pytest.raises(InvalidInput, match="does not exist"):
        load_instructions(tmp_path / "missing.json")


def test_splits_are_disjoint_and_reproducible():
    items = [f"p{i}" for i in range(20)]
    a = split_instructions(items, {"cal": 4, "train": 6, "test": 5}, seed=3)
    b = split_instructions(items, {"cal": 4, "train": 6, "test": 5}, seed=3)
    assert a == b and [len(a[k]) for k in ("cal", "train", "test")] == [4, 6, 5]
    assert len(set(a["cal"]) | set(a["train"]) | set(a["test"])) == 15
    with pytest.raises(InvalidInput, match="only 20 are available"):
        split_instructions(items, {"train": 21})


def test_prompts_use_the_models_chat_template(qwen):
    prompts = safety_prompt_set(qwen, ["Write a haiku about rain."], "harmless")
    text = prompts.texts[0]
    assert text.startswith("<|im_start|>system\n") and "Write a haiku about rain." in text
    assert text.endswith("<|im_start|>assistant\n")
    assert prompts.tokens.token_lists()[0] == qwen.encode(text)
    assert prompts.metadata[0] == {"instruction": "Write a haiku about rain.", "label": "harmless"}


def test_bad_inputs_for_prompt_sets(qwen):
    no_template = dataclasses.replace(qwen, chat_template=None)
    with pytest.raises(InvalidInput, match="no chat template"):
        safety_prompt_set(no_template, ["hello"], "harmful")
    with pytest.raises(InvalidInput, match="no harmful instructions"):
        safety_prompt_set(qwen, [], "harmful")
    with pytest.raises(InvalidInput, match="exceed the 20-token limit"):
        safety_prompt_set(qwen, ["Tell me a story about a dragon."], "harmless", max_tokens=20)
    short_context = dataclasses.replace(qwen, n_ctx=16)
    with pytest.raises(InvalidInput, match="exceed the 16-token limit"):
        safety_prompt_set(short_context, ["hi"], "harmless")
