"""Arguments and helpers several subcommands share."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from interp.embedded import DEFAULT_MODEL


def add_model_arguments(parser: argparse.ArgumentParser, positional: bool = True) -> None:
    if positional:
        parser.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                            help=f"embedded name, local HF directory, .gguf file or hub id "
                                 f"(default: {DEFAULT_MODEL})")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: GPU if any)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="weights dtype (default float32)")


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=None, type=Path,
                        help="results store path (default: $INTERP_CACHE/results.sqlite)")


def load_from_args(args):
    """The model the arguments name. A name that can never load fails at once, before the
    slow imports of the load itself."""
    from interp.model_paths import check_model_name

    check_model_name(args.model)
    from interp.models import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype)


def open_store(path: Path | None):
    """The results store at `path` (default: $INTERP_CACHE/results.sqlite), created if need be.
    Commands open it before loading a model, so a bad --store fails at once."""
    from interp.store import Store

    return Store(path)


def open_store_read_only(path: Path | None):
    """(path, store): the results store at `path` (default: $INTERP_CACHE/results.sqlite) opened
    read-only, or None when there is none yet: listing commands never create a store, its folder
    or the cache."""
    from interp.errors import InvalidInput
    from interp.paths import default_store_path
    from interp.store import Store

    given = path is not None
    path = path.expanduser() if given else default_store_path(create=False)
    if path.exists():
        return path, Store(path, read_only=True)
    if given and not path.parent.is_dir():
        raise InvalidInput(f"--store {path}: the folder {path.parent} does not exist; check the "
                           "path (listing commands never create a store)")
    return path, None


def check_json_path(path) -> None:
    """Refuse before the work starts a --json PATH that could not be written at its end."""
    from interp.errors import InvalidInput

    if path and str(path) != "-" and Path(path).expanduser().is_dir():
        raise InvalidInput(f"--json {path} is a folder; name the file to write the JSON to")


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically: a half-written file is never left at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def emit_json(path, data: dict) -> bool:
    """Honour --json PATH: '-' prints the JSON (and the caller prints nothing else: returns
    True), a path gets it written atomically; no --json does nothing."""
    if path is not None and str(path) == "-":
        print(json.dumps(data, indent=2))
        return True
    if path:
        write_json(path, data)
    return False


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))
