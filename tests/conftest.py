"""Shared fixtures. Real models are loaded once per test session.

The suite runs offline: no model hub is reachable, and HF_HUB_OFFLINE makes any accidental
download fail fast instead of hanging.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_grad_enabled(True)


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
