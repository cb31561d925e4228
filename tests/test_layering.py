"""The import rules of the design (../shared/DESIGN.md), checked on every module's source.

Front ends (the CLI `interp_cli`, the `dashboard`) sit on top: front ends -> circuits -> interp
-> kernels. So:
- `kernels` imports nothing of ours;
- `interp` imports neither `circuits` nor a front end;
- `circuits` imports no front end;
- nothing imports `dashboard` except the `interp dashboard` command and the tests, and the
  dashboard does not import the CLI;
- benchmarks and notebooks import no front end (they call the libraries, as a user's script
  would).

Imports are read with `ast` (nothing is imported or run), including imports inside functions
and `importlib.import_module("...")` / `__import__("...")` calls with a literal name.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = {"kernels", "interp", "circuits", "dashboard", "interp_cli", "benchmarks", "tests", "tools"}
FRONT_ENDS = {"dashboard", "interp_cli"}
# Where each group of modules lives, and the packages of ours it must not import.
FORBIDDEN: dict[str, set[str]] = {
    "kernels": OURS - {"kernels"},
    "interp": {"circuits"} | FRONT_ENDS | {"benchmarks", "tests", "tools"},
    "circuits": FRONT_ENDS | {"benchmarks", "tests", "tools"},
    "dashboard": {"interp_cli", "benchmarks", "tests", "tools"},
    "interp_cli": {"benchmarks", "tests", "tools"},
    "benchmarks": FRONT_ENDS | {"tests"},
    "notebooks": FRONT_ENDS | {"tests", "benchmarks"},
}
# The one module outside the tests allowed to import the dashboard: the command that serves it.
DASHBOARD_IMPORTERS = {"interp_cli.commands.dashboard"}
# Breaks known and being fixed elsewhere: (module, imported module) -> why it is still there.
# Each must still occur (test_known_exceptions_are_still_needed): delete the entry with the fix.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module `source` imports (absolute names; relative imports resolved against
    `module`), wherever the import statement is."""
    found = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module",
                                                                             "__import__")))):
            found.add(node.args[0].value)
    return found


def violations(group: str, module: str, source: str, is_package: bool = False) -> list[str]:
    """The rule breaks of one module of `group` ("interp", "notebooks", ...)."""
    out = []
    for name in sorted(imported_modules(source, module, is_package)):
        if (module, name) in KNOWN_EXCEPTIONS:
            continue
        top = name.split(".")[0]
        if top in FORBIDDEN.get(group, set()):
            out.append(f"{module} imports {name}: {group} must not import {top}")
        elif top == "dashboard" and group not in ("dashboard", "tests") \
                and module not in DASHBOARD_IMPORTERS:
            out.append(f"{module} imports {name}: only the `interp dashboard` command "
                       f"({', '.join(sorted(DASHBOARD_IMPORTERS))}) and tests import dashboard")
    return out


def notebook_source(path: Path) -> str:
    """The code cells of a notebook, IPython magics and shell lines left out."""
    cells = json.loads(path.read_text())["cells"]
    lines = []
    for cell in cells:
        if cell.get("cell_type") == "code":
            source = "".join(cell.get("source", []))
            lines += [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def sources():
    """(group, module name, source, is a package) of every Python module and notebook."""
    for group in ("kernels", "interp", "circuits", "dashboard", "interp_cli", "benchmarks"):
        for path in sorted((REPO / group).rglob("*.py")):
            yield group, module_name(path), path.read_text(), path.name == "__init__.py"
    for path in sorted((REPO / "notebooks").rglob("*.py")):
        yield "notebooks", module_name(path), path.read_text(), False
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        yield "notebooks", module_name(path), notebook_source(path), False


def test_every_module_follows_the_import_rules():
    checked, broken = 0, []
    for group, module, source, is_package in sources():
        broken += violations(group, module, source, is_package)
        checked += 1
    assert checked > 100  # the walk found the tree
    assert not broken, "import rules broken:\n" + "\n".join(broken)


@pytest.mark.parametrize("group, module, source", [
    ("kernels", "kernels.api", "import torch\nfrom interp.names import Head"),
    ("kernels", "kernels.hf", "def f():\n    from circuits.circuit import Circuit"),
    ("interp", "interp.store", "from circuits.plots import circuit_graph"),
    ("interp", "interp.heads.scan", "from ...dashboard import app"),
    ("interp", "interp.models", "import importlib\nimportlib.import_module('interp_cli.main')"),
    ("circuits", "circuits.ioi", "from interp_cli.commands.common import write_json"),
    ("circuits", "circuits.evaluate", "import dashboard.app"),
    ("interp_cli", "interp_cli.commands.scan", "from dashboard.data import model_ids"),
    ("dashboard", "dashboard.pages.heads", "from interp_cli.commands.common import print_table"),
    ("benchmarks", "benchmarks.scans", "from interp_cli.commands.scan import parse_params"),
    ("notebooks", "notebooks.src.02_head_scans", "from dashboard import figures"),
])
def test_a_violation_fails(group, module, source):
    assert violations(group, module, source)


@pytest.mark.parametrize("group, module, source", [
    ("kernels", "kernels.api", "import torch\nfrom kernels.edits import AttentionEdit\nfrom . import naive"),
    ("interp", "interp.store", "from interp.scores import HeadScores\nimport plotly"),
    ("circuits", "circuits.plots", "from interp.names import Head"),
    ("interp_cli", "interp_cli.commands.dashboard", "from dashboard.app import serve"),
    ("interp_cli", "interp_cli.commands.circuit", "from circuits.ioi import discover_ioi_circuit"),
    ("dashboard", "dashboard.pages.circuits", "from circuits.plots import circuit_graph"),
    ("benchmarks", "benchmarks.scans", "from interp.heads.scan import run_scan"),
])
def test_what_the_rules_allow_passes(group, module, source):
    assert violations(group, module, source) == []


def test_relative_imports_are_resolved():
    assert imported_modules("from ..store import Store", "interp.heads.scan") == {"interp.store"}
    assert imported_modules("from .base import Detector", "interp.heads", is_package=True) == \
        {"interp.heads.base"}


def test_known_exceptions_are_still_needed():
    imports = {module: imported_modules(source, module, is_package)
               for _, module, source, is_package in sources()}
    stale = [pair for pair in KNOWN_EXCEPTIONS if pair[1] not in imports.get(pair[0], set())]
    assert not stale, f"fixed, so delete from KNOWN_EXCEPTIONS: {stale}"


# Calls that run a model; only `interp/forward.py` makes them (the one forward seam).
MODEL_RUNS = re.compile(r"hf_model(\.model)?\(|hf_model\.generate\(|\.run_with_hooks\(|"
                        r"\.run_with_cache\(|\bbridge\(")


def test_only_interp_forward_runs_the_model():
    offenders = []
    for package in ("interp", "circuits", "dashboard", "interp_cli"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path == REPO / "interp" / "forward.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if MODEL_RUNS.search(code) and not code.lstrip().startswith(('"', "'", "`")):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "run the model through interp.forward instead:\n" + "\n".join(offenders)
