"""The detector registry: name -> detector. The CLI, the dashboard and notebooks look detectors
up here, so a new detector becomes available everywhere by being listed in DETECTORS."""

from __future__ import annotations

from interp.errors import InvalidInput
from interp.heads.base import Detector
from interp.heads.induction import DUPLICATE_TOKEN, INDUCTION, PREVIOUS_TOKEN
from interp.heads.retrieval import RETRIEVAL
from interp.heads.safety import SAFETY
from interp.heads.sink import SINK
from interp.heads.streaming import STREAMING

DETECTORS: dict[str, Detector] = {
    d.name: d for d in (PREVIOUS_TOKEN, DUPLICATE_TOKEN, INDUCTION, SINK, RETRIEVAL, STREAMING, SAFETY)
}


def detector_names() -> list[str]:
    return list(DETECTORS)


def get_detector(name: str) -> Detector:
    """The detector called `name`; an unknown name is an error listing the valid ones."""
    try:
        return DETECTORS[name]
    except KeyError:
        raise InvalidInput(f"unknown detector {name!r}; valid detectors: {', '.join(DETECTORS)}") from None


def parse_detectors(spec: str | list[str]) -> list[Detector]:
    """'induction,sink' or ['induction', 'sink'] -> detectors, in the order given, no repeats."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if not names:
        raise InvalidInput(f"no detector named; valid detectors: {', '.join(DETECTORS)}")
    return [get_detector(n) for n in dict.fromkeys(names)]
