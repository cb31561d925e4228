"""Harmful and harmless instructions, formatted with the model's own chat template.

Safety-head work (Zhou et al. 2024, "On the Role of Attention Heads in Large Language Model
Safety", arXiv:2410.13708) scores heads on harmful queries the model refuses, and checks that
ablating them leaves harmless queries alone. Both kinds of prompt are one user turn in the
model's chat format, ending where the assistant's reply starts:

    model = interp.load_model("qwen2.5-coder-0.5b-instruct")
    harmful = safety_prompt_set(model, default_instructions("harmful"), "harmful")
    harmless = safety_prompt_set(model, default_instructions("harmless"), "harmless")

The project ships a small default set of its own writing (`interp/tasks/data/`): short, clearly
harmful requests and ordinary harmless ones. `load_instructions` reads other sets from .json
(a list of strings, or of {"instruction"|"goal"|"prompt": ...} records, as in the
refusal_direction and AdvBench files), .csv (a "goal", "instruction" or "prompt" column) or
.txt (one instruction per line).
"""

from __future__ import annotations

import csv
import json
import random
from importlib import resources
from pathlib import Path

from interp.errors import InvalidInput
from interp.models import Model
from interp.tasks.base import PromptSet

KINDS = ("harmful", "harmless")
_TEXT_FIELDS = ("instruction", "goal", "prompt", "text")


def default_instructions(kind: str) -> list[str]:
    """The project's own default instructions of `kind` ("harmful" or "harmless")."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown instruction kind {kind!r}; use one of {KINDS}")
    data = resources.files("interp.tasks").joinpath("data", f"{kind}_instructions.json")
    return json.loads(data.read_text())


def load_instructions(path: str | Path) -> list[str]:
    """Instructions from a .json, .csv or .txt file (see the module docstring), in file order."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"prompt file {path} does not exist")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            records = json.loads(text) if text.strip() else []
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path} is not valid JSON ({exc})") from None
        if not isinstance(records, list):
            raise InvalidInput(f"{path} must hold a JSON list of strings or of records")
        instructions = [_record_text(r, path) for r in records]
    elif suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        column = next((c for c in _TEXT_FIELDS if rows and c in rows[0]), None)
        if rows and column is None:
            raise InvalidInput(f"{path} has no column named one of {_TEXT_FIELDS}; its columns "
                               f"are {list(rows[0])}")
        instructions = [row[column] for row in rows] if rows else []
    elif suffix in (".txt", ""):
        instructions = text.splitlines()
    else:
        raise InvalidInput(f"{path}: unsupported prompt file type {suffix!r}; use .json, .csv "
                           "or .txt")
    instructions = [s.strip() for s in instructions if s and s.strip()]
    if not instructions:
        raise InvalidInput(f"prompt file {path} holds no instructions; put one or more "
                           "non-empty prompts in it")
    return instructions


def _record_text(record, path: Path) -> str:
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        for key in _TEXT_FIELDS:
            if isinstance(record.get(key), str):
                return record[key]
    raise InvalidInput(f"{path}: cannot read an instruction from {str(record)[:80]!r}; records "
                       f"must be strings or have one of the keys {_TEXT_FIELDS}")


def split_instructions(instructions: list[str], sizes: dict[str, int],
                       seed: int = 0) -> dict[str, list[str]]:
    """Disjoint random splits, e.g. {"calibration": 8, "train": 16, "test": 16} -> lists.

    The order inside each split is the shuffled order; the same seed gives the same splits.
    """
    needed = sum(sizes.values())
    if needed > len(instructions):
        raise InvalidInput(f"asked for {needed} instructions ({sizes}) but only "
                           f"{len(instructions)} are available; ask for fewer")
    order = list(instructions)
    random.Random(seed).shuffle(order)
    splits, start = {}, 0
    for name, size in sizes.items():
        splits[name] = order[start:start + size]
        start += size
    return splits


def safety_prompt_set(model: Model, instructions: list[str], label: str,
                      max_tokens: int | None = None) -> PromptSet:
    """One chat-formatted prompt per instruction (user turn + the assistant's reply header).

    label: "harmful" or "harmless" (kept in the metadata and the set's name).
    max_tokens: longest prompt allowed (default: the model's context); longer ones raise
        InvalidInput naming the prompt, since truncating a request would change its meaning.
    """
    if not instructions:
        raise InvalidInput(f"no {label} instructions given; pass at least one prompt")
    texts = [model.apply_chat_template(i) for i in instructions]  # raises without a template
    tokens = model.tokenize(texts)
    limit = min(max_tokens or model.n_ctx, model.n_ctx)
    too_long = [(i, int(n)) for i, n in enumerate(tokens.lengths.tolist()) if n > limit]
    if too_long:
        index, length = too_long[0]
        raise InvalidInput(
            f"{len(too_long)} {label} prompt(s) exceed the {limit}-token limit of {model.name} "
            f"(e.g. #{index}: {length} tokens, {instructions[index][:60]!r}...); shorten or "
            "drop them"
        )
    return PromptSet(
        name=f"{label}-chat",
        tokens=tokens,
        texts=texts,
        metadata=[{"instruction": i, "label": label} for i in instructions],
    )
