"""Open the dashboard: explore heads in the browser, launch scans, see circuits, steer.

Serves on http://127.0.0.1:8050 (this machine only) unless --host/--port say otherwise. The
model (default: the embedded smollm2-135m) loads in the background; pages that read the
results store work at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

from interp_cli.commands.common import add_store_argument
from interp.embedded import DEFAULT_MODEL, EMBEDDED_MODELS

HELP = "open the dashboard in the browser (http://127.0.0.1:8050)"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"model to load at start: embedded name, local HF directory, .gguf "
                             f"file or cached hub id (default: {DEFAULT_MODEL})")
    add_store_argument(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1: this machine only; 0.0.0.0 "
                             "exposes the dashboard, which has no login, to the network)")
    parser.add_argument("--port", default=8050, type=int, help="port (default 8050)")


def check_model_argument(model: str) -> None:
    """Refuse at once what can never load (the server would start only to show the error)."""
    from interp.errors import InvalidInput

    if model in EMBEDDED_MODELS:
        return
    if Path(model).expanduser().exists() or model.startswith((".", "/", "~")):
        from dashboard.pages.model import check_model_path

        check_model_path(model)
        return
    if model.count("/") != 1:  # not an embedded name, not a path, not an "org/name" hub id
        raise InvalidInput(f"unknown model {model!r}: use an embedded model "
                           f"({', '.join(EMBEDDED_MODELS)}), a local model directory or .gguf "
                           "file, or a cached hub id written as org/name")


def run(args) -> int:
    from interp.errors import InvalidInput

    if not 0 < args.port < 65536:
        raise InvalidInput(f"--port {args.port} is not a TCP port (1..65535)")
    check_model_argument(args.model)
    from dashboard.app import serve

    if args.host not in LOCAL_HOSTS:
        print(f"warning: binding {args.host}: anyone who can reach this machine can use the "
              "dashboard (no login); the default 127.0.0.1 keeps it local", file=sys.stderr)
    print(f"interp dashboard: http://{args.host}:{args.port}  (model {args.model}; Ctrl-C stops)")
    serve(model_name=args.model, store_path=args.store, host=args.host, port=args.port)
    return 0
