"""What every head detector is: a name, a one-line description, typed parameters, a scan.

    detector = get_detector("induction")
    detector.describe_params()       # [{"name", "type", "default", "help", "choices"}, ...] -> a form
    params = detector.make_params({"n_prompts": 8})
    scores = detector.scan(model, params=params, progress=lambda f, msg: print(f, msg))

A scan returns `interp.scores.HeadScores` ([n_layers, n_heads], higher = more of the behaviour).
`prompts` may be given (a PromptSet, TokenBatch or list of texts); otherwise the detector builds
its default prompts from the parameters. `verify()` (interp.heads.verify) then checks causally
that the top heads matter for the behaviour the detector names (`causal_behaviour`), and
`summary(scores)` / `summary_lines(scores)` give the figures worth reading.

A new detector is its module (a `Detector` subclass: `scan`, and `causal_behaviour` with
`check_sizes` when it has a causal check) plus one line in `interp.heads.registry`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from typing import ClassVar

from interp.errors import InvalidInput
from interp.heads.behaviour import Behaviour
from interp.models import Model
from interp.scores import HeadScores
from interp.tasks.base import PromptSet
from interp.tokens import TokenBatch

Progress = Callable[[float, str], None]
Prompts = PromptSet | TokenBatch | list[str] | str | None


def param(default, help: str, choices: tuple | None = None, bounds: tuple | None = None):
    """A detector parameter: a dataclass field with help text, allowed values (`choices`) and,
    for numbers (and each item of a tuple of numbers), `bounds` (lo, hi), both included; a
    number without bounds of its own gets `BOUNDS[name]`."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices,
                                                        "bounds": bounds})


# Bounds of the numeric parameters every detector shares, by name (a field's own `bounds` wins).
# They keep a typo or a hostile form value (n_prompts=1e9, epsilon=-3, a scale of 1e308) from
# becoming a job that runs for days or a result that means nothing; the upper limits are far
# above what a CPU scan uses, and a model's context still bounds max_tokens at scan time.
BOUNDS: dict[str, tuple[float, float]] = {
    "n_prompts": (1, 4096),
    "max_tokens": (2, 131072),
    "batch_size": (1, 512),
    "seed": (0, 2**31 - 1),
    "epsilon": (0.0, 1.0),          # a share of attention mass
    "threshold": (0.0, 1.0),
    "later_threshold": (0.0, 1.0),
    "rouge_threshold": (0.0, 1.0),
    "min_queries": (1, 131072),
    "max_listed": (0, 100_000),
    "eps": (0.0, 1.0),              # safety's query scale
    "sahara_steps": (0, 64),
    "sahara_candidates": (0, 100_000),
    "layers": (0, 1023),
    "rows_per_forward": (1, 8192),
}
def score_meaning(detector: str) -> str:
    """The one-line meaning of `detector`'s score (`Detector.meaning`), or its description."""
    from interp.heads.registry import DETECTORS

    known = DETECTORS.get(detector)
    return (known.meaning or known.description) if known is not None else ""


# n_prompts x max_tokens at most: 2^20 tokens is about an hour of forwards for a 135M model on
# one CPU core, and building that many prompts takes seconds (a job that cannot be cancelled
# while it builds its prompts must not build for minutes).
MAX_SCAN_TOKENS = 2**20


def no_progress(fraction: float, message: str) -> None:
    return None


def sub_progress(progress: Progress | None, start: float, end: float) -> Progress:
    """A progress callback reporting into [start, end] of a parent callback."""
    if progress is None:
        return no_progress
    return lambda fraction, message: progress(start + (end - start) * min(max(fraction, 0.0), 1.0), message)


def as_prompt_set(model: Model, prompts: PromptSet | TokenBatch | list[str] | str, name: str) -> PromptSet:
    """Normalize user prompts; texts are tokenized the model's way (`Model.tokenize`)."""
    if isinstance(prompts, PromptSet):
        return prompts
    if isinstance(prompts, TokenBatch):
        texts = [model.tokenizer.decode(t) for t in prompts.token_lists()]
        return PromptSet(name=f"{name}:tokens", tokens=prompts, texts=texts,
                         metadata=[{} for _ in texts])
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not texts:
        raise InvalidInput("no prompts given: pass at least one text, or none for the defaults")
    return PromptSet(name=f"{name}:texts", tokens=model.tokenize(texts), texts=texts,
                     metadata=[{} for _ in texts])


def check_context(model: Model, prompts: PromptSet) -> None:
    longest = int(prompts.tokens.lengths.max())
    if longest > model.n_ctx:
        raise InvalidInput(f"a prompt has {longest} tokens, more than {model.name}'s context of "
                           f"{model.n_ctx}; shorten it (e.g. --max-tokens {model.n_ctx})")


class Detector:
    """Base class. Subclasses set `name`, `description`, `Params` (a dataclass of `param(...)`
    fields), `behaviour` (what `verify` measures, in words) and implement `scan`; those with a
    causal check set `check_sizes` and implement `causal_behaviour`; those with figures of
    their own beyond the top heads extend `summary` and `summary_lines`."""

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type]
    behaviour: ClassVar[str] = ""
    meaning: ClassVar[str] = ""
    """What one cell of the detector's heatmap means, in one line, with the paper it follows:
    the dashboard prints it under the heatmap, so a reader knows what a high number claims."""
    check_sizes: ClassVar[tuple[int, int | None] | None] = None
    """(n_prompts, max_tokens) of the causal check's default prompts (small: a check, not a
    benchmark); None when the detector has no causal check."""

    def scan(self, model: Model, prompts: Prompts = None, params=None,
             progress: Progress | None = None) -> HeadScores:
        raise NotImplementedError

    # ---- the causal check and the summary --------------------------------------------------
    def causal_behaviour(self, model: Model, scores: HeadScores, ablation: str, n_prompts: int,
                         max_tokens: int | None, seed: int, prompts=None) -> Behaviour:
        """What `verify` measures for this detector's heads: a `Behaviour` whose `measure(heads)`
        intervenes on `heads` (with `ablation`, "zero" or "mean", where the check ablates) and
        measures on `n_prompts` default prompts of `max_tokens` tokens, or on `prompts`."""
        raise InvalidInput(f"detector {self.name!r} defines no causal check")

    def summary(self, scores: HeadScores) -> dict:
        """The figures worth reading (JSON-able): the model, the top heads, the causal check;
        detectors add their own facts."""
        return {"detector": scores.detector, "model_id": scores.model_id,
                "top_heads": scores.top(10), "verify": scores.verify}

    def summary_lines(self, scores: HeadScores) -> list[str]:
        """The detector's own facts and the causal check's verdict as sentences (what `interp
        scan` prints under the top-heads table)."""
        v = scores.verify
        if not v or "top_k" not in v:
            return []
        ratio = "n/a" if v["ratio"] is None else f"{v['ratio']:.2f}"
        return [f"verify ({v['behaviour']}, {v['intervention']}): baseline {v['baseline']:.4f}, "
                f"top-{v['k']} {v['top_k']:.4f}, random-{v['k']} mean {v['random_k_mean']:.4f} "
                f"(draws {', '.join(f'{x:.4f}' for x in v['random_k'])}); effect ratio {ratio}; "
                f"claim {v['claim']} {'holds' if v.get('claim_holds') else 'does NOT hold'}"]

    # ---- parameters ----------------------------------------------------------------------
    def cli_overrides(self, n_prompts: int | None, max_tokens: int | None) -> dict:
        """Parameter values for the CLI's --prompts N / --max-tokens T (None: not given)."""
        names = {f.name for f in dataclasses.fields(self.Params)}
        out = {}
        if n_prompts is not None and "n_prompts" in names:
            out["n_prompts"] = n_prompts
        if max_tokens is not None and "max_tokens" in names:
            out["max_tokens"] = max_tokens
        return out

    def default_params(self):
        return self.Params()

    def make_params(self, values: dict | None = None):
        """Params from a dict (e.g. a form or CLI), unknown names and bad values rejected."""
        if values is None:
            return self.Params()
        if isinstance(values, self.Params):
            return values
        fields = {f.name: f for f in dataclasses.fields(self.Params)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise InvalidInput(f"detector {self.name!r} has no parameter(s) {unknown}; "
                               f"valid: {sorted(fields)}")
        hints = typing.get_type_hints(self.Params)
        converted = {}
        for key, value in values.items():
            converted[key] = _convert(self.name, key, value, hints[key])
            choices = fields[key].metadata.get("choices")
            if choices and converted[key] not in choices:
                raise InvalidInput(f"{self.name}.{key} must be one of {list(choices)}, got {value!r}")
            _check_bounds(self.name, key, converted[key], bounds_of(fields[key]))
        params = self.Params(**converted)
        n_prompts, max_tokens = getattr(params, "n_prompts", None), getattr(params, "max_tokens", None)
        if isinstance(n_prompts, int) and isinstance(max_tokens, int) \
                and n_prompts * max_tokens > MAX_SCAN_TOKENS:
            raise InvalidInput(f"{self.name}: n_prompts x max_tokens = {n_prompts} x {max_tokens}"
                               f" = {n_prompts * max_tokens} tokens, more than the bound of "
                               f"{MAX_SCAN_TOKENS} (about an hour on a CPU); use fewer prompts or "
                               "shorter ones")
        return params

    def describe_params(self) -> list[dict]:
        """The parameters as plain data, enough to build a form: name, type, default, help."""
        hints = typing.get_type_hints(self.Params)
        out = []
        for f in dataclasses.fields(self.Params):
            default = f.default
            out.append({"name": f.name, "type": _type_name(hints[f.name]),
                        "default": list(default) if isinstance(default, tuple) else default,
                        "help": f.metadata.get("help", ""),
                        "choices": list(f.metadata["choices"]) if f.metadata.get("choices") else None,
                        "bounds": list(bounds_of(f)) if bounds_of(f) else None})
        return out

    def describe(self) -> dict:
        return {"name": self.name, "description": self.description, "behaviour": self.behaviour,
                "params": self.describe_params()}

    def __repr__(self) -> str:
        return f"<detector {self.name}: {self.description}>"


def bounds_of(field: dataclasses.Field) -> tuple | None:
    """(lo, hi) of a parameter: its own `bounds`, else `BOUNDS[name]`, else None."""
    return field.metadata.get("bounds") or BOUNDS.get(field.name)


def _check_bounds(detector: str, key: str, value, bounds: tuple | None) -> None:
    """InvalidInput naming the bound when `value` (or an item of it) is outside [lo, hi] or not
    a finite number."""
    if isinstance(value, bool) or value is None:
        return
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if not isinstance(item, (int, float)):
            return
        if isinstance(item, float) and not math.isfinite(item):
            raise InvalidInput(f"{detector}.{key} must be a finite number, got {item!r}")
        if bounds is not None and not bounds[0] <= item <= bounds[1]:
            raise InvalidInput(f"{detector}.{key} must lie in [{bounds[0]}, {bounds[1]}], got "
                               f"{item!r}; give a value within that range (default: see "
                               f"`interp scan --list`)")


def params_json(params) -> dict:
    """A params dataclass as JSON-able data (tuples become lists)."""
    return json_ready(dataclasses.asdict(params))


def json_ready(value):
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def _type_name(hint) -> str:
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return f"list[{args[0].__name__}]" if args else "list"
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return " | ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", str(hint))


def _convert(detector: str, key: str, value, hint):
    """Coerce a form/CLI value to the field's type, or raise InvalidInput naming it."""
    origin = typing.get_origin(hint)
    try:
        if origin is tuple:
            item = [a for a in typing.get_args(hint) if a is not Ellipsis][0]
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            return tuple(item(v) for v in value)
        if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
            options = typing.get_args(hint)
            if value is None or (isinstance(value, str) and value.lower() in ("none", "")):
                if type(None) in options:
                    return None
            for option in options:
                if option is type(None):
                    continue
                try:
                    return _convert(detector, key, value, option)
                except InvalidInput:
                    continue
            raise ValueError(value)
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                value = float(value)  # "1e9" is a whole number too: let the bounds judge it
        if hint is int and isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise ValueError(value)
        return hint(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{detector}.{key}: {value!r} is not a valid {_type_name(hint)}") from None
