"""interp: an attention-interpretability workbench.

    import interp
    model = interp.load_model("smollm2-135m")        # embedded, offline
    batch = model.tokenize(["When Mary and John went to the store, John gave a drink to"])

The dashboard, the CLI and the notebooks all call the functions exported here.
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
from interp.models import Model, load_model
from interp.tokens import TokenBatch

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
