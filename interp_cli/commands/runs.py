"""List the runs in the results store (newest first). Incomplete runs (killed half-way) are shown
as such and never read as results. `--delete RUN_ID` deletes a run and the files it owns."""

from __future__ import annotations

import datetime
import json

from interp_cli.commands.common import add_store_argument, open_store_read_only, print_table

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
    if args.delete:
        from interp.errors import InvalidInput
        from interp.store import Store

        path, existing = open_store_read_only(args.store)
        if existing is None:
            raise InvalidInput(f"no results store at {path}: nothing to delete")
        store = Store(path)  # deleting is the one writing use of this command
        for run_id in args.delete:
            removed = store.delete_run(run_id)
            print(f"deleted run {run_id}" + (f" and {', '.join(map(str, removed))}" if removed else ""))
        return 0
    path, store = open_store_read_only(args.store)
    runs = store.list_runs(model_id=args.model_id, kind=args.kind) if store else []
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
