"""Package attributes imported on first use (PEP 562), so that importing a light module of a
package, or the package to check an argument, does not import torch.

    __getattr__, __dir__ = lazy_attributes(__name__, globals(), {"Model": "interp.models"})
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_attributes(package: str, namespace: dict, where: dict[str, str],
                    ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """(__getattr__, __dir__) for `package`: name -> the module `where[name]` that defines it."""

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(where[name]), name)
        namespace[name] = value  # later reads skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__
