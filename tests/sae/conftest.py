"""Small SAEs on SmolLM2 shared by the SAE tests (trained once per session, seconds each)."""

from __future__ import annotations

import pytest


def tiny_sae(model, hook, head=None, tokens=4096, features=256, k=16):
    """A TopK SAE from a few thousand tokens (32 steps at a higher learning rate than the
    default, which is set for 100k+ tokens)."""
    from circuits.sae.train import FitConfig, train_sae

    return train_sae(model, hook, head=head, features=features, k=k, tokens=tokens,
                     batch_size=128, context_size=64, held_out_windows=2, loss_windows=1,
                     fit_config=FitConfig(lr=4e-3), show_progress=False)


@pytest.fixture(scope="session")
def resid_saes(smollm2):
    """TopK SAEs at two residual points of SmolLM2 (for feature circuits)."""
    return [tiny_sae(smollm2, "blocks.12.hook_resid_pre"), tiny_sae(smollm2, "blocks.20.hook_resid_pre")]
