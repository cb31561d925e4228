"""The `interp` command line. Each subcommand is a module in `interp_cli/commands/` with
`HELP`, `add_arguments(parser)` and `run(args) -> int`; add one by listing it in COMMANDS.

Every subcommand calls the same library functions a notebook would; none holds analysis code.
Command modules import nothing slow at module level, and only the command being run adds its
arguments (some read option tables from libraries that import torch), so `interp runs` and
`interp models` answer without importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from interp.errors import InterpError

# Order is the order `interp --help` shows them in.
COMMANDS = ["models", "load", "runs", "scan", "steer", "dashboard", "safety", "patch", "circuit",
            "sae", "calibrate", "evaluate", "pasta"]

DESCRIPTION = """\
An attention-interpretability workbench.

Start here:
  interp models                 the embedded models (installed? converted?)
  interp load smollm2-135m      load one, print its facts and an IOI sanity check
  interp runs                   what is in the results store

Every command takes --help. Results go to the store ($INTERP_CACHE/results.sqlite,
or --store PATH) where the dashboard and notebooks read them.
"""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with `only` the arguments of that one command (the others are
    listed with their help but parse no options)."""
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
        if only is None or only == name:
            module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The subcommand argv names (the first word that is not an option), if it is one."""
    words = [word for word in argv if not word.startswith("-")]
    return words[0] if words and words[0] in COMMANDS else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=_command_in(argv) or "")
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
