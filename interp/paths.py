"""Where the workbench keeps its files: the model cache and the results store.

Everything lives under one cache directory, `$INTERP_CACHE` if set, else the user's cache dir
(`~/.cache/interp` on Linux). Nothing here depends on the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir(create: bool = True) -> Path:
    """The workbench's cache root; created on first use unless `create` is False (read-only
    commands such as `interp runs` and `interp models` never create anything)."""
    root = os.environ.get("INTERP_CACHE")
    path = Path(root).expanduser() if root else Path(platformdirs.user_cache_dir("interp"))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir(create: bool = True) -> Path:
    """Dequantized embedded models, one HF directory per model."""
    path = cache_dir(create) / "models"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def default_store_path(create: bool = True) -> Path:
    """The SQLite results store used when the user names none (its folder created unless
    `create` is False)."""
    return cache_dir(create) / "results.sqlite"
