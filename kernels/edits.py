"""Declarative attention edits: data, not callables, so a run can save exactly what it did.

An `AttentionEdit` is a tuple of parts, each naming the heads it touches as `(layer, head)` pairs:

- `HeadScale`        multiply a head's output by `scale` (0 ablates the head).
- `KeyBias`          add `bias` to the scores of keys inside (or outside) token spans: PASTA.
- `SinkCalibration`  ACT: scale the attention on sink keys by `beta`, give the removed mass back
                     to the other keys in proportion; the sinks are found per input and per head
                     in the forward (tau), or given as positions.

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
    with original sink mass s (the row's attention on the head's sink keys), the sink entries
    are multiplied by `beta` and the removed mass (1 - beta) * s is given back to the other keys
    in proportion to their attention: p'_sink = beta p, p'_other = p (1 - beta s)/(1 - s).
    Rows whose whole mass is on sinks (s = 1) have nowhere to move mass and stay unchanged.

    Two ways to say which keys are sinks:

    - `sink_positions=None` (the default, ACT as its authors run it): found per input and per
      head inside the forward, from that head's own attention in that layer: key j is a sink
      when its mean attention over the queries that see it exceeds `tau` (a fraction of
      attention mass; the released code uses 0.1), i.e. received_j / #{valid queries seeing j}
      > tau. With `exclude_first` the first sink (the lowest position; in practice the initial
      token) is left alone, as the released code drops `indices[0]`. Decoding with a KV cache:
      the sinks found at the prefill (per sequence, per head) stay calibrated for every new
      query row; new tokens are never sinks (see `kernels.hf`). A forward that starts with no
      cache finds them afresh.
    - `sink_positions`: fixed key slots, shared `(0,)` or per prompt `((0,), (3,))`; tau and
      exclude_first are then unused.

    rows: calibrate different heads on different batch rows, `rows[b]` = the heads of row b
        (e.g. one head per row, so one forward scores many single-head calibrations: the head
        search). `heads` is then their union. The batch must have len(rows) rows.
    """

    heads: HeadList = ()
    sink_positions: tuple | None = None
    beta: float = 0.4
    tau: float = 0.1
    exclude_first: bool = True
    rows: tuple | None = None
    kind: ClassVar[str] = "sink_calibration"

    def __post_init__(self):
        if self.rows is not None:
            rows = tuple(_heads(r) for r in self.rows)
            union = tuple(sorted({h for r in rows for h in r}))
            if self.heads and _heads(self.heads) != union:
                raise ValueError("with `rows`, `heads` is their union; give one or the other")
            object.__setattr__(self, "rows", rows)
            object.__setattr__(self, "heads", union)
        object.__setattr__(self, "heads", _heads(self.heads))
        if self.sink_positions is not None:
            object.__setattr__(self, "sink_positions", _positions(self.sink_positions))
        object.__setattr__(self, "beta", float(self.beta))
        object.__setattr__(self, "tau", float(self.tau))
        object.__setattr__(self, "exclude_first", bool(self.exclude_first))
        if not 0.0 <= self.beta <= 1.0:
            # beta > 1 would ask for more than the whole row once beta * s > 1
            raise ValueError("ACT beta must be in [0, 1]")
        if not 0.0 < self.tau < 1.0:
            raise ValueError("ACT tau is a fraction of attention mass: it must be in (0, 1) "
                             "(the paper uses 0.1)")

    @classmethod
    def per_row(cls, rows, beta: float = 0.4, tau: float = 0.1,
                exclude_first: bool = True) -> "SinkCalibration":
        """In-forward ACT with its own heads on each batch row: `rows[b]` is a (layer, head)
        pair, a sequence of pairs, or None/() for an uncalibrated row."""
        norm = []
        for r in rows:
            if r is None:
                norm.append(())
            elif len(r) == 2 and all(isinstance(x, int) for x in r):
                norm.append((tuple(r),))
            else:
                norm.append(tuple(r))
        return cls(beta=beta, tau=tau, exclude_first=exclude_first, rows=tuple(norm))

    @property
    def in_forward(self) -> bool:
        """True when the sinks are found inside the forward (no fixed positions)."""
        return self.sink_positions is None

    @property
    def per_prompt(self) -> bool:
        return self.sink_positions is not None and \
            _per_prompt(self.sink_positions, lambda p: isinstance(p, int))

    def sink_mask(self, batch_size: int, n_keys: int, key_offset: int, device) -> torch.Tensor:
        """[B, Nk] bool: the fixed sink keys (fixed-positions mode only)."""
        if self.sink_positions is None:
            raise ValueError("this SinkCalibration finds its sinks in the forward")
        groups = _broadcast_groups(self.sink_positions, self.per_prompt, batch_size,
                                   "sink_positions")
        spans = [[(p, p + 1) for p in group] for group in groups]
        return _slot_mask(spans, batch_size, n_keys, key_offset, device)

    def row_heads(self, batch_size: int, layer: int) -> list[list[int]]:
        """Per batch row, the heads of `layer` this part calibrates."""
        if self.rows is None:
            return [[h for l, h in self.heads if l == layer]] * batch_size
        if len(self.rows) != batch_size:
            raise ValueError(f"SinkCalibration rows given for {len(self.rows)} prompts, "
                             f"batch has {batch_size}")
        return [[h for l, h in row if l == layer] for row in self.rows]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "heads": [list(h) for h in self.heads]}
        if self.sink_positions is None:
            d.update(sink_positions=None, beta=self.beta, tau=self.tau,
                     exclude_first=self.exclude_first)
        else:
            d.update(sink_positions=([list(p) for p in self.sink_positions] if self.per_prompt
                                     else list(self.sink_positions)), beta=self.beta)
        if self.rows is not None:
            d["rows"] = [[list(h) for h in row] for row in self.rows]
        return d


_PART_TYPES = {cls.kind: cls for cls in (HeadScale, KeyBias, SinkCalibration)}


@dataclass
class LayerEdit:
    """One layer's edits as dense tensors, what the kernels consume.

    key_bias:   [B, H, Nk] float32, added to the scores (None: no bias).
    head_scale: [H] float32, multiplies each head's output (None: all 1).
    ACT (all None when off):
    act_beta:   [H] or [B, H] float32, the calibration factor per head (or per row and head);
                1.0 = ACT off there.
    sink_mask:  [B, Nk] bool (the sinks shared by the layer's heads) or [B, H, Nk] (per head);
                None with act_tau set: the sinks are found in the call.
    act_tau, act_exclude_first: the in-call sink rule (see `SinkCalibration`): key j is a sink
                of a head when its mean attention over the valid queries that see it exceeds
                act_tau; with act_exclude_first the lowest-position sink is left alone.
    """

    key_bias: torch.Tensor | None = None
    head_scale: torch.Tensor | None = None
    sink_mask: torch.Tensor | None = None
    act_beta: torch.Tensor | None = None
    act_tau: float | None = None
    act_exclude_first: bool = True

    def __post_init__(self):
        if (self.act_beta is None) != (self.sink_mask is None and self.act_tau is None):
            raise ValueError("act_beta goes with either a sink_mask or an act_tau")
        if self.sink_mask is not None and self.act_tau is not None:
            raise ValueError("give sink_mask (sinks known) or act_tau (find them), not both")
        if self.act_tau is not None and not 0.0 < self.act_tau < 1.0:
            raise ValueError("act_tau must be in (0, 1)")

    @property
    def changes_scores(self) -> bool:
        """True when the attention distribution itself changes (not just the head outputs)."""
        return self.key_bias is not None or self.act_beta is not None

    @property
    def finds_sinks(self) -> bool:
        """True when the call must find the ACT sinks itself (a statistics pass first)."""
        return self.act_beta is not None and self.sink_mask is None

    @property
    def shared_sinks(self) -> bool:
        """True when ACT is given as one sink set per prompt for the layer ([B, Nk] mask):
        the form the kernels take directly. Per-head sinks, and sinks to be found, go through
        `kernels.act` first."""
        return self.sink_mask is not None and self.sink_mask.dim() == 2

    def keys_slice(self, start: int, stop: int) -> "LayerEdit":
        """The same edit restricted to key slots [start, stop) (views, no copies)."""
        return LayerEdit(
            key_bias=None if self.key_bias is None else self.key_bias[..., start:stop],
            head_scale=self.head_scale,
            sink_mask=None if self.sink_mask is None else self.sink_mask[..., start:stop],
            act_beta=self.act_beta, act_tau=self.act_tau, act_exclude_first=self.act_exclude_first,
        )


@dataclass(frozen=True)
class AttentionEdit:
    """A combination of edit parts; the one object steering code, hooks and kernels share.

    Parts combine per head: head scales multiply, key biases add. A head may be calibrated
    once per batch row. `SinkCalibration`s sharing a layer must either all find their sinks in
    the forward (with one tau and exclude_first) or all name positions (a layer whose parts
    name different positions gets a per-head sink mask).
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
        key_bias = head_scale = None
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
        act = _layer_act([p for p, _ in here if isinstance(p, SinkCalibration)], layer,
                         batch_size, n_keys, n_heads, key_offset, device)
        return LayerEdit(
            key_bias=key_bias,
            head_scale=None if head_scale is None else head_scale.to(device),
            **act,
        )


def _layer_act(parts: list[SinkCalibration], layer: int, batch_size: int, n_keys: int,
               n_heads: int, key_offset: int, device) -> dict[str, Any]:
    """The ACT fields of one layer's `LayerEdit` from the `SinkCalibration`s that touch it."""
    if not parts:
        return {}
    modes = {(p.tau, p.exclude_first) if p.in_forward else "fixed" for p in parts}
    if len(modes) > 1:
        raise ValueError(f"layer {layer}: SinkCalibrations that find sinks in the forward and "
                         "ones with fixed positions (or different tau / exclude_first) cannot "
                         "share a layer")
    per_row = any(p.rows is not None for p in parts)
    beta = torch.ones(batch_size if per_row else 1, n_heads, dtype=torch.float32)
    owner = torch.full(beta.shape, -1)            # which part calibrates each (row, head)
    for i, part in enumerate(parts):
        for b, hs in enumerate(part.row_heads(beta.shape[0], layer)):
            if (owner[b, hs] >= 0).any():
                raise ValueError(f"layer {layer}: a head is calibrated twice")
            beta[b, hs] = part.beta
            owner[b, hs] = i
    act: dict[str, Any] = {"act_beta": (beta if per_row else beta[0]).to(device)}
    if modes != {"fixed"}:
        act["act_tau"], act["act_exclude_first"] = parts[0].tau, parts[0].exclude_first
    elif len({p.sink_positions for p in parts}) == 1:
        act["sink_mask"] = parts[0].sink_mask(batch_size, n_keys, key_offset, device)
    else:   # different positions on one layer: each head gets its own part's sinks
        masks = torch.stack([p.sink_mask(batch_size, n_keys, key_offset, device) for p in parts])
        owner = owner.to(device).expand(batch_size, n_heads)            # [B, H]
        picked = masks[owner.clamp_min(0), torch.arange(batch_size, device=device)[:, None]]
        act["sink_mask"] = picked & (owner >= 0)[..., None]             # [B, H, Nk]
    return act
