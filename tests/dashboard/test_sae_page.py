"""The SAE page in headless Chromium: the stored SAE's quality figures, then its features'
activation densities and top contexts read off the corpus with the loaded model."""

from __future__ import annotations

import pytest
import torch
from selenium.webdriver.common.by import By

from tests.dashboard.test_browser import retype, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def stored_sae(smollm2, dashboard_store):
    """A small TopK SAE (random weights: the page, not the SAE, is under test) in the store."""
    from circuits.sae.io import store_sae
    from circuits.sae.sae import SAEConfig, SparseAutoencoder
    from circuits.sae.train import TrainedSAE

    cfg = SAEConfig(d_in=smollm2.d_model, d_sae=64, k=8, hook_name="blocks.2.hook_resid_pre",
                    model_name=smollm2.name, model_id=smollm2.model_id, context_size=64)
    sae = SparseAutoencoder(cfg)
    sae.reset_parameters(torch.Generator().manual_seed(0))
    report = {"explained_variance": 0.5, "l0": 8.0, "dead_fraction": 0.25, "loss_clean": 3.0,
              "loss_spliced": 3.5, "loss_increase": 0.5, "fraction_loss_recovered": 0.75}
    return store_sae(dashboard_store, TrainedSAE(sae=sae, report=report))


def test_sae_page_shows_quality_and_feature_contexts(dashboard, browser, screenshot, stored_sae):
    base, _ = dashboard
    browser.get(f"{base}/sae?run={stored_sae}")
    table = wait_for(browser, "#sae-table", stored_sae)
    assert "blocks.2.hook_resid_pre" in table.text and "25.0%" in table.text   # dead features
    retype(wait_for(browser, "#sae-features"), "64")
    browser.find_element(By.ID, "sae-run").click()
    assert "features [64] do not exist" in wait_for(browser, "#sae-error").text
    retype(wait_for(browser, "#sae-features"), "3, 5")
    browser.find_element(By.ID, "sae-run").click()
    contexts = wait_for(browser, "#sae-contexts", "feature 3", timeout=180)
    assert "feature 5" in contexts.text and "of positions" in contexts.text
    assert wait_for(browser, "#sae-density")
    screenshot(browser, "sae")
