"""Greater-than (Hanna et al. 2023, "How does GPT-2 compute greater-than?"), adapted to tokenizers
that split numbers into digits.

The paper's prompt "The war lasted from the year 1732 to the year 17" asks GPT-2 for a two-digit
year token YY' > 32. SmolLM2 and Gemma-3 tokenize every digit on its own (" 1732" ->
" ", "1", "7", "3", "2"; no two-digit number is one token), so the next token is only the TENS
digit of the end year. We therefore choose start years whose units digit is 9
(YY = X9, X in 1..8): then an end year 17dU is after 17X9 exactly when d > X and not after it
exactly when d <= X, whatever U is, so the paper's metric restricted to the next token loses
nothing:

    metric = sum_{d > X} p(d) - sum_{d <= X} p(d)        (p over the full vocabulary)

Corruption, as in the paper, starts the war in year 01 of the same century ("1701"): same token
count, and every tens digit is "after" it.

Prompt i: noun, verb and century (11..17) drawn with seed `seed`; metadata {"tens": X,
"century": C, "digit_ids": ids of "0".."9"}.
"""

from __future__ import annotations

import random

import torch

from interp.errors import InvalidInput
from interp.tasks.base import PromptSet
from interp.tokens import TokenBatch

NOUNS = ("war", "expedition", "dynasty", "conflict", "siege", "reign", "famine", "journey",
         "rebellion", "drought", "pilgrimage", "occupation", "voyage", "campaign", "feud")
VERBS = ("lasted", "continued", "went on", "ran")
TEMPLATE = "The {noun} {verb} from the year {century}{start} to the year {century}"


def digit_ids(model) -> list[int]:
    """Token ids of "0".."9" for `model`, each a single token (clear error otherwise)."""
    return [model.single_token_id(str(d)) for d in range(10)]


def greater_than_prompts(model, n: int = 64, seed: int = 0) -> PromptSet:
    """`n` greater-than prompts with their "01" corruption (see module doc). answers /
    wrong_answers: the digit X + 1 and the digit X (for display and logit-diff use)."""
    if n < 1:
        raise InvalidInput(f"n must be at least 1, got {n}")
    digits = digit_ids(model)
    rng = random.Random(seed)
    clean, corrupt, texts, metadata, answers, wrong = [], [], [], [], [], []
    for index in range(n):
        noun, verb = rng.choice(NOUNS), rng.choice(VERBS)
        century, tens = rng.randint(11, 17), rng.randint(1, 8)
        text = TEMPLATE.format(noun=noun, verb=verb, century=century, start=f"{tens}9")
        corrupt_text = TEMPLATE.format(noun=noun, verb=verb, century=century, start="01")
        ids, corrupt_ids = model.encode(text), model.encode(corrupt_text)
        if len(ids) != len(corrupt_ids):
            raise InvalidInput(f"greater-than prompt {index} and its corruption differ in length for "
                               f"{model.name}: {text!r} / {corrupt_text!r}")
        clean.append(ids)
        corrupt.append(corrupt_ids)
        texts.append(text)
        answers.append(digits[tens + 1])
        wrong.append(digits[tens])
        metadata.append({"tens": tens, "century": century, "noun": noun, "verb": verb,
                         "corrupted_text": corrupt_text, "digit_ids": digits})
    pad = model.pad_token_id
    return PromptSet(name="greater-than", tokens=TokenBatch.from_lists(clean, pad), texts=texts,
                     answers=torch.tensor(answers), wrong_answers=torch.tensor(wrong),
                     corrupted=TokenBatch.from_lists(corrupt, pad), metadata=metadata)


def probability_difference(logits: torch.Tensor, tens: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
    """[b]: p(tens digit > X) - p(tens digit <= X) from final logits [b, vocab]; tens [b] = X,
    digits [10] = the digit token ids."""
    probs = logits.float().softmax(-1)[:, digits.to(logits.device)]  # [b, 10]
    after = torch.arange(10, device=logits.device)[None, :] > tens.to(logits.device)[:, None]
    return (probs * after).sum(-1) - (probs * ~after).sum(-1)
