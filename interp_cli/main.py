"""The `interp` command line. Each subcommand is a module in `interp/commands/` with
`HELP`, `add_arguments(parser)` and `run(args) -> int`; add one by listing it in COMMANDS.

Every subcommand calls the same library functions a notebook would; none holds analysis code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from interp.errors import InterpError

# Order is the order `interp --help` shows them in.
COMMANDS = ["models", "load", "runs", "scan", "steer", "dashboard", "safety", "patch", "circuit"]

DESCRIPTION = """\
An attention-interpretability workbench.

Start here:
  interp models                 the embedded models (installed? converted?)
  interp load smollm2-135m      load one, print its facts and an IOI sanity check
  interp runs                   what is in the results store

Every command takes --help. Results go to the store ($INTERP_CACHE/results.sqlite,
or --store PATH) where the dashboard and notebooks read them.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interp", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"interp_cli.commands.{name}")
        command = sub.add_parser(
            name, help=module.HELP, description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.handler(args) or 0
    except InterpError as exc:  # expected, user-facing: the message names the fix
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
