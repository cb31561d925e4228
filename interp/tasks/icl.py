"""In-context-learning classification tasks: load a labelled file, build 0-/k-shot prompts, score.

The evaluation ACT's authors run (Yu et al., ICML 2024; GATECH-EIC/ACT `main.py`): the prompt
ends where the label word starts, and the prediction is the argmax, over the task's label
words, of the log-probability of each word's FIRST token at the last position. Demonstrations
come from a train split only, drawn with a seed, never from the examples being evaluated.

    task, train = load_task("stsa.binary.train")                  # format from the name: sst2
    _, test = load_task("stsa.binary.test", task=task)
    result = evaluate(model, task, test[:200], train=train, shots=4)
    result.accuracy, result.ci95, result.per_class

Files (`FORMATS`):
- jsonl: one object a line, {"text": str, "label": str} (other keys with text_col/label_col);
- csv / tsv: a header row with the text and label columns (text_col/label_col);
- sst2: the `stsa.binary.*` files of Zhao et al.'s few-shot-learning repository, `<0|1> <text>`
  a line, labels 0 -> "negative", 1 -> "positive".
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from interp.errors import InvalidInput

FORMATS = ("jsonl", "csv", "tsv", "sst2")
SST2_LABELS = ("negative", "positive")


@dataclass(frozen=True)
class Example:
    text: str
    label: str


@dataclass(frozen=True)
class ICLTask:
    """How examples become prompts: `instruction`, then each example as
    "{input_prefix}{text}\\n{output_prefix} {label}\\n\\n"; the query stops after output_prefix.

    labels: the label words in a fixed order (the prediction is an index into it).
    """

    name: str
    labels: tuple[str, ...]
    instruction: str
    input_prefix: str = "Input: "
    output_prefix: str = "Label:"

    def to_json(self) -> dict:
        return {"name": self.name, "labels": list(self.labels), "instruction": self.instruction,
                "input_prefix": self.input_prefix, "output_prefix": self.output_prefix}

    @classmethod
    def from_json(cls, data: dict) -> "ICLTask":
        return cls(data["name"], tuple(data["labels"]), data["instruction"],
                   data.get("input_prefix", "Input: "), data.get("output_prefix", "Label:"))


# ---- loading -----------------------------------------------------------------------------------
def guess_format(path: str | Path) -> str:
    """The format a file's name implies: stsa.binary.* -> sst2, .jsonl/.json, .csv, .tsv."""
    name = Path(path).name.lower()
    if name.startswith("stsa."):
        return "sst2"
    for suffix, fmt in ((".jsonl", "jsonl"), (".json", "jsonl"), (".csv", "csv"), (".tsv", "tsv")):
        if name.endswith(suffix):
            return fmt
    raise InvalidInput(f"cannot tell the format of {path} from its name: give --format, one of "
                       f"{', '.join(FORMATS)}")


def check_file(path: str | Path, fmt: str | None = None) -> str:
    """Check that `path` is a readable, non-empty file of a known format (before any model
    loads). Returns the format."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path} does not exist or is not a file: name a labelled data file")
    if path.stat().st_size == 0:
        raise InvalidInput(f"{path} is empty: it needs at least one labelled example")
    fmt = fmt or guess_format(path)
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    return fmt


def load_examples(path: str | Path, fmt: str | None = None, text_col: str = "text",
                  label_col: str = "label") -> list[Example]:
    """The labelled examples of a file (see the module docstring for the formats)."""
    fmt = check_file(path, fmt)
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if fmt == "sst2":
        examples = [_sst2_line(path, i, line) for i, line in enumerate(lines, 1) if line.strip()]
    elif fmt == "jsonl":
        examples = [_jsonl_line(path, i, line, text_col, label_col)
                    for i, line in enumerate(lines, 1) if line.strip()]
    else:
        examples = _table(path, lines, "," if fmt == "csv" else "\t", text_col, label_col)
    if not examples:
        raise InvalidInput(f"{path} holds no examples: it needs at least one labelled line")
    return examples


def _sst2_line(path: Path, number: int, line: str) -> Example:
    label, _, text = line.strip().partition(" ")
    if label not in ("0", "1") or not text.strip():
        raise InvalidInput(f"{path}:{number} is not an SST-2 line '<0|1> <sentence>': {line[:60]!r}"
                           " (give the right --format)")
    return Example(text.strip(), SST2_LABELS[int(label)])


def _jsonl_line(path: Path, number: int, line: str, text_col: str, label_col: str) -> Example:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}:{number} is not JSON ({exc.msg}): JSONL files hold one "
                           '{"text": ..., "label": ...} object a line') from None
    if not isinstance(row, dict) or text_col not in row or label_col not in row:
        keys = sorted(row) if isinstance(row, dict) else type(row).__name__
        raise InvalidInput(f"{path}:{number} has no {text_col!r}/{label_col!r} keys (it has "
                           f"{keys}): name them with --text-col/--label-col")
    return Example(str(row[text_col]).strip(), str(row[label_col]).strip())


def _table(path: Path, lines: list[str], delimiter: str, text_col: str,
           label_col: str) -> list[Example]:
    reader = csv.DictReader(lines, delimiter=delimiter)
    columns = reader.fieldnames or []
    missing = [c for c in (text_col, label_col) if c not in columns]
    if missing:
        raise InvalidInput(f"{path} has no column {missing[0]!r} (columns: {columns}): name the "
                           "text and label columns with --text-col/--label-col")
    return [Example(row[text_col].strip(), row[label_col].strip()) for row in reader
            if (row.get(text_col) or "").strip()]


def make_task(fmt: str, examples: Sequence[Example], name: str = "") -> ICLTask:
    """The task of a format: SST-2's own label words and instruction, else the sorted labels of
    `examples` (the train split when there is one)."""
    if fmt == "sst2":
        return ICLTask(name or "sst2", SST2_LABELS,
                       "Classify the sentiment of each review as negative or positive.",
                       "Review: ", "Sentiment:")
    labels = tuple(sorted({e.label for e in examples}))
    if len(labels) < 2:
        raise InvalidInput(f"the examples have a single label {labels}: classification needs "
                           "at least two")
    return ICLTask(name or "classification", labels,
                   f"Classify each input as one of: {', '.join(labels)}.")


def load_task(path: str | Path, fmt: str | None = None, task: ICLTask | None = None,
              text_col: str = "text", label_col: str = "label") -> tuple[ICLTask, list[Example]]:
    """(task, examples) of a file. With `task` (e.g. the train file's), every label must be one
    of its labels."""
    fmt = check_file(path, fmt)
    examples = load_examples(path, fmt, text_col, label_col)
    task = task or make_task(fmt, examples, Path(path).name)
    check_labels(task, examples, path)
    return task, examples


def check_labels(task: ICLTask, examples: Sequence[Example], source="the examples") -> None:
    outside = sorted({e.label for e in examples} - set(task.labels))
    if outside:
        raise InvalidInput(f"{source} has label(s) {outside[:5]} outside the task's label set "
                           f"{list(task.labels)}: fix the labels or load it with the same train "
                           "file")


# ---- prompts -----------------------------------------------------------------------------------
def format_example(task: ICLTask, text: str, label: str | None = None) -> str:
    query = f"{task.input_prefix}{text}\n{task.output_prefix}"
    return query if label is None else f"{query} {label}\n\n"


def demonstrations(train: Sequence[Example], shots: int, seed: int, index: int,
                   avoid: str | None = None) -> list[Example]:
    """`shots` examples of `train` for query number `index`: a seeded draw per query (the same
    seed and index give the same demonstrations), never the query's own text."""
    if shots == 0:
        return []
    pool = [e for e in train if e.text != avoid] if avoid is not None else list(train)
    if len(pool) < shots:
        raise InvalidInput(f"{shots}-shot prompts need {shots} train examples, the train split "
                           f"has {len(pool)}: lower --shots or give a bigger --train file")
    return random.Random(seed * 1_000_003 + index).sample(pool, shots)


def build_prompts(task: ICLTask, examples: Sequence[Example], train: Sequence[Example] = (),
                  shots: int = 0, seed: int = 0) -> list[str]:
    """One prompt per example: the instruction, `shots` demonstrations from `train`, the query."""
    if shots < 0:
        raise InvalidInput(f"shots must be >= 0, got {shots}")
    if shots and not train:
        raise InvalidInput(f"{shots}-shot prompts draw demonstrations from a train split: give "
                           "--train FILE (or --shots 0)")
    prompts = []
    for i, example in enumerate(examples):
        demos = demonstrations(train, shots, seed, i, avoid=example.text)
        body = "".join(format_example(task, d.text, d.label) for d in demos)
        prompts.append(f"{task.instruction}\n\n{body}{format_example(task, example.text)}")
    return prompts


def label_token_ids(model, task: ICLTask) -> list[int]:
    """The first token of each label word as it follows the prompt (" positive"), as ACT's code
    scores labels; an error when two labels share it (the argmax could not tell them apart)."""
    firsts = [model.encode(" " + label, prepend_bos=False)[0] for label in task.labels]
    seen: dict[int, str] = {}
    for label, token in zip(task.labels, firsts):
        if token in seen:
            raise InvalidInput(
                f"labels {seen[token]!r} and {label!r} start with the same token "
                f"{model.to_str_tokens([token])[0]!r} for {model.name}: the prediction reads only "
                "each label's first token, so rename one label (e.g. 'yes'/'no' words that differ "
                "at the start)")
        seen[token] = label
    return firsts


def tokenize_prompts(model, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt; an error naming the fix when one is longer than the context."""
    tokens = [model.encode(p) for p in prompts]
    longest = max(range(len(tokens)), key=lambda i: len(tokens[i]))
    if len(tokens[longest]) > model.n_ctx:
        raise InvalidInput(f"prompt {longest} is {len(tokens[longest])} tokens, past "
                           f"{model.name}'s context of {model.n_ctx}: lower --shots or use shorter "
                           "examples")
    return tokens


# ---- prediction and scoring --------------------------------------------------------------------
def label_logprobs(model, token_lists: Sequence[list[int]], label_ids: Sequence[int], edit=None,
                   batch_size: int = 8,
                   progress: Callable[[float, str], None] | None = None) -> torch.Tensor:
    """[n, n_labels] float32: each label's first-token log-probability at each prompt's last
    position, with `edit` (an AttentionEdit, or None). Prompts run in batches of similar length
    (right padding; the order of the result is the order of `token_lists`)."""
    from interp.forward import run
    from interp.tokens import TokenBatch

    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
    out = torch.empty(len(token_lists), len(label_ids))
    ids = torch.tensor(list(label_ids))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start: start + batch_size]
            batch = TokenBatch.from_lists([token_lists[i] for i in rows], model.pad_token_id)
            logprobs = run(model, batch, output="final_logprobs", edit=edit)
            out[rows] = logprobs[:, ids.to(logprobs.device)].float().cpu()
            if progress is not None:
                done = start + len(rows)
                progress(done / len(order), f"{done}/{len(order)} prompts")
    return out


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for z = 1.96)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class Accuracy:
    """Accuracy on n examples with its Wilson 95% interval; per_class[label] = {"n", "correct",
    "predicted"} (how many examples have the label, how many of them are right, how many
    examples the model gave that label)."""

    accuracy: float
    ci95: tuple[float, float]
    n: int
    correct: int
    per_class: dict = field(default_factory=dict)
    predictions: list[int] = field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        return {"accuracy": self.accuracy, "ci95": list(self.ci95), "n": self.n,
                "correct": self.correct, "per_class": self.per_class}


def score(task: ICLTask, logprobs: torch.Tensor, gold: Sequence[str]) -> Accuracy:
    """Accuracy of argmax predictions ([n, n_labels] log-probs) against gold label words."""
    predictions = logprobs.argmax(-1).tolist()
    truth = [task.labels.index(g) for g in gold]
    correct = sum(p == t for p, t in zip(predictions, truth))
    per_class = {label: {"n": sum(t == k for t in truth),
                         "correct": sum(p == t == k for p, t in zip(predictions, truth)),
                         "predicted": sum(p == k for p in predictions)}
                 for k, label in enumerate(task.labels)}
    n = len(truth)
    return Accuracy(correct / n if n else 0.0, wilson_interval(correct, n), n, correct, per_class,
                    predictions)


def margins(logprobs: torch.Tensor, gold_index: torch.Tensor) -> torch.Tensor:
    """[n]: gold label's log-prob minus the best other label's (> 0 exactly when correct)."""
    gold = logprobs.gather(1, gold_index[:, None])[:, 0]
    others = logprobs.scatter(1, gold_index[:, None], float("-inf")).max(-1).values
    return gold - others


def evaluate(model, task: ICLTask, examples: Sequence[Example], train: Sequence[Example] = (),
             shots: int = 0, seed: int = 0, edit=None, batch_size: int = 8,
             progress: Callable[[float, str], None] | None = None) -> Accuracy:
    """Accuracy of `model` (with `edit`, an AttentionEdit or None) on `examples`, `shots`-shot
    with demonstrations from `train`."""
    check_labels(task, examples)
    label_ids = label_token_ids(model, task)
    tokens = tokenize_prompts(model, build_prompts(task, examples, train, shots, seed))
    logprobs = label_logprobs(model, tokens, label_ids, edit, batch_size, progress)
    return score(task, logprobs, [e.label for e in examples])


def sample(examples: Sequence[Example], n: int | None, seed: int) -> list[Example]:
    """`n` examples drawn with `seed` (all of them, in order, when n is None or >= len)."""
    if n is None or n >= len(examples):
        return list(examples)
    return random.Random(seed).sample(list(examples), n)
