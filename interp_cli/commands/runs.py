"""List the runs in the results store (newest first). Incomplete runs (killed half-way) are shown
as such and never read as results. `--delete RUN_ID` deletes a run and the files it owns."""

from __future__ import annotations

import datetime
import json

from interp_cli.commands.common import add_store_argument, print_table

HELP = "list the runs in the results store"


def add_arguments(parser) -> None:
    add_store_argument(parser)
    parser.add_argument("--model-id", default=None, help="only runs of this model id")
    parser.add_argument("--kind", default=None, help="only runs of this kind (scan, patch, ...)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--delete", action="append", default=[], metavar="RUN_ID",
                        help="delete this run and its files (repeatable); the only option that "
                             "writes")


def run(args) -> int:
    from interp.errors import InvalidInput
    from interp.paths import default_store_path
    from interp.store import Store

    # Read-only: never create the store, its folder or the cache directory.
    path = args.store.expanduser() if args.store else default_store_path(create=False)
    if args.delete:
        if not path.exists():
            raise InvalidInput(f"no results store at {path}: nothing to delete")
        store = Store(path)
        for run_id in args.delete:
            removed = store.delete_run(run_id)
            print(f"deleted run {run_id}" + (f" and {', '.join(map(str, removed))}" if removed else ""))
        return 0
    if not path.exists():
        if args.store and not path.parent.is_dir():
            raise InvalidInput(f"--store {path}: the folder {path.parent} does not exist; check "
                               "the path (`interp runs` never creates a store)")
        runs = []
    else:
        runs = Store(path, read_only=True).list_runs(model_id=args.model_id, kind=args.kind)
    if args.json:
        print(json.dumps([r.to_json() for r in runs], indent=2))
        return 0
    if not runs:
        print(f"no runs in {path}" + ("" if path.exists() else " (no store there yet)"))
        return 0
    rows = [{
        "id": r.id, "kind": r.kind, "model": r.model_id, "status": r.status,
        "created": datetime.datetime.fromtimestamp(r.created_at).strftime("%Y-%m-%d %H:%M"),
        "detectors": ",".join(r.detectors), "error": (r.error or "")[:60],
    } for r in runs]
    print_table(rows, ["id", "kind", "model", "status", "created", "detectors", "error"])
    return 0
