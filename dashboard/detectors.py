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
    """The causal check's k from the form: empty or 0 = no check; bounds from the library."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0
    try:
        k = int(str(value).strip())
    except ValueError:
        raise InvalidInput(f"causal check k: {value!r} is not a whole number (0 = no check)") from None
    if k < 0:
        raise InvalidInput("causal check k must be >= 0 (0 = no check)")
    if k:
        from interp.heads.verify import check_verify_options

        check_verify_options(k)
    return k


def parse_verify_options(k, n_prompts=None, max_tokens=None, n_random=None,
                         ablation=None) -> dict:
    """The causal check's size from the form -> `run_scan`'s keyword arguments (empty fields:
    the library's defaults), checked by `interp.heads.verify.check_verify_options`."""
    from interp.heads.verify import check_verify_options

    def whole(name, value):
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        try:
            return int(str(value).strip())
        except ValueError:
            raise InvalidInput(f"causal check {name}: {value!r} is not a whole number") from None

    options = {"verify_k": parse_verify_k(k), "verify_prompts": whole("n_prompts", n_prompts),
               "verify_tokens": whole("max_tokens", max_tokens),
               "n_random": whole("n_random", n_random) or 5, "ablation": ablation or "mean"}
    if options["verify_k"]:
        check_verify_options(options["verify_k"], options["ablation"], options["n_random"],
                             options["verify_prompts"], options["verify_tokens"])
    return options


def scan_task(names: str | list[str], params: dict, verify_k: int = 0, **verify_options):
    """A background-job task: `interp.heads.scan.run_scan` of the detectors `names` with
    `params` ({name: params}; for one name, its params alone), each stored as it finishes, and
    the causal check when verify_k > 0: the call `interp scan ... --verify K` makes."""
    from interp.heads.scan import run_scan

    if isinstance(names, str):
        names, params = [names], {names: params}

    def task(model, store):
        return run_scan(model, list(names), params=params, verify_k=verify_k or None,
                        store=store, **verify_options)

    return task
