"""PatchResult: the one result type of activation, path and attribution patching.

A tensor of normalized effects with named axes, e.g. [layer, head] for a head sweep or
[layer, position] for the residual stream, plus what is needed to trust and redraw it: the
metric, its clean and corrupted values (0 = corrupted, 1 = clean), the method, the component,
the model id and the prompt-set hash. JSON-able and stored as a "patch" run:

    result = activation_patch(model, prompts, "heads")
    run_id = result.save(store)                          # kind "patch"
    PatchResult.load(store, run_id).values               # [n_layers, n_heads]

The run's `result` JSON is `to_json()` (values included, they are small); the tensors are also an
artifact named "patch" ({"values", "raw"}) for readers that want them as tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

ARTIFACT = "patch"


@dataclass
class PatchResult:
    """Normalized patching effects.

    values:        float32 tensor, one value per cell of `axes`; 0 = the corrupted run's metric,
                   1 = the clean run's (denoising: how much patching this cell restores;
                   noising and path patching: 1 = no effect, lower = the cell matters).
    axes:          axis names, e.g. ("layer", "head"), ("layer", "position").
    labels:        {axis: [label per index]} (layers and heads as ints, positions as names).
    metric:        the metric's name ("logit_diff", "prob", "kl", or a callable's name).
    clean, corrupted: the metric's mean on the clean and the corrupted run (the normalization).
    method:        "activation", "attribution" or "path".
    component:     what was patched ("heads", "q", "k", "v", "resid", "attn", "mlp", ...).
    direction:     "denoise" (clean into corrupted) or "noise" (corrupted into clean).
    raw:           the un-normalized mean metric per cell (same shape as values).
    params:        everything else needed to rerun it (n_prompts, positions, receivers, ...).
    seconds:       wall time of the computation.
    """

    values: torch.Tensor
    axes: tuple[str, ...]
    labels: dict[str, list]
    metric: str
    clean: float
    corrupted: float
    method: str
    component: str
    direction: str = "denoise"
    model_id: str = ""
    prompt_hash: str = ""
    raw: torch.Tensor | None = None
    params: dict = field(default_factory=dict)
    seconds: float = 0.0

    def __post_init__(self):
        self.values = torch.as_tensor(self.values, dtype=torch.float32).detach().cpu()
        self.axes = tuple(self.axes)
        if self.values.ndim != len(self.axes):
            raise ValueError(f"values has {self.values.ndim} dims but axes are {self.axes}")
        if self.raw is not None:
            self.raw = torch.as_tensor(self.raw, dtype=torch.float32).detach().cpu()

    @property
    def normalization(self) -> dict:
        return {"zero": "corrupted", "one": "clean", "clean": self.clean,
                "corrupted": self.corrupted,
                "formula": "(metric - corrupted) / (clean - corrupted)"}

    def top(self, k: int = 10, by_magnitude: bool = False) -> list[dict]:
        """The k cells with the largest values (or largest |value - baseline| if by_magnitude,
        baseline 1 for noising/path results, 0 otherwise), as {axis: label, ..., "value"}."""
        flat = self.values.flatten()
        baseline = 1.0 if self.direction == "noise" else 0.0
        key = (flat - baseline).abs() if by_magnitude else flat
        key = torch.nan_to_num(key, nan=-math.inf)
        k = min(k, flat.numel())
        out = []
        for index in torch.topk(key, k).indices.tolist():
            cell = {}
            for axis, coordinate in zip(self.axes, _unravel(index, self.values.shape)):
                cell[axis] = self.labels[axis][coordinate]
            cell["value"] = float(flat[index])
            out.append(cell)
        return out

    def to_json(self) -> dict:
        return {
            "type": "PatchResult",
            "values": _nan_to_none(self.values.tolist()),
            "raw": None if self.raw is None else _nan_to_none(self.raw.tolist()),
            "axes": list(self.axes),
            "labels": self.labels,
            "metric": self.metric,
            "normalization": self.normalization,
            "method": self.method,
            "component": self.component,
            "direction": self.direction,
            "model_id": self.model_id,
            "prompt_hash": self.prompt_hash,
            "params": self.params,
            "seconds": self.seconds,
            "top": self.top(10, by_magnitude=True),
        }

    @classmethod
    def from_json(cls, data: dict) -> "PatchResult":
        norm = data["normalization"]
        return cls(
            values=torch.tensor(_none_to_nan(data["values"]), dtype=torch.float32),
            axes=tuple(data["axes"]),
            labels={k: list(v) for k, v in data["labels"].items()},
            metric=data["metric"], clean=norm["clean"], corrupted=norm["corrupted"],
            method=data["method"], component=data["component"], direction=data["direction"],
            model_id=data.get("model_id", ""), prompt_hash=data.get("prompt_hash", ""),
            raw=None if data.get("raw") is None else torch.tensor(_none_to_nan(data["raw"])),
            params=data.get("params", {}), seconds=data.get("seconds", 0.0),
        )

    def save(self, store, params: dict | None = None) -> str:
        """Store as a completed "patch" run; returns the run id."""
        run_params = {"method": self.method, "component": self.component, "metric": self.metric,
                      "direction": self.direction, **self.params, **(params or {})}
        with store.run("patch", self.model_id, run_params, self.prompt_hash) as run:
            self.write_to(run)
        return run.id

    def write_to(self, run) -> None:
        """Attach to an open store run (result JSON + the "patch" artifact)."""
        tensors = {"values": self.values}
        if self.raw is not None:
            tensors["raw"] = self.raw
        run.add_artifact(ARTIFACT, tensors)
        run.set_result(self.to_json())

    @classmethod
    def load(cls, store, run_id: str) -> "PatchResult":
        from interp.errors import InvalidInput

        record = store.get_run(run_id)
        if record.kind != "patch" or record.result is None or record.status != "complete":
            raise InvalidInput(f"run {run_id!r} is not a complete patch run (kind {record.kind!r}, "
                               f"status {record.status!r})")
        return cls.from_json(record.result)


def sweep_result(raw: torch.Tensor, layers: list[int], unit_axis: str | None, n_units: int,
                 position_labels: list | None, **fields) -> PatchResult:
    """A PatchResult from a sweep's raw metric per cell, cells in (layer, unit, position) order:
    [layer] + [unit_axis] when the component has units + [position] when positions were named.
    `fields` are the rest of PatchResult's (metric, clean, corrupted, method, ...); values are
    `raw` normalized by clean and corrupted."""
    from interp.patching.metrics import normalize

    shape, axes, labels = [len(layers)], ["layer"], {"layer": layers}
    if unit_axis is not None:
        shape.append(n_units)
        axes.append(unit_axis)
        labels[unit_axis] = list(range(n_units))
    if position_labels is not None:
        shape.append(len(position_labels))
        axes.append("position")
        labels["position"] = position_labels
    raw = raw.reshape(shape)
    return PatchResult(values=normalize(raw, fields["clean"], fields["corrupted"]),
                       axes=tuple(axes), labels=labels, raw=raw, **fields)


def _unravel(index: int, shape) -> list[int]:
    coordinates = []
    for size in reversed(shape):
        coordinates.append(index % size)
        index //= size
    return coordinates[::-1]


def _nan_to_none(nested):
    if isinstance(nested, list):
        return [_nan_to_none(x) for x in nested]
    return None if isinstance(nested, float) and math.isnan(nested) else nested


def _none_to_nan(nested):
    if isinstance(nested, list):
        return [_none_to_nan(x) for x in nested]
    return float("nan") if nested is None else nested
