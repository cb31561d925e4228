"""Indirect Object Identification (IOI) prompts, after Wang et al. 2022, "Interpretability in the
Wild: a Circuit for Indirect Object Identification in GPT-2 small" (arXiv:2211.00593), section 2.

    "After Lena and Oscar reached the harbor, Oscar handed a lantern to" -> " Lena"

The first clause introduces two names; the second repeats one of them, the subject S, and the
model should continue with the other, the indirect object IO. Orders follow the paper:
ABBA (IO first, "A ... B ... B gave to" -> A) and BABA (S first, "B ... A ... B gave to" -> A).

The corrupted counterpart is the paper's ABC distribution: the same template, place and object
with three fresh, distinct names in the three name slots, so neither IO nor S is in it and the
logit difference IO - S is about zero. `corruption="s2"` replaces only the repeated name
(ABB -> ABC), which removes the duplication while keeping both names in context.

Templates and word lists are this project's own. Every word is used with a leading space and
must be ONE token for the model's tokenizer (checked per model), so every prompt of a template
has the same length and clean/corrupted pairs line up token for token — position-aware means
(circuit mean-ablation) and position-resolved patching need that.

Metadata of each prompt: template index, order, the names, the corrupted names, and the token
positions "IO", "S1", "S1+1", "S2", "end" (the paper's position names).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from interp.errors import InvalidInput
from interp.models import Model
from interp.tasks.base import PromptSet
from interp.tokens import TokenBatch

# {A} and {B} are the first-clause names, {S} the repeated one, {PLACE}/{OBJECT} single words.
# No template starts with a name: every name slot then follows a space, and " Name" is one token.
TEMPLATES: tuple[str, ...] = (
    "While{A} and{B} were at the{PLACE},{S} handed a{OBJECT} to",
    "After{A} and{B} reached the{PLACE},{S} passed the{OBJECT} to",
    "Yesterday{A} and{B} visited the{PLACE}, and{S} showed the{OBJECT} to",
    "Once{A} and{B} got to the{PLACE},{S} threw the{OBJECT} to",
    "As{A} and{B} walked into the{PLACE},{S} tossed a{OBJECT} to",
    "Before{A} and{B} left the{PLACE},{S} returned the{OBJECT} to",
    "On Monday{A} and{B} met at the{PLACE}.{S} lent a{OBJECT} to",
    "At the{PLACE},{A} and{B} found a{OBJECT}.{S} gave it to",
    "The{PLACE} was quiet when{A} and{B} arrived.{S} sold a{OBJECT} to",
    "Because{A} and{B} were hungry at the{PLACE},{S} brought a{OBJECT} to",
    "Later that day{A} and{B} cleaned the{PLACE}, and{S} mailed a{OBJECT} to",
    "When{A} and{B} came back from the{PLACE},{S} offered the{OBJECT} to",
    "Then{A} and{B} had lunch at the{PLACE}, and{S} left the{OBJECT} with",
    "Since{A} and{B} worked at the{PLACE},{S} sent a{OBJECT} to",
    "After a long day at the{PLACE},{A} and{B} rested.{S} gave a{OBJECT} to",
)

NAMES: tuple[str, ...] = (
    "Adam", "Alice", "Amy", "Andrew", "Anna", "Ben", "Beth", "Bill", "Carl", "Carol", "Chris",
    "Claire", "Dan", "David", "Diana", "Emily", "Emma", "Eric", "Frank", "Fred", "George",
    "Grace", "Greg", "Hannah", "Harry", "Helen", "Henry", "Ian", "Jack", "Jacob", "James", "Jane",
    "Jason", "Jeff", "Jennifer", "Jessica", "Jim", "Joe", "John", "Jose", "Julia", "Justin",
    "Karen", "Kate", "Kevin", "Kim", "Laura", "Leo", "Lisa", "Lucy", "Luke", "Maria", "Mark",
    "Martin", "Mary", "Matt", "Max", "Michael", "Mike", "Nancy", "Nick", "Oliver", "Oscar", "Paul",
    "Peter", "Rachel", "Ray", "Richard", "Robert", "Rose", "Ruth", "Ryan", "Sam", "Sarah", "Scott",
    "Sean", "Simon", "Sophie", "Steve", "Susan", "Thomas", "Tim", "Tom", "Tony", "Victor",
    "William", "Zoe", "Lena", "Nina", "Hugo", "Ella", "Alex", "Rita", "Ted", "Kyle", "Joan",
)

PLACES: tuple[str, ...] = (
    "store", "park", "beach", "school", "office", "garden", "library", "museum", "station",
    "market", "kitchen", "hospital", "restaurant", "church", "farm", "river", "lake", "zoo",
    "airport", "hotel", "bakery", "gym", "theater", "cafe", "harbor", "bank", "mall", "forest",
    "castle", "studio", "club", "village",
)

OBJECTS: tuple[str, ...] = (
    "book", "ball", "key", "cup", "ring", "letter", "bag", "hat", "box", "pen", "apple", "card",
    "phone", "map", "coin", "ticket", "flower", "watch", "lamp", "shirt", "toy", "cake",
    "bottle", "basket", "drink", "camera", "guitar", "note", "gift", "lantern", "blanket",
    "pencil",
)

POSITION_NAMES = ("IO", "S1", "S1+1", "S2", "end")
ORDERS = ("ABBA", "BABA")
CORRUPTIONS = ("abc", "s2")


@dataclass(frozen=True)
class IOIVocabulary:
    """The words usable with one tokenizer: those that are one token after a space."""

    names: tuple[str, ...]
    places: tuple[str, ...]
    objects: tuple[str, ...]


def single_token_words(model: Model, words: tuple[str, ...]) -> tuple[str, ...]:
    """The words `w` for which `" " + w` is exactly one token of `model`'s tokenizer."""
    return tuple(w for w in words if len(model.tokenizer(" " + w, add_special_tokens=False).input_ids) == 1)


def vocabulary(model: Model) -> IOIVocabulary:
    """The IOI word lists filtered to single tokens for `model` (clear error if too few remain)."""
    vocab = IOIVocabulary(single_token_words(model, NAMES), single_token_words(model, PLACES),
                          single_token_words(model, OBJECTS))
    for kind, words, needed in (("names", vocab.names, 5), ("places", vocab.places, 1),
                                ("objects", vocab.objects, 1)):
        if len(words) < needed:
            raise InvalidInput(
                f"only {len(words)} IOI {kind} are single tokens for {model.name}; IOI needs at "
                f"least {needed}. Pass your own word lists to ioi_prompts(names=..., places=..., "
                "objects=...) with words that tokenize to one token after a space."
            )
    return vocab


def _fill(template: str, first: str, second: str, repeated: str, place: str, obj: str) -> str:
    return template.format(A=" " + first, B=" " + second, S=" " + repeated, PLACE=" " + place,
                           OBJECT=" " + obj)


def _slot_order(template: str) -> list[str]:
    """The name slots in the order they appear in the text, e.g. ["A", "B", "S"]."""
    import string

    return [field for _, field, _, _ in string.Formatter().parse(template) if field in ("A", "B", "S")]


def _name_positions(model: Model, text: str, names_in_order: list[str]) -> list[int]:
    """Token index of each name occurrence (in text order), found by character offsets."""
    encoding = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoding["offset_mapping"]
    shift = 1 if model.prepend_bos else 0  # model.encode puts BOS in front
    positions, search_from = [], 0
    for name in names_in_order:
        char = text.index(" " + name, search_from)
        search_from = char + 1 + len(name)
        # The token covering the name: it starts at the space or at the name's first letter.
        matches = [i for i, (start, end) in enumerate(offsets) if start <= char + 1 < end or start == char]
        if not matches:
            raise InvalidInput(f"could not locate {name!r} in the tokens of {text!r}")
        positions.append(matches[0] + shift)
    return positions


def ioi_prompts(
    model: Model,
    n: int = 64,
    seed: int = 0,
    orders: tuple[str, ...] = ORDERS,
    corruption: str = "abc",
    templates: tuple[str, ...] = TEMPLATES,
    names: tuple[str, ...] | None = None,
    places: tuple[str, ...] | None = None,
    objects: tuple[str, ...] | None = None,
) -> PromptSet:
    """`n` IOI prompts for `model` with their ABC-corrupted counterparts; same seed, same prompts.

    orders:     which orders to draw from ("ABBA", "BABA"); prompts alternate between them.
    corruption: "abc" (three fresh names, the paper's p_ABC) or "s2" (only S2 replaced).
    names/places/objects: override the word lists (still filtered to single tokens).

    Returns a PromptSet with answers = IO token, wrong_answers = S token, `corrupted` of the same
    token length prompt for prompt, and metadata {"template", "order", "io", "s",
    "corrupted_names", "positions": {"IO", "S1", "S1+1", "S2", "end"}}.
    """
    if n < 1:
        raise InvalidInput(f"n must be at least 1, got {n}")
    unknown = [o for o in orders if o not in ORDERS]
    if unknown or not orders:
        raise InvalidInput(f"orders must be a non-empty subset of {ORDERS}, got {orders}")
    if corruption not in CORRUPTIONS:
        raise InvalidInput(f"corruption must be one of {CORRUPTIONS}, got {corruption!r}")
    for template in templates:
        if sorted(_slot_order(template)) != ["A", "B", "S"]:
            raise InvalidInput(f"template {template!r} needs exactly the slots {{A}}, {{B}}, {{S}}")
    default = vocabulary(model)
    words = IOIVocabulary(
        single_token_words(model, tuple(names)) if names else default.names,
        single_token_words(model, tuple(places)) if places else default.places,
        single_token_words(model, tuple(objects)) if objects else default.objects,
    )
    if len(words.names) < 5 or not words.places or not words.objects:
        raise InvalidInput("the word lists given leave too few single-token words (need 5 names, "
                           "1 place, 1 object)")

    rng = random.Random(seed)
    clean_ids, corrupt_ids, texts, metadata, answers, wrong = [], [], [], [], [], []
    for index in range(n):
        template_index = rng.randrange(len(templates))
        template = templates[template_index]
        order = orders[index % len(orders)]
        io, s, x, y, z = rng.sample(words.names, 5)
        place, obj = rng.choice(words.places), rng.choice(words.objects)
        first, second = (io, s) if order == "ABBA" else (s, io)
        text = _fill(template, first, second, s, place, obj)
        if corruption == "abc":
            c_first, c_second, c_repeated = x, y, z
        else:
            c_first, c_second, c_repeated = first, second, x
        corrupt_text = _fill(template, c_first, c_second, c_repeated, place, obj)

        slot_names = {"A": first, "B": second, "S": s}
        in_text_order = [slot_names[slot] for slot in _slot_order(template)]
        positions_in_order = _name_positions(model, text, in_text_order)
        by_slot = dict(zip(_slot_order(template), positions_in_order))
        io_pos, s1_pos = (by_slot["A"], by_slot["B"]) if order == "ABBA" else (by_slot["B"], by_slot["A"])
        ids = model.encode(text)
        corrupt = model.encode(corrupt_text)
        if len(ids) != len(corrupt):
            raise InvalidInput(f"IOI prompt {index} and its corruption differ in length "
                               f"({len(ids)} vs {len(corrupt)} tokens): {text!r} / {corrupt_text!r}")
        positions = {"IO": io_pos, "S1": s1_pos, "S1+1": s1_pos + 1, "S2": by_slot["S"],
                     "end": len(ids) - 1}
        clean_ids.append(ids)
        corrupt_ids.append(corrupt)
        texts.append(text)
        answers.append(model.single_token_id(" " + io))
        wrong.append(model.single_token_id(" " + s))
        metadata.append({
            "template": template_index, "order": order, "io": io, "s": s, "place": place,
            "object": obj, "corrupted_text": corrupt_text,
            "corrupted_names": [c_first, c_second, c_repeated], "positions": positions,
        })
    pad = model.pad_token_id
    return PromptSet(
        name=f"ioi-{corruption}",
        tokens=TokenBatch.from_lists(clean_ids, pad),
        texts=texts,
        answers=torch.tensor(answers),
        wrong_answers=torch.tensor(wrong),
        corrupted=TokenBatch.from_lists(corrupt_ids, pad),
        metadata=metadata,
    )
