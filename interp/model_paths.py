"""Check what a user typed as a model before anything slow loads: an embedded name, a local
Hugging Face directory, a .gguf file or a hub id written as org/name.

    check_model_name("smollm2-135m")        # fine; an unknown name is UnknownModel with the fix
    check_model_path("~/models/my.gguf")    # -> absolute path, or InvalidInput saying what is wrong
    peek_shape("smollm2-135m")              # -> ModelShape("smollm2-135m", 30, 9) from config.json

This module imports neither torch nor transformers: the CLI and the dashboard call it to refuse
bad input at once, and `interp.models.load_model` resolves names the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from interp.embedded import EMBEDDED_MODELS, cached_dir, is_cached
from interp.errors import InvalidInput, UnknownModel

GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file (the format's magic number)


def unknown_model_message(name: str) -> str:
    known = ", ".join(EMBEDDED_MODELS)
    return (
        f"unknown model {name!r}. Use an embedded model ({known}), a local Hugging Face "
        "directory, a .gguf file, or a hub id such as 'gpt2' written as 'openai-community/gpt2' "
        "(hub ids need network access). `interp models` lists the embedded ones."
    )


def looks_like_path(name: str) -> bool:
    """Whether `name` is meant as a file system path rather than an embedded name or hub id."""
    return Path(name).expanduser().exists() or name.startswith((".", "/", "~"))


def check_model_path(text: str | None) -> str:
    """A typed model path -> its absolute form, or InvalidInput saying what is wrong."""
    text = (text or "").strip()
    if not text:
        raise InvalidInput("type a path: a Hugging Face model directory or a .gguf file")
    if "\x00" in text:
        raise InvalidInput("the path contains a NUL character")
    path = Path(text).expanduser()
    if not path.exists():
        raise InvalidInput(f"{path} does not exist")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InvalidInput(f"{path} is a directory without a config.json; point at a Hugging "
                               "Face model directory (config.json + weights + tokenizer)")
        return str(path.resolve())
    if path.is_file() and path.suffix.lower() == ".gguf":
        check_gguf_file(path)
        return str(path.resolve())
    raise InvalidInput(f"{path} is neither a model directory nor a .gguf file")


def check_gguf_file(path: Path) -> None:
    """Refuse a file named .gguf that is not one, naming the user's file (not a cache copy)."""
    with open(path, "rb") as file:
        magic = file.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise InvalidInput(f"{path} is not a GGUF file (it does not start with the GGUF magic "
                           "bytes); point at a .gguf model file or a Hugging Face model directory")


def check_model_name(name: str) -> None:
    """Refuse at once a model that can never load: not embedded, not a model path, not an
    org/name hub id. Whether a hub id exists is only known when it loads."""
    if name in EMBEDDED_MODELS:
        return
    if looks_like_path(name):
        check_model_path(name)
        return
    if name.count("/") != 1:
        raise UnknownModel(unknown_model_message(name))


@dataclass(frozen=True)
class ModelShape:
    """What argument checks need of a model before it loads (the fields `check_heads` reads)."""

    name: str
    n_layers: int
    n_heads: int


def peek_shape(name: str) -> ModelShape | None:
    """The model's layer and head counts from its config.json, without loading it; None when
    they cannot be known yet (an embedded model not converted, a GGUF file or hub id)."""
    if name in EMBEDDED_MODELS:
        entry = EMBEDDED_MODELS[name]
        directory, shown = (cached_dir(entry), entry.name) if is_cached(entry) else (None, name)
    else:
        path = Path(name).expanduser()
        directory, shown = (path, path.name) if path.is_dir() else (None, name)
    config_file = directory / "config.json" if directory is not None else None
    if config_file is None or not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return None
    text_config = config.get("text_config") or config  # multimodal configs nest the LM's
    try:
        return ModelShape(shown, int(text_config["num_hidden_layers"]),
                          int(text_config["num_attention_heads"]))
    except (KeyError, TypeError, ValueError):
        return None
