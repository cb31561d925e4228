"""Build a notebook from a small Python script with `# %%` cell markers, then execute it.

    python tools/make_notebook.py notebooks/src/01_getting_started.py notebooks/01_getting_started.ipynb

Writing notebooks as scripts keeps them reviewable in diffs; the .ipynb committed beside is the
executed result (outputs included). `# %% [markdown]` starts a markdown cell whose lines are
comments.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def cells_from_script(text: str) -> list:
    cells, kind, lines = [], None, []

    def flush():
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(line.removeprefix("# ").removeprefix("#") for line in body.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(body))
        elif kind == "code" and body:
            cells.append(nbformat.v4.new_code_cell(body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        else:
            lines.append(line)
    flush()
    return cells


def main(source: str, target: str) -> None:
    notebook = nbformat.v4.new_notebook(cells=cells_from_script(Path(source).read_text()))
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(Path(target).parent)}}).execute()
    nbformat.write(notebook, target)


if __name__ == "__main__":
    main(*sys.argv[1:3])
