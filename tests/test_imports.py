"""Every module of ours imports: a renamed or moved name breaks here in seconds, not at the
collection of a slow test module (or only in a front end no test reaches)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ["kernels", "interp", "circuits", "interp_cli", "dashboard", "benchmarks"]


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__main__":  # runs the program when imported
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join(parts))
    return names


@pytest.mark.parametrize("module", _modules())
def test_module_imports(module):
    importlib.import_module(module)
