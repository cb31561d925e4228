"""Build a notebook from a small Python script with `# %%` cell markers, execute it, and make its
outputs readable where people read notebooks (GitHub, nbviewer).

    python tools/make_notebook.py notebooks/src/01_getting_started.py notebooks/01_getting_started.ipynb
    python tools/make_notebook.py --finish notebooks/04_act_calibration.ipynb   # no re-execution

Writing notebooks as scripts keeps them reviewable in diffs; the .ipynb committed beside is the
executed result (outputs included). `# %% [markdown]` starts a markdown cell whose lines are
comments.

After executing, `finish` does two things to the outputs:
- Every interactive Plotly figure (`application/vnd.plotly.v1+json`) gets a static PNG of itself
  in the same output bundle (what plotly's own "plotly_mimetype+png" renderer emits): Jupyter
  shows the interactive figure, GitHub and nbviewer, which do not run Plotly's JavaScript, show
  the image. The PNG is drawn by kaleido (pinned in pyproject.toml) with the system's Chromium,
  the one the browser tests use (`make browser`); one Chromium serves all figures of a notebook.
- Progress-bar noise goes: the kernel runs with TQDM_DISABLE=1 and HF_HUB_DISABLE_PROGRESS_BARS=1
  and without tqdm's "IProgress not found" warning, and any stderr output that is still a
  progress bar (carriage-return redraws, "it/s]") is dropped. Other warnings stay.
`--finish` applies this to an executed notebook without running it again.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import warnings
from pathlib import Path

import nbformat

PLOTLY_MIME = "application/vnd.plotly.v1+json"
# Environment of the kernel that executes the notebook: no progress bars, no tqdm widget warning.
QUIET_ENV = {
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "PYTHONWARNINGS": "ignore:IProgress not found",
}
# A stderr text that is a progress bar: tqdm redraws with "\r" and ends with a rate or "?it/s]".
PROGRESS = re.compile(r"\r|\d+%\|.*\||it/s\]|s/it\]")
DEFAULT_SIZE = (900, 500)  # a figure without its own width/height in its layout


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


def quiet_stderr(text: str) -> str:
    """A stderr text without its progress-bar lines and tqdm's widget warning (with the source
    line Python prints under a warning)."""
    kept, skip_source = [], False
    for line in text.split("\n"):
        if skip_source and line.startswith("  "):
            skip_source = False
            continue
        skip_source = "IProgress not found" in line
        if skip_source or PROGRESS.search(line):
            continue
        kept.append(line)
    return "\n".join(kept)


def figure_png(figure_json: dict) -> bytes:
    """The PNG of a Plotly figure given as its JSON (an output bundle's PLOTLY_MIME entry)."""
    import plotly.io as pio

    figure = pio.from_json(json.dumps({"data": figure_json.get("data", []),
                                       "layout": figure_json.get("layout", {})}))
    width = figure.layout.width or DEFAULT_SIZE[0]
    height = figure.layout.height or DEFAULT_SIZE[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "kopts ignored with a server": we pass none that matter
        return figure.to_image(format="png", width=width, height=height)


def finish(notebook) -> dict:
    """Add a PNG beside every Plotly figure and take progress bars out of stderr, in place.
    -> {"figures": PNGs added, "dropped": stderr outputs dropped}."""
    counts = {"figures": 0, "dropped": 0}
    server = _start_kaleido()
    try:
        for cell in notebook.cells:
            if cell.cell_type != "code":
                continue
            kept = []
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream" and output.get("name") == "stderr":
                    text = quiet_stderr(output.get("text", ""))
                    if not text.strip():
                        counts["dropped"] += 1
                        continue
                    output["text"] = text
                data = output.get("data", {})
                if PLOTLY_MIME in data and "image/png" not in data:
                    data["image/png"] = base64.b64encode(figure_png(data[PLOTLY_MIME])).decode()
                    counts["figures"] += 1
                kept.append(output)
            cell["outputs"] = kept
    finally:
        if server:
            import kaleido

            kaleido.stop_sync_server(silence_warnings=True)
    return counts


def _start_kaleido() -> bool:
    """One Chromium for all the figures of a notebook (each `to_image` would start its own)."""
    try:
        import kaleido

        kaleido.start_sync_server(silence_warnings=True)
        return True
    except Exception:  # an older kaleido, or one already running: to_image still works
        return False


def build(source: str, target: str) -> dict:
    """Execute the script `source` as a notebook, finish its outputs, write it to `target`."""
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook(cells=cells_from_script(Path(source).read_text()))
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    os.environ.update(QUIET_ENV)  # the kernel inherits this process's environment
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(Path(target).parent)}}).execute()
    counts = finish(notebook)
    nbformat.write(notebook, target)
    return counts


def main(argv: list[str]) -> None:
    if argv[:1] == ["--finish"]:
        for path in argv[1:]:
            notebook = nbformat.read(path, as_version=4)
            counts = finish(notebook)
            nbformat.write(notebook, path)
            print(f"{path}: {counts['figures']} figure images added, {counts['dropped']} "
                  "progress outputs dropped")
        return
    if len(argv) != 2:
        sys.exit(__doc__)
    counts = build(*argv)
    print(f"{argv[1]}: executed; {counts['figures']} figure images, {counts['dropped']} progress "
          "outputs dropped")


if __name__ == "__main__":
    main(sys.argv[1:])
