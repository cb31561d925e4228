"""interp: an attention-interpretability workbench.

    import interp
    model = interp.load_model("smollm2-135m")        # embedded, offline
    batch = model.tokenize(["When Mary and John went to the store, John gave a drink to"])

The dashboard, the CLI and the notebooks all call the functions exported here.

`import interp` is cheap: the exports that need torch (`load_model`, `Model`, `TokenBatch`) are
imported on first use (a module `__getattr__`, PEP 562), so store-only work (`interp runs`,
`interp.store`) never pays for torch.
"""

from interp.errors import (
    ChecksumMismatch,
    InsufficientMemory,
    InterpError,
    InvalidInput,
    ModelPackageMissing,
    UnknownModel,
    UnsupportedArchitecture,
)
from interp.lazy import lazy_attributes

# Exported name -> the module that defines it, imported when the name is first read.
_LAZY = {"Model": "interp.models", "load_model": "interp.models", "TokenBatch": "interp.tokens"}

__all__ = [
    "ChecksumMismatch",
    "InsufficientMemory",
    "InterpError",
    "InvalidInput",
    "Model",
    "ModelPackageMissing",
    "TokenBatch",
    "UnknownModel",
    "UnsupportedArchitecture",
    "load_model",
]


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
