"""Shared fixtures. Real models are loaded once per test session.

The suite runs offline: no model hub is reachable, and HF_HUB_OFFLINE makes any accidental
download fail fast instead of hanging.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# One intra-op thread per process (and per notebook kernel, which inherits the environment):
# the suite's forwards are small, and on a shared 2-core machine each parallel region of a
# small op can wait a scheduler slice for its second thread (a 24-token SmolLM2 forward took
# 7 s with 2 threads and 0.4 s with 1). The cores are used by running two test processes
# (pytest-xdist, `make test`).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SPLIT_BY_TEST = {"tests/test_notebooks.py"}
# Test files by wall time, longest first (measured with `--durations`; the order only matters
# for how evenly two processes finish).
LONGEST_FIRST = [
    "tests/test_notebooks.py",
    "tests/circuits/test_ioi_circuit.py",
    "tests/safety/test_causal.py",
    "tests/sae/test_head_codes.py",
    "tests/sae/test_feature_circuits.py",
    "tests/kernels/test_hf.py",
]

torch.set_grad_enabled(True)
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`--dist loadgroup`): the tests of one file run in one process, so
    that its module fixtures are computed once, except the notebooks, each its own group (each
    runs in its own kernel and they are the longest tests). The longest groups are queued first
    so that neither process idles at the end waiting on the other."""
    for item in items:
        path = item.nodeid.split("::")[0]
        group = item.nodeid if path in SPLIT_BY_TEST else path
        item.add_marker(pytest.mark.xdist_group(group))
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def _load(name: str):
    from interp.models import load_model

    return load_model(name, device="cpu", show_progress=False)


@pytest.fixture(scope="session")
def smollm2():
    """The embedded default, SmolLM2-135M-Instruct, fp32 on CPU."""
    return _load("smollm2-135m")


@pytest.fixture(scope="session")
def gemma():
    return _load("gemma-3-270m")


@pytest.fixture(scope="session")
def qwen():
    return _load("qwen2.5-coder-0.5b-instruct")


@pytest.fixture()
def tmp_store(tmp_path):
    from interp.store import Store

    return Store(tmp_path / "results.sqlite")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"test data not found at {SHARED_DATA} (the repo's ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm2):
    """A 2-layer random Llama with SmolLM2's tokenizer: for fast API tests only."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(vocab_size=len(smollm2.tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, architectures=["LlamaForCausalLM"])
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    smollm2.tokenizer.save_pretrained(path)
    return path
