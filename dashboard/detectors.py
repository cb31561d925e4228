"""The head-detector registry (`interp.heads`) as the Scans page uses it.

Forms come from `Detector.describe_params()`, typed values are checked and converted by
`Detector.make_params()` (nothing typed is ever evaluated), and a scan is
`interp.heads.scan.run_scan(...)`, with the causal check when asked: the call `interp scan
... --verify K` makes.
"""

from __future__ import annotations

from interp.errors import InvalidInput

# interp.heads is imported where it is used: the server answers its first page (from the store)
# without waiting for the detectors' modules.


def names() -> list[str]:
    from interp.heads import detector_names

    return list(detector_names())


def describe(name: str) -> dict:
    """{"name", "description", "behaviour", "params": [{"name", "type", "default", "help",
    "choices"}]}; an unknown name is InvalidInput listing the valid ones."""
    from interp.heads import get_detector

    return get_detector(name).describe()


def parse_params(name: str, raw: dict) -> dict:
    """Form values -> the detector's full parameters as JSON (defaults filled in).

    Empty fields keep the default; unknown names and values of the wrong type are InvalidInput.
    """
    from interp.heads import get_detector
    from interp.heads.base import params_json

    given = {k: v for k, v in raw.items() if v is not None and not (isinstance(v, str) and not v.strip())}
    return params_json(get_detector(name).make_params(given))


def parse_verify_k(value) -> int:
    """The causal check's k from the form: empty or 0 = no check."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0
    try:
        k = int(str(value).strip())
    except ValueError:
        raise InvalidInput(f"causal check k: {value!r} is not a whole number (0 = no check)") from None
    if k < 0:
        raise InvalidInput("causal check k must be >= 0 (0 = no check)")
    return k


def scan_task(name: str, params: dict, verify_k: int = 0):
    """A background-job task: `interp.heads.scan.run_scan` of one detector (and its causal
    check when verify_k > 0) into the store, exactly as `interp scan` runs it."""
    from interp.heads.scan import run_scan

    def task(model, store):
        return run_scan(model, [name], params={name: params}, verify_k=verify_k or None,
                        store=store)

    return task
