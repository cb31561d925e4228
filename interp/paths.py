"""Where the workbench keeps its files: the model cache and the results store.

Everything lives under one cache directory, `$INTERP_CACHE` if set, else the user's cache dir
(`~/.cache/interp` on Linux). Nothing here depends on the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """The workbench's cache root; created on first use."""
    root = os.environ.get("INTERP_CACHE")
    path = Path(root).expanduser() if root else Path(platformdirs.user_cache_dir("interp"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    """Dequantized embedded models, one HF directory per model."""
    path = cache_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_store_path() -> Path:
    """The SQLite results store used when the user names none."""
    return cache_dir() / "results.sqlite"
