"""Token streams for training and evaluating SAEs: a text corpus cut into fixed-length windows.

The default corpus is Jane Austen's "Pride and Prejudice" (1813; public domain; the Project
Gutenberg eBook #1342 text with the Gutenberg header, footer and licence removed, paragraphs
re-flowed), shipped as `interp/tasks/data/corpus_austen_pride_and_prejudice.txt`: about 160k
SmolLM2 tokens of ordinary English prose. The project's own essays (`haystack_*.txt`, about 5k
tokens) are too few to train an SAE on; they remain `corpus="essays"`. A user names their own
corpus as a .txt file or a directory of .txt files.

Windows do not overlap, and the held-out windows (loss and quality figures) are the last ones of
the text, so evaluation tokens are never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from interp.errors import InvalidInput
from interp.models import Model
from interp.tasks.needle import default_haystack, load_haystack

DATA = Path(__file__).resolve().parents[2] / "interp" / "tasks" / "data"
DEFAULT_CORPUS = DATA / "corpus_austen_pride_and_prejudice.txt"


def corpus_text(corpus: str | Path | None = None) -> tuple[str, str]:
    """(text, name) of a corpus: None -> the shipped novel, "essays" -> the project's essays,
    a .txt file or a directory of .txt files -> that text."""
    if corpus is None:
        return DEFAULT_CORPUS.read_text(), DEFAULT_CORPUS.name
    if str(corpus) == "essays":
        return default_haystack(), "essays"
    path = Path(corpus).expanduser()
    if not path.exists():
        raise InvalidInput(f"corpus {str(corpus)!r} does not exist: name a .txt file or a "
                           "directory of .txt files (or leave it out for the shipped novel)")
    return load_haystack(path), str(path)


@dataclass(frozen=True)
class Windows:
    """A corpus cut into non-overlapping windows of one length, split train / held out.

    train, held_out: [n, context_size] long token ids (BOS first when the model needs one).
    """

    train: torch.Tensor
    held_out: torch.Tensor
    corpus: str

    @property
    def context_size(self) -> int:
        return self.train.shape[1]


def corpus_windows(model: Model, corpus: str | Path | None = None, context_size: int = 128,
                   held_out_windows: int = 16, min_train_windows: int = 1) -> Windows:
    """Tokenize a corpus once and cut it into windows (the last `held_out_windows` held out)."""
    if context_size < 2:
        raise InvalidInput(f"context_size must be at least 2, got {context_size}")
    if context_size > model.n_ctx:
        raise InvalidInput(f"context_size {context_size} exceeds {model.name}'s context of {model.n_ctx}")
    text, name = corpus_text(corpus)
    ids = model.tokenizer(text, add_special_tokens=False).input_ids
    bos = [model.bos_token_id] if model.prepend_bos else []
    width = context_size - len(bos)
    n_windows = len(ids) // width
    if n_windows < held_out_windows + min_train_windows:
        raise InvalidInput(
            f"corpus {name} has {len(ids)} tokens: {n_windows} windows of {context_size}, fewer "
            f"than the {held_out_windows} held out + {min_train_windows} to train on; name a "
            "longer corpus or use a smaller context_size"
        )
    body = torch.tensor(ids[: n_windows * width]).view(n_windows, width)
    if bos:
        body = torch.cat([torch.full((n_windows, 1), bos[0]), body], dim=1)
    cut = n_windows - held_out_windows
    return Windows(train=body[:cut], held_out=body[cut:], corpus=name)
