"""Needle-in-a-haystack prompts (retrieval heads) and ROUGE-1 recall (was the needle found?).

The construction follows Wu et al., "Retrieval Head Mechanistically Explains Long-Context
Factuality" (2024), as done in their repository nightdessert/Retrieval_Head
(`retrieval_head_detection.py`, itself adapted from gkamradt/LLMTest_NeedleInAHaystack):

- the haystack is cut to `context_length - buffer` tokens minus the needle's length (buffer =
  200 there: room for the question and the answer);
- the needle goes in at `depth` percent of the haystack, moved back to the end of the previous
  sentence (at 100 % it is appended);
- the prompt is `context + "\\nBased on the content of the book, Question: {q}\\nAnswer:"`,
  or for chat models the same inside the chat template with the context in `<book>` tags;
- the answer span (the "real needle") is what retrieval heads must copy from.

Deviation, on purpose: the reference finds the answer span by the first token window whose set
of ids overlaps the answer's by > 90 %, a workaround for not knowing where the text landed; we
know its characters, so the span is the tokens covering the answer's characters (the tokenizer's
offset mapping). Where the heuristic works both give the same span.

The default haystack (`data/haystack_*.txt`) and needles (`data/needles.json`) are the project's
own texts.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from interp.errors import InvalidInput
from interp.models import Model
from interp.tasks.base import PromptSet
from interp.tokens import TokenBatch

DATA = Path(__file__).parent / "data"
QUESTION_TEMPLATE = "\nBased on the content of the book, Question: {question}\nAnswer:"
CHAT_TEMPLATE = "<book>{context}</book>\nBased on the content of the book, Question: {question}\nAnswer:"


@dataclass(frozen=True)
class Needle:
    """A fact to hide, the question that asks for it, and the answer (a substring of `needle`)."""

    needle: str
    question: str
    answer: str

    def __post_init__(self):
        if self.answer not in self.needle:
            raise InvalidInput(f"the answer {self.answer!r} must appear verbatim in the needle "
                               f"{self.needle!r}: retrieval heads copy it from there")


def default_needles() -> list[Needle]:
    return [Needle(**row) for row in json.loads((DATA / "needles.json").read_text())]


def default_haystack() -> str:
    """The project's own essays, joined in a fixed order."""
    return "\n\n".join(p.read_text().strip() for p in sorted(DATA.glob("haystack_*.txt")))


def load_haystack(path: str | Path) -> str:
    """A haystack from a .txt file or a directory of .txt files (joined in name order)."""
    path = Path(path)
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise InvalidInput(f"no haystack text at {path}: give a .txt file or a directory of .txt files")
    return "\n\n".join(f.read_text().strip() for f in files)


@dataclass(frozen=True)
class NeedleTest:
    """One needle prompt: ids, where the answer sits, and what was asked."""

    input_ids: list[int]
    answer_span: tuple[int, int]   # [start, end) token positions of the answer in input_ids
    needle: Needle
    context_length: int
    depth: float

    def to_json(self) -> dict:
        return {"context_length": self.context_length, "depth": self.depth,
                "question": self.needle.question, "answer": self.needle.answer,
                "answer_span": list(self.answer_span), "n_tokens": len(self.input_ids)}


def _sentence_break(text: str, position: int) -> int:
    """The last sentence end at or before `position` (just after '.', '!' or '?'); 0 if none."""
    for index in range(min(position, len(text)) - 1, -1, -1):
        if text[index] in ".!?" and (index + 1 == len(text) or text[index + 1].isspace()):
            return index + 1
    return 0


def needle_test(model: Model, needle: Needle, context_length: int, depth: float,
                haystack: str | None = None, buffer: int = 200, chat: bool | None = None) -> NeedleTest:
    """Build one needle-in-a-haystack prompt of about `context_length` tokens.

    depth: 0..100, where in the haystack the needle goes (percent of its tokens).
    chat:  wrap in the model's chat template (default: when the model has one, as the reference
           does for its instruction-tuned models).
    """
    if not 0 <= depth <= 100:
        raise InvalidInput(f"depth is a percentage in [0, 100], got {depth}")
    if context_length > model.n_ctx:
        raise InvalidInput(f"context_length {context_length} exceeds {model.name}'s context of "
                           f"{model.n_ctx} tokens; ask for at most {model.n_ctx}")
    if context_length <= buffer:
        raise InvalidInput(f"context_length {context_length} must exceed the buffer of {buffer} "
                           "tokens kept for the question and the answer")
    haystack = default_haystack() if haystack is None else haystack
    hay_ids = _encode(model.tokenizer, haystack)
    needle_ids = _encode(model.tokenizer, " " + needle.needle)
    keep = context_length - buffer - len(needle_ids)
    if keep < 1 or len(hay_ids) < keep:
        raise InvalidInput(
            f"the haystack has {len(hay_ids)} tokens but a {context_length}-token test needs "
            f"{max(keep, 1)}; give a longer haystack (a directory of .txt files) or a shorter "
            "context length")
    context = model.tokenizer.decode(hay_ids[:keep])
    if depth >= 100:
        at = len(context)
    else:
        at = _sentence_break(context, int(len(context) * depth / 100))
    before, after = context[:at], context[at:]
    glue = " " if before and not before[-1].isspace() else ""
    text = before + glue + needle.needle + ("" if after[:1].isspace() or not after else " ") + after
    answer_start = len(before) + len(glue) + needle.needle.index(needle.answer)

    use_chat = (model.chat_template is not None) if chat is None else chat
    if use_chat:
        body = CHAT_TEMPLATE.format(context=text, question=needle.question)
        prompt = model.apply_chat_template(body)
        answer_start += prompt.index(body) + len("<book>")
    else:
        prompt = text + QUESTION_TEMPLATE.format(question=needle.question)
    prefix = [model.bos_token_id] if model.prepend_bos and not use_chat else []
    encoded = model.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    ids = prefix + list(encoded.input_ids)
    answer_end = answer_start + len(needle.answer)
    covering = [i for i, (s, e) in enumerate(encoded.offset_mapping) if s < answer_end and e > answer_start]
    if not covering:
        raise InvalidInput(f"could not locate the answer {needle.answer!r} in the tokenized prompt")
    span = (covering[0] + len(prefix), covering[-1] + 1 + len(prefix))
    if len(ids) > model.n_ctx:
        raise InvalidInput(f"the needle prompt has {len(ids)} tokens, more than {model.name}'s "
                           f"context of {model.n_ctx}; use a shorter context_length")
    return NeedleTest(ids, span, needle, context_length, float(depth))


def needle_tests(model: Model, context_lengths=(1000, 2000), depths=(0, 25, 50, 75, 100),
                 needles: list[Needle] | None = None, haystack: str | None = None,
                 buffer: int = 200, chat: bool | None = None) -> list[NeedleTest]:
    """Every (needle, context length, depth) combination, needles outermost (as the reference)."""
    needles = default_needles() if needles is None else needles
    return [needle_test(model, n, length, depth, haystack, buffer, chat)
            for n in needles for length in context_lengths for depth in depths]


def as_prompt_set(model: Model, tests: list[NeedleTest], name: str = "needle") -> PromptSet:
    """The tests as a PromptSet (its hash identifies them in the store)."""
    tokens = TokenBatch.from_lists([t.input_ids for t in tests], model.pad_token_id)
    return PromptSet(name=name, tokens=tokens,
                     texts=[f"{t.needle.question} @ {t.context_length} tokens, {t.depth:g}%" for t in tests],
                     metadata=[t.to_json() for t in tests])


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids)


# ---- ROUGE-1 recall ----------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """Lowercased alphanumeric words, as the `rouge_score` package's default tokenizer."""
    return _WORD.findall(text.lower())


def rouge1_recall(reference: str, candidate: str) -> float:
    """ROUGE-1 recall: the fraction of the reference's words (with multiplicity) in the candidate.

    Lin (2004): recall = sum over words w of min(count_ref(w), count_cand(w)) / |ref words|.
    Wu et al. score with `rouge_score`'s RougeScorer(['rouge1'], use_stemmer=True); we do not
    stem (no Porter stemmer dependency), which only matters when the model inflects a copied
    word differently — rare when the answer is copied.
    """
    ref = Counter(rouge_tokens(reference))
    total = sum(ref.values())
    if total == 0:
        raise InvalidInput(f"the reference {reference!r} has no words to recall")
    cand = Counter(rouge_tokens(candidate))
    return sum(min(n, cand[w]) for w, n in ref.items()) / total


def is_stop_token(model: Model, token_id: int) -> bool:
    """Whether greedy answers end at this token: EOS, or any token whose text has a newline
    (the reference stops at the newline token)."""
    eos = model.tokenizer.eos_token_id
    configured = getattr(model.hf_model.generation_config, "eos_token_id", None)
    ends = {eos} | (set(configured) if isinstance(configured, (list, tuple)) else {configured})
    return token_id in ends or "\n" in model.tokenizer.decode([token_id])


def recall_of(tests: list[NeedleTest], responses: list[str]) -> torch.Tensor:
    """[n_tests] ROUGE-1 recall of each test's answer in the response."""
    return torch.tensor([rouge1_recall(t.needle.answer, r) for t, r in zip(tests, responses)])
