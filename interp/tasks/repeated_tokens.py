"""Repeated random-token sequences: the standard probe for induction heads.

Each prompt is a sequence of `half` tokens drawn uniformly at random, followed by the same
sequence again (plus the model's BOS in front when it needs one). On the second copy an induction
head at token t attends to the token after the earlier occurrence of t and copies it, so a model
with induction heads predicts the second half almost perfectly while the first half is noise
(Olsson et al. 2022, "In-context Learning and Induction Heads"; the TransformerLens
`head_detector` and its induction demo use the same prompts).
"""

from __future__ import annotations

import torch

from interp.errors import InvalidInput
from interp.models import Model
from interp.tasks.base import PromptSet
from interp.tokens import TokenBatch


def sampleable_token_ids(model: Model) -> torch.Tensor:
    """[n] long: vocabulary ids safe to sample (no special tokens, no ids past the embedding)."""
    vocab = min(len(model.tokenizer), model.hf_model.get_input_embeddings().weight.shape[0])
    special = set(model.tokenizer.all_special_ids)
    keep = torch.ones(vocab, dtype=torch.bool)
    keep[[i for i in special if i < vocab]] = False
    return torch.nonzero(keep).squeeze(1)


def repeated_tokens(model: Model, n_prompts: int = 16, half: int = 64, seed: int = 0) -> PromptSet:
    """`n_prompts` prompts of `half` random tokens repeated once: [BOS] x_1..x_half x_1..x_half.

    metadata per prompt: {"offset": index of x_1, "half": half}; the second copy starts at
    offset + half. Tokens within a half are distinct, so every second-half token has exactly one
    earlier occurrence (a clean induction target).
    """
    if n_prompts < 1:
        raise InvalidInput(f"n_prompts must be >= 1, got {n_prompts}")
    pool = sampleable_token_ids(model)
    if half < 2 or half > len(pool):
        raise InvalidInput(f"half must be between 2 and {len(pool)} tokens, got {half}")
    bos = [model.bos_token_id] if model.prepend_bos else []
    length = len(bos) + 2 * half
    if length > model.n_ctx:
        raise InvalidInput(f"repeated sequences of {length} tokens exceed {model.name}'s context "
                           f"of {model.n_ctx}; use half <= {(model.n_ctx - len(bos)) // 2}")
    generator = torch.Generator().manual_seed(seed)
    lists, metadata = [], []
    for _ in range(n_prompts):
        picks = pool[torch.randperm(len(pool), generator=generator)[:half]].tolist()
        lists.append(bos + picks + picks)
        metadata.append({"offset": len(bos), "half": half})
    tokens = TokenBatch.from_lists(lists, model.pad_token_id)
    return PromptSet(name=f"repeated_tokens(half={half},seed={seed})", tokens=tokens,
                     texts=[model.tokenizer.decode(t) for t in lists], metadata=metadata)


def second_half_mask(prompts: PromptSet) -> torch.Tensor:
    """[n, seq] bool: positions whose NEXT token lies in the second copy and is predictable.

    Position p predicts token p+1; the second copy's tokens at offset+half+1 .. offset+2*half-1
    are predictable by induction (its first token is not: nothing precedes it in the pattern).
    """
    mask = torch.zeros(prompts.tokens.input_ids.shape, dtype=torch.bool)
    for row, meta in enumerate(prompts.metadata):
        start = meta["offset"] + meta["half"]
        mask[row, start: start + meta["half"] - 1] = True
    return mask
