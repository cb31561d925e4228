"""Fixtures for the kernels tests.

TRITON_INTERPRET must be set before triton compiles `kernels.triton_attention` (it is read when
the kernels are decorated), so it is set here, at collection, unless a GPU run asked otherwise.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402



@pytest.fixture(scope="session")
def smol_model(smollm2):
    """SmolLM2-135M-Instruct (Llama: 30 layers, 9 heads, 3 KV heads, d_head 64), fp32, CPU: the
    suite's one copy (tests/conftest.py), loaded once per session."""
    return smollm2


@pytest.fixture(scope="session")
def gemma_model(gemma):
    """Gemma-3-270M (sliding-window layers, query_pre_attn_scalar scaling), fp32, CPU."""
    return gemma


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run these small workloads on one intra-op thread. On a shared 2-core machine every
    parallel region of a small op can wait a scheduler slice for its second thread: a 24-token
    SmolLM2 forward took 7 s with 2 threads and 0.4 s with 1."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
