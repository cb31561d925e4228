"""Small SAEs on SmolLM2 shared by the SAE tests (trained once per session, a few seconds each)."""

from __future__ import annotations

import pytest


def tiny_sae(model, hook, head=None, tokens=2048, features=256, k=16):
    from circuits.sae.train import train_sae

    return train_sae(model, hook, head=head, features=features, k=k, tokens=tokens,
                     batch_size=256, context_size=64, held_out_windows=2, loss_windows=1,
                     show_progress=False)


@pytest.fixture(scope="session")
def resid_saes(smollm2):
    """TopK SAEs at two residual points of SmolLM2 (for feature circuits)."""
    return [tiny_sae(smollm2, "blocks.12.hook_resid_pre"), tiny_sae(smollm2, "blocks.20.hook_resid_pre")]
