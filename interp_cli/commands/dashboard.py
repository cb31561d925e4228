"""Open the dashboard: explore heads in the browser, launch scans, see circuits, steer.

Serves on http://127.0.0.1:8050 (this machine only) unless --host/--port say otherwise. The
model (default: the embedded smollm2-135m) loads in the background; pages that read the
results store work at once.
"""

from __future__ import annotations

import sys

from interp.embedded import DEFAULT_MODEL
from interp_cli.commands.common import add_store_argument, open_store

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


def run(args) -> int:
    from interp.errors import InvalidInput
    from interp.model_paths import check_model_name

    if not 0 < args.port < 65536:
        raise InvalidInput(f"--port {args.port} is not a TCP port (1..65535)")
    # Refuse at once what can never work (the server would start only to show the error).
    check_model_name(args.model)
    open_store(args.store)
    from dashboard.app import serve

    if args.host not in LOCAL_HOSTS:
        print(f"warning: binding {args.host}: anyone who can reach this machine can use the "
              "dashboard (no login); the default 127.0.0.1 keeps it local", file=sys.stderr)
    print(f"interp dashboard: http://{args.host}:{args.port}  (model {args.model}; Ctrl-C stops)")
    serve(model_name=args.model, store_path=args.store, host=args.host, port=args.port)
    return 0
