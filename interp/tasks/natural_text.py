"""Natural-text prompts: windows of ordinary prose, for scans and losses on real text.

The default text is the project's own essays (`data/haystack_*.txt`, also the needle haystack);
pass `text=` for your own corpus. Windows are `max_tokens` long and evenly spaced over the
tokenized text, so they overlap only when the text is shorter than n_prompts * max_tokens.
"""

from __future__ import annotations

from interp.errors import InvalidInput
from interp.models import Model
from interp.tasks.base import PromptSet
from interp.tasks.needle import default_haystack
from interp.tokens import TokenBatch


def natural_text(model: Model, n_prompts: int = 8, max_tokens: int = 256, text: str | None = None) -> PromptSet:
    """`n_prompts` windows of `max_tokens` tokens (BOS first when the model needs it)."""
    if n_prompts < 1 or max_tokens < 2:
        raise InvalidInput(f"need n_prompts >= 1 and max_tokens >= 2, got {n_prompts}, {max_tokens}")
    if max_tokens > model.n_ctx:
        raise InvalidInput(f"max_tokens {max_tokens} exceeds {model.name}'s context of {model.n_ctx}")
    text = default_haystack() if text is None else text
    ids = list(model.tokenizer(text, add_special_tokens=False).input_ids)
    bos = [model.bos_token_id] if model.prepend_bos else []
    width = max_tokens - len(bos)
    if len(ids) < width:
        raise InvalidInput(f"the text has {len(ids)} tokens, fewer than the {width} asked per prompt; "
                           "give a longer text or a smaller max_tokens")
    last = len(ids) - width
    starts = [round(i * last / (n_prompts - 1)) for i in range(n_prompts)] if n_prompts > 1 else [0]
    lists = [bos + ids[s: s + width] for s in starts]
    return PromptSet(name=f"natural_text(n={n_prompts},T={max_tokens},h={hash_text(text)})",
                     tokens=TokenBatch.from_lists(lists, model.pad_token_id),
                     texts=[model.tokenizer.decode(t) for t in lists],
                     metadata=[{"start": s} for s in starts])


def hash_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:8]
