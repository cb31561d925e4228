"""The committed notebooks read well where people read them (GitHub, nbviewer): every interactive
Plotly figure carries a static PNG in the same output bundle, and no output is progress-bar noise.
`python tools/make_notebook.py SRC OUT` produces both; `--finish NB` fixes an executed notebook
without running it. Reads the .ipynb files only (no kernel), so it is fast."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def make_notebook():
    spec = importlib.util.spec_from_file_location("make_notebook", REPO / "tools" / "make_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_figures_have_images_and_no_progress_noise(path):
    tool = make_notebook()
    notebook = nbformat.read(path, as_version=4)
    figures = 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if tool.PLOTLY_MIME in data:
                figures += 1
                assert data.get("image/png"), f"{path.name}: a Plotly figure without its PNG"
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                text = output.get("text", "")
                assert tool.quiet_stderr(text) == text, f"{path.name}: progress noise {text[:120]!r}"


def test_quiet_stderr_keeps_warnings_and_drops_bars():
    tool = make_notebook()
    noise = ("/x/tqdm/auto.py:21: TqdmWarning: IProgress not found. Please update jupyter\n"
             "  from .autonotebook import tqdm as notebook_tqdm\n"
             "\rLoading weights:   0%|          | 0/272 [00:00<?, ?it/s]\n")
    assert tool.quiet_stderr(noise).strip() == ""
    warning = "/x/feature_circuits.py:217: UserWarning: Converting a tensor\n  total = float(x)\n"
    assert tool.quiet_stderr(warning) == warning
