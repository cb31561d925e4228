"""Tasks where emphasis matters, for profiling PASTA heads: the prompt, the phrase to highlight,
and the answer the highlighted text asks for against the answers the model gives when it
ignores it.

Zhang et al. (ICLR 2024, "Tell Your Model Where to Attend") profile heads on tasks of this kind
(counterfactual facts in context, format instructions). Two ship with the workbench, written for
it (interp/tasks/data/pasta_*.jsonl, 80 items each):

- "counterfactual": the context states a fact contradicting world knowledge ("The capital of
  France is Rome."), one neutral filler sentence follows, then the question. Highlight: the
  context sentence. Success: the context's answer (" Rome") beats the memorised one (" Paris").
- "uppercase": an instruction to answer in capital letters, then a question with a one-word
  answer. Highlight: the instruction. Success: the upper-case answer's first token (" BLUE")
  beats the lower-case and capitalised ones (" blue", " Blue").

Both are scored at the next-token distribution (cheap: one forward per item, no generation):
margin = log p(first token of the target) - max over foils of log p(first token of the foil);
the item succeeds when the margin is > 0. Items whose target and a foil share their first token
are refused (they cannot be told apart at one token).

Any JSONL file of the same shape is a task too, one object a line:
    {"prompt": str, "highlight": str (copied from the prompt), "target": str, "foils": [str, ...]}

    task = load_pasta_task("counterfactual")
    profile, evaluation = split(task, seed=0)           # disjoint halves, seeded
    ids = answer_token_ids(model, profile)              # target [n], foils [n, k]
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from interp.errors import InvalidInput

BUILTIN = ("counterfactual", "uppercase")
UPPERCASE_INSTRUCTION = "Answer in capital letters only, LIKE THIS."


@dataclass(frozen=True)
class PastaItem:
    """One prompt: `highlight` occurs in `prompt`; `target` is the answer that follows the
    highlighted text, `foils` the answers that ignore it (each starts with its space)."""

    id: str
    prompt: str
    highlight: str
    target: str
    foils: tuple[str, ...]


@dataclass(frozen=True)
class PastaTask:
    name: str
    items: tuple[PastaItem, ...]
    source: str = ""

    def __len__(self) -> int:
        return len(self.items)


def _counterfactual(row: dict) -> PastaItem:
    prompt = f"{row['context']} {row['filler']}\nQuestion: {row['question']}\nAnswer:"
    return PastaItem(row["id"], prompt, row["context"], " " + row["context_answer"],
                     (" " + row["memory_answer"],))


def _uppercase(row: dict) -> PastaItem:
    prompt = f"{UPPERCASE_INSTRUCTION}\nQuestion: {row['question']}\nAnswer:"
    answer = row["answer"]
    return PastaItem(row["id"], prompt, UPPERCASE_INSTRUCTION, " " + answer.upper(),
                     (" " + answer.lower(), " " + answer.capitalize()))


def _generic(row: dict) -> PastaItem:
    missing = [k for k in ("prompt", "highlight", "target", "foils") if k not in row]
    if missing:
        raise InvalidInput(f"missing keys {missing}: each line needs prompt, highlight, target "
                           "and foils (a list)")
    if row["highlight"] not in row["prompt"]:
        raise InvalidInput(f"highlight {row['highlight']!r} does not occur in its prompt; copy "
                           "it from the prompt")
    foils = row["foils"]
    if isinstance(foils, str) or not foils:
        raise InvalidInput("foils must be a non-empty list of answers")
    return PastaItem(str(row.get("id", "")), row["prompt"], row["highlight"], row["target"],
                     tuple(foils))


def load_pasta_task(name_or_path: str | Path) -> PastaTask:
    """A built-in task by name (`BUILTIN`) or a JSONL file of {prompt, highlight, target, foils}."""
    name = str(name_or_path)
    if name in BUILTIN:
        text = resources.files("interp.tasks").joinpath(f"data/pasta_{name}.jsonl").read_text()
        make, source = {"counterfactual": _counterfactual, "uppercase": _uppercase}[name], name
    else:
        path = Path(name)
        if not path.is_file():
            raise InvalidInput(f"unknown PASTA task {name!r}: name a built-in one "
                               f"({', '.join(BUILTIN)}) or an existing JSONL file of "
                               "{prompt, highlight, target, foils}")
        text, make, source, name = path.read_text(), _generic, str(path), path.stem
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            item = make(row)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{source} line {number} is not JSON ({exc.msg})") from None
        except InvalidInput as exc:
            raise InvalidInput(f"{source} line {number}: {exc}") from None
        if not item.id:
            item = PastaItem(f"{name}{number}", item.prompt, item.highlight, item.target,
                             item.foils)
        items.append(item)
    if not items:
        raise InvalidInput(f"{source} has no items: one JSON object a line")
    return PastaTask(name, tuple(items), source)


def split(task: PastaTask, seed: int = 0, n_profile: int | None = None
          ) -> tuple[list[PastaItem], list[PastaItem]]:
    """Disjoint (profiling, evaluation) halves of the task's items, shuffled with `seed`.
    n_profile: the profiling half's size (default half of the items)."""
    order = list(task.items)
    random.Random(seed).shuffle(order)
    cut = len(order) // 2 if n_profile is None else n_profile
    if not 0 < cut < len(order):
        raise InvalidInput(f"cannot split {len(order)} items of {task.name} with {cut} for "
                           "profiling: keep at least one for each half")
    return order[:cut], order[cut:]


def answer_token_ids(model, items) -> tuple[torch.Tensor, torch.Tensor]:
    """First tokens of each item's target [n] and foils [n, k] (k = the most foils of any item;
    an item with fewer repeats its last). A target sharing its first token with a foil is
    refused: the two answers cannot be told apart at the next token."""
    targets, foils = [], []
    width = max(len(item.foils) for item in items)
    for item in items:
        first = _first_token(model, item.target)
        firsts = [_first_token(model, f) for f in item.foils]
        if first in firsts:
            raise InvalidInput(f"item {item.id}: target {item.target!r} and a foil start with the "
                               "same token; change one of them")
        targets.append(first)
        foils.append(firsts + firsts[-1:] * (width - len(firsts)))
    return torch.tensor(targets), torch.tensor(foils)


def distinguishable(model, items) -> tuple[list[PastaItem], list[str]]:
    """(the items whose target's first token differs from every foil's, the ids of the others):
    a model's tokenizer may merge " EARS" and " Ears" at the first token."""
    kept, dropped = [], []
    for item in items:
        first = _first_token(model, item.target)
        (dropped.append(item.id) if any(_first_token(model, f) == first for f in item.foils)
         else kept.append(item))
    return kept, dropped


def _first_token(model, text: str) -> int:
    ids = model.tokenizer(text, add_special_tokens=False).input_ids
    if not ids:
        raise InvalidInput(f"the answer {text!r} has no tokens")
    return int(ids[0])


def margins(logprobs: torch.Tensor, target_ids: torch.Tensor,
            foil_ids: torch.Tensor) -> torch.Tensor:
    """[n]: log p(target) - max log p(foil), from next-token log-probs [n, vocab]."""
    target = logprobs.gather(1, target_ids[:, None].to(logprobs.device))[:, 0]
    foil = logprobs.gather(1, foil_ids.to(logprobs.device)).max(-1).values
    return (target - foil).float().cpu()
