"""Declarative attention edits: data, not callables, so a run can save exactly what it did.

An `AttentionEdit` is a tuple of parts, each naming the heads it touches as `(layer, head)` pairs:

- `HeadScale`        multiply a head's output by `scale` (0 ablates the head).
- `KeyBias`          add `bias` to the scores of keys inside (or outside) token spans: PASTA.
- `SinkCalibration`  ACT: scale the attention on sink keys by `beta`, give the removed mass back
                     to the other keys in proportion.

Kernels never see these objects. `AttentionEdit.layer_edit` turns the parts that hit one layer into
a `LayerEdit` of dense per-layer tensors, which every backend (naive, reference, Triton) consumes
the same way. Positions in spans and sink lists are key *slots*: column j of the key sequence as
the full-attention KV cache holds it (for a fresh forward, column j of `input_ids`, padding
included). `key_offset` maps a layer whose cache holds fewer slots (sliding windows) onto them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

HeadList = tuple[tuple[int, int], ...]
Span = tuple[int, int]


def _heads(heads) -> HeadList:
    """Normalize [[layer, head], ...] (e.g. from JSON) into a sorted tuple of int pairs."""
    out = []
    for pair in heads:
        layer, head = pair
        if int(layer) < 0 or int(head) < 0:
            raise ValueError(f"negative layer/head index in {pair!r}")
        out.append((int(layer), int(head)))
    return tuple(sorted(set(out)))


def _is_span(x) -> bool:
    return isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(v, int) for v in x)


def _spans(spans) -> tuple:
    """Normalize spans: either shared `((s, e), ...)` or per prompt `(((s, e), ...), ...)`.

    A shared tuple is recognised by its elements being int pairs. An empty tuple means no keys.
    """
    spans = tuple(spans)
    if all(_is_span(s) for s in spans):
        out = tuple((int(s), int(e)) for s, e in spans)
    else:
        out = tuple(tuple((int(s), int(e)) for s, e in prompt) for prompt in spans)
    flat = out if all(_is_span(x) for x in out) else [x for prompt in out for x in prompt]
    for s, e in flat:
        if s < 0 or e < s:
            raise ValueError(f"bad span ({s}, {e}): need 0 <= start <= end")
    return out


def _positions(positions) -> tuple:
    """Normalize sink positions: shared `(p, ...)` or per prompt `((p, ...), ...)`."""
    positions = tuple(positions)
    if all(isinstance(p, int) for p in positions):
        out = tuple(int(p) for p in positions)
        flat = out
    else:
        out = tuple(tuple(int(p) for p in prompt) for prompt in positions)
        flat = tuple(p for prompt in out for p in prompt)
    if any(p < 0 for p in flat):
        raise ValueError("sink positions must be >= 0")
    return out


def _per_prompt(value: tuple, leaf_check) -> bool:
    return len(value) > 0 and not all(leaf_check(v) for v in value)


def _slot_mask(per_prompt_groups: list, batch_size: int, n_keys: int, key_offset: int,
               device) -> torch.Tensor:
    """[B, Nk] bool: True at key slots listed in each prompt's group of (start, end) spans."""
    mask = torch.zeros(batch_size, n_keys, dtype=torch.bool)
    for b, spans in enumerate(per_prompt_groups):
        for start, end in spans:
            lo, hi = max(start - key_offset, 0), min(end - key_offset, n_keys)
            if hi > lo:
                mask[b, lo:hi] = True
    return mask.to(device)


def _broadcast_groups(value: tuple, per_prompt: bool, batch_size: int, what: str) -> list:
    if not per_prompt:
        return [value] * batch_size
    if len(value) != batch_size:
        raise ValueError(f"{what} given for {len(value)} prompts, batch has {batch_size}")
    return list(value)


@dataclass(frozen=True)
class HeadScale:
    """Multiply the output of each (layer, head) in `heads` by `scale`; 0 ablates the head."""

    heads: HeadList
    scale: float
    kind: ClassVar[str] = "head_scale"

    def __post_init__(self):
        object.__setattr__(self, "heads", _heads(self.heads))
        object.__setattr__(self, "scale", float(self.scale))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "heads": [list(h) for h in self.heads], "scale": self.scale}


@dataclass(frozen=True)
class KeyBias:
    """Add `bias` to the attention scores of keys in `spans` (or outside them) for `heads`.

    spans: half-open `(start, end)` key slots, either one tuple shared by every prompt of the
        batch, `((0, 3), (7, 9))`, or one tuple per prompt, `(((0, 3),), ((1, 4), (6, 8)))`.
    outside: bias the keys NOT in the spans instead (what PASTA does; see `pasta`).
    The bias is added after scaling and softcapping, before masking and softmax.
    """

    heads: HeadList
    spans: tuple
    bias: float
    outside: bool = False
    kind: ClassVar[str] = "key_bias"

    def __post_init__(self):
        object.__setattr__(self, "heads", _heads(self.heads))
        object.__setattr__(self, "spans", _spans(self.spans))
        object.__setattr__(self, "bias", float(self.bias))
        object.__setattr__(self, "outside", bool(self.outside))

    @property
    def per_prompt(self) -> bool:
        return _per_prompt(self.spans, _is_span)

    def key_mask(self, batch_size: int, n_keys: int, key_offset: int, device) -> torch.Tensor:
        """[B, Nk] bool: the keys this part biases."""
        groups = _broadcast_groups(self.spans, self.per_prompt, batch_size, "spans")
        inside = _slot_mask(groups, batch_size, n_keys, key_offset, device)
        return ~inside if self.outside else inside

    def to_dict(self) -> dict[str, Any]:
        spans = ([[list(s) for s in p] for p in self.spans] if self.per_prompt
                 else [list(s) for s in self.spans])
        return {"kind": self.kind, "heads": [list(h) for h in self.heads], "spans": spans,
                "bias": self.bias, "outside": self.outside}


def pasta(heads, highlight_spans, alpha: float) -> KeyBias:
    """PASTA highlighting as a `KeyBias`.

    Zhang et al., "Tell Your Model Where to Attend: Post-hoc Attention Steering for LLMs"
    (ICLR 2024, arXiv:2311.02262): on the steered heads, scale the attention of every token
    outside the highlighted spans by `alpha` (< 1) and renormalize. Scaling a softmax entry by
    alpha and renormalizing is adding log(alpha) to its score, so this is a bias of log(alpha)
    on the keys outside `highlight_spans`.
    """
    if not alpha > 0:
        raise ValueError("PASTA alpha must be > 0 (the paper uses 0.01)")
    return KeyBias(heads=heads, spans=highlight_spans, bias=math.log(alpha), outside=True)


@dataclass(frozen=True)
class SinkCalibration:
    """ACT calibration of attention sinks for `heads`.

    Yu et al., "Unveiling and Harnessing Hidden Attention Sinks: Training-Free Attention
    Calibration for Large Language Models" (ICML 2024, arXiv:2406.15765). In each query row
    with original sink mass s (the row's attention on the keys at `sink_positions`), the sink
    entries are multiplied by `beta` and the removed mass (1 - beta) * s is given back to the
    other keys in proportion to their attention: p'_sink = beta p, p'_other = p (1 - beta s)/(1 - s).
    Rows whose whole mass is on sinks (s = 1) have nowhere to move mass and stay unchanged.

    sink_positions: key slots, shared `(0,)` or per prompt `((0,), (3,))`.
    """

    heads: HeadList
    sink_positions: tuple
    beta: float
    kind: ClassVar[str] = "sink_calibration"

    def __post_init__(self):
        object.__setattr__(self, "heads", _heads(self.heads))
        object.__setattr__(self, "sink_positions", _positions(self.sink_positions))
        object.__setattr__(self, "beta", float(self.beta))
        if not 0.0 <= self.beta <= 1.0:
            # beta > 1 would ask for more than the whole row once beta * s > 1
            raise ValueError("ACT beta must be in [0, 1]")

    @property
    def per_prompt(self) -> bool:
        return _per_prompt(self.sink_positions, lambda p: isinstance(p, int))

    def sink_mask(self, batch_size: int, n_keys: int, key_offset: int, device) -> torch.Tensor:
        """[B, Nk] bool: the sink keys."""
        groups = _broadcast_groups(self.sink_positions, self.per_prompt, batch_size,
                                   "sink_positions")
        spans = [[(p, p + 1) for p in group] for group in groups]
        return _slot_mask(spans, batch_size, n_keys, key_offset, device)

    def to_dict(self) -> dict[str, Any]:
        pos = ([list(p) for p in self.sink_positions] if self.per_prompt
               else list(self.sink_positions))
        return {"kind": self.kind, "heads": [list(h) for h in self.heads],
                "sink_positions": pos, "beta": self.beta}


_PART_TYPES = {cls.kind: cls for cls in (HeadScale, KeyBias, SinkCalibration)}


@dataclass
class LayerEdit:
    """One layer's edits as dense tensors, what the kernels consume.

    key_bias:   [B, H, Nk] float32, added to the scores (None: no bias).
    head_scale: [H] float32, multiplies each head's output (None: all 1).
    sink_mask:  [B, Nk] bool, the ACT sink keys; act_beta: [H] float32, 1.0 = ACT off for that
                head. Both None, or both set.
    """

    key_bias: torch.Tensor | None = None
    head_scale: torch.Tensor | None = None
    sink_mask: torch.Tensor | None = None
    act_beta: torch.Tensor | None = None

    def __post_init__(self):
        if (self.sink_mask is None) != (self.act_beta is None):
            raise ValueError("sink_mask and act_beta go together")

    @property
    def changes_scores(self) -> bool:
        """True when the attention distribution itself changes (not just the head outputs)."""
        return self.key_bias is not None or self.sink_mask is not None

    def keys_slice(self, start: int, stop: int) -> "LayerEdit":
        """The same edit restricted to key slots [start, stop) (views, no copies)."""
        return LayerEdit(
            key_bias=None if self.key_bias is None else self.key_bias[..., start:stop],
            head_scale=self.head_scale,
            sink_mask=None if self.sink_mask is None else self.sink_mask[:, start:stop],
            act_beta=self.act_beta,
        )


@dataclass(frozen=True)
class AttentionEdit:
    """A combination of edit parts; the one object steering code, hooks and kernels share.

    Parts combine per head: head scales multiply, key biases add. Two `SinkCalibration`s may
    share a layer only if they name the same sink positions (the per-layer sink mask is shared
    by the layer's heads), and a head may be calibrated once.
    """

    parts: tuple = field(default=())

    def __post_init__(self):
        parts = tuple(self.parts)
        for p in parts:
            if not isinstance(p, (HeadScale, KeyBias, SinkCalibration)):
                raise TypeError(f"not an edit part: {p!r}")
        object.__setattr__(self, "parts", parts)

    def __add__(self, other: "AttentionEdit") -> "AttentionEdit":
        return AttentionEdit(self.parts + other.parts)

    @property
    def layers(self) -> frozenset[int]:
        return frozenset(layer for p in self.parts for layer, _ in p.heads)

    def to_dict(self) -> dict[str, Any]:
        return {"parts": [p.to_dict() for p in self.parts]}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "AttentionEdit":
        parts = []
        for pd in d.get("parts", ()):
            pd = dict(pd)
            cls = _PART_TYPES[pd.pop("kind")]
            parts.append(cls(**pd))
        return AttentionEdit(tuple(parts))

    def layer_edit(self, layer: int, batch_size: int, n_keys: int, n_heads: int,
                   device: torch.device | str = "cpu", key_offset: int = 0) -> LayerEdit | None:
        """Materialize the parts touching `layer` (None when none does).

        key_offset: slot of this layer's key 0 (nonzero for a sliding-window cache that dropped
        old keys). Returns tensors shaped for `attention(..., edit=)` with B=batch_size,
        H=n_heads, Nk=n_keys.
        """
        here = [(p, [h for (l, h) in p.heads if l == layer]) for p in self.parts]
        here = [(p, hs) for p, hs in here if hs]
        if not here:
            return None
        for _, hs in here:
            if max(hs) >= n_heads:
                raise ValueError(f"head {max(hs)} out of range for {n_heads} heads (layer {layer})")
        key_bias = head_scale = sink_mask = act_beta = None
        sink_source = None
        for part, hs in here:
            if isinstance(part, HeadScale):
                if head_scale is None:
                    head_scale = torch.ones(n_heads, dtype=torch.float32)
                head_scale[hs] *= part.scale
            elif isinstance(part, KeyBias):
                if key_bias is None:
                    key_bias = torch.zeros(batch_size, n_heads, n_keys, dtype=torch.float32,
                                           device=device)
                keys = part.key_mask(batch_size, n_keys, key_offset, device)  # [B, Nk]
                key_bias[:, hs] += keys[:, None, :].to(torch.float32) * part.bias
            else:
                if sink_source is None:
                    sink_source = part.sink_positions
                    sink_mask = part.sink_mask(batch_size, n_keys, key_offset, device)
                    act_beta = torch.ones(n_heads, dtype=torch.float32)
                elif part.sink_positions != sink_source:
                    raise ValueError(f"layer {layer}: SinkCalibrations with different sink "
                                     "positions cannot share a layer")
                if (act_beta[hs] != 1.0).any():
                    raise ValueError(f"layer {layer}: a head is calibrated twice")
                act_beta[hs] = part.beta
        return LayerEdit(
            key_bias=key_bias,
            head_scale=None if head_scale is None else head_scale.to(device),
            sink_mask=sink_mask,
            act_beta=None if act_beta is None else act_beta.to(device),
        )
