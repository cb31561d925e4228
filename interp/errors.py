"""The workbench's errors. Each message names the problem and the fix.

All derive from `InterpError`, so the CLI can print them without a traceback; each also derives
from the builtin a caller would naturally catch (ValueError, LookupError, MemoryError, ...).
"""


class InterpError(Exception):
    """Base of every error the workbench raises on purpose."""


class UnknownModel(InterpError, LookupError):
    """A model name that is neither embedded, a local directory, a GGUF file nor (offline) cached."""


class ModelPackageMissing(InterpError, ModuleNotFoundError):
    """An embedded model's weight package is not installed."""


class ChecksumMismatch(InterpError, ValueError):
    """Assembled weights whose sha256 differs from the registry's."""


class UnsupportedArchitecture(InterpError, ValueError):
    """A model TransformerLens's TransformerBridge cannot wrap."""


class InsufficientMemory(InterpError, MemoryError):
    """Not enough free memory to hold the model's weights in the asked dtype."""


class InvalidInput(InterpError, ValueError):
    """Bad user input: prompts, parameters, names, paths."""
