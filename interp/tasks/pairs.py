"""A user's own task: prompt pairs from a JSONL file, one per line.

    {"clean": "When Mary and John went to the store, John gave a drink to",
     "corrupted": "When Alice and Bob went to the store, Carol gave a drink to",
     "answer": " Mary", "wrong": " John"}

`read_pairs(path)` checks the file's shape (JSON objects with the four string fields) without a
model, so the CLI refuses a bad file before loading one; `pairs_prompts(model, pairs)` then
checks what needs the tokenizer: clean and corrupted of the same token length, and answer and
wrong answer single tokens. Every error names the line and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from interp.errors import InvalidInput
from interp.tasks.base import PromptSet
from interp.tokens import TokenBatch

FIELDS = ("clean", "corrupted", "answer", "wrong")


def read_pairs(path: str | Path) -> list[dict]:
    """The pairs of a JSONL file, each with "line" (1-based) added; InvalidInput naming the line
    for anything that is not a JSON object with string fields clean, corrupted, answer, wrong."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidInput(f"task file {str(path)!r} does not exist; give a .jsonl file with one "
                           '{"clean", "corrupted", "answer", "wrong"} object per line')
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise InvalidInput(f"{path.name} line {number}: not valid JSON ({error.msg}); write one "
                               "JSON object per line") from None
        if not isinstance(item, dict):
            raise InvalidInput(f"{path.name} line {number}: expected a JSON object with "
                               f"{', '.join(FIELDS)}, got {type(item).__name__}")
        missing = [f for f in FIELDS if f not in item]
        if missing:
            raise InvalidInput(f"{path.name} line {number}: missing {', '.join(missing)}; every "
                               f"line needs {', '.join(FIELDS)}")
        bad = [f for f in FIELDS if not isinstance(item[f], str) or not item[f]]
        if bad:
            raise InvalidInput(f"{path.name} line {number}: {', '.join(bad)} must be non-empty strings")
        if item["answer"] == item["wrong"]:
            raise InvalidInput(f"{path.name} line {number}: answer and wrong are the same "
                               f"({item['answer']!r}); the metric compares two different tokens")
        pairs.append({**{f: item[f] for f in FIELDS}, "line": number})
    if len(pairs) < 2:
        raise InvalidInput(f"{path.name} has {len(pairs)} prompt pair(s); give at least 2 (some "
                           "discover the circuit, the others evaluate it)")
    return pairs


def pairs_prompts(model, pairs: list[dict], name: str = "pairs") -> PromptSet:
    """A PromptSet of `pairs` (from `read_pairs`) for `model`: answers, wrong answers, corrupted."""
    clean, corrupt, answers, wrong = [], [], [], []
    for pair in pairs:
        where = f"line {pair.get('line', '?')}"
        ids, corrupt_ids = model.encode(pair["clean"]), model.encode(pair["corrupted"])
        if len(ids) != len(corrupt_ids):
            raise InvalidInput(f"{where}: clean is {len(ids)} tokens and corrupted {len(corrupt_ids)} "
                               f"for {model.name}; they must have the same token length (edit "
                               "the corrupted prompt, e.g. swap single-token names)")
        for field in ("answer", "wrong"):
            if len(model.tokenizer(pair[field], add_special_tokens=False).input_ids) != 1:
                raise InvalidInput(f"{where}: {field} {pair[field]!r} is not one token for "
                                   f"{model.name}; use a single-token word (often with a "
                                   "leading space, e.g. ' Mary')")
        clean.append(ids)
        corrupt.append(corrupt_ids)
        answers.append(model.single_token_id(pair["answer"]))
        wrong.append(model.single_token_id(pair["wrong"]))
    pad = model.pad_token_id
    return PromptSet(name=name, tokens=TokenBatch.from_lists(clean, pad),
                     texts=[p["clean"] for p in pairs], answers=torch.tensor(answers),
                     wrong_answers=torch.tensor(wrong), corrupted=TokenBatch.from_lists(corrupt, pad),
                     metadata=[{"line": p.get("line"), "corrupted_text": p["corrupted"]} for p in pairs])
