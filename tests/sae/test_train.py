"""Training SAEs on SmolLM2's activations: the trainer learns, keeps its constraints, reports,
stores and loads, and refuses bad input before any slow work."""

from __future__ import annotations

import math

import pytest
import torch

from circuits.sae.io import latest_stored_saes, list_stored_saes, load_stored_sae, store_sae
from circuits.sae.points import activation_point, collect, read, write
from circuits.sae.quality import flat_vectors
from circuits.sae.train import train_sae
from interp.errors import InvalidInput
from tests.sae.conftest import tiny_sae

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(smollm2):
    return tiny_sae(smollm2, "blocks.3.hook_resid_pre", tokens=4096)


def test_trainer_lowers_reconstruction_error_and_keeps_decoder_norms(trained):
    mse = trained.history["mse"]
    assert sum(mse[-3:]) / 3 < 0.5 * sum(mse[:3]) / 3
    assert torch.allclose(trained.sae.W_dec.norm(dim=-1), torch.ones(trained.sae.d_sae), atol=1e-5)


def test_report_has_every_quality_figure(trained):
    r = trained.report
    assert 0.3 < r["explained_variance"] <= 1
    assert 0 < r["l0"] <= 16
    assert 0 <= r["dead_fraction"] < 1
    assert r["loss_clean"] < r["loss_spliced"] < r["loss_zero_ablated"]
    assert math.isclose(r["loss_increase"], r["loss_spliced"] - r["loss_clean"])
    assert 0 < r["fraction_loss_recovered"] < 1
    assert r["tokens_trained"] == 4096


def test_stored_sae_loads_with_identical_features(smollm2, trained, tmp_store):
    with pytest.raises(InvalidInput, match="no SAE of"):
        latest_stored_saes(tmp_store, smollm2.model_id)
    run_id = store_sae(tmp_store, trained)
    assert trained.path.parent.name == "saes" and trained.path.name == run_id
    loaded, report = load_stored_sae(tmp_store, run_id)
    assert report["explained_variance"] == trained.report["explained_variance"]
    point = activation_point(smollm2, "blocks.3.hook_resid_pre")
    x = flat_vectors(collect(smollm2, torch.randint(200, 5000, (2, 32)), [point])[point], True)
    assert torch.equal(loaded.encode(x), trained.sae.encode(x))
    [listed] = list_stored_saes(tmp_store, smollm2.model_id)
    assert listed["run_id"] == run_id and listed["hook"] == "blocks.3.hook_resid_pre"
    [latest] = latest_stored_saes(tmp_store, smollm2.model_id)
    assert torch.equal(latest.W_enc, trained.sae.W_enc)


def test_head_output_point_reads_and_writes_what_the_head_writes(smollm2):
    point = activation_point(smollm2, "blocks.5.attn.hook_result", head=2)
    assert point.d_in == smollm2.d_model and point.bridge_hook == "blocks.5.attn.hook_z"
    z = torch.randn(1, 4, smollm2.n_heads, smollm2.d_head)
    out = read(smollm2, point, z)
    assert torch.allclose(out, z[:, :, 2] @ smollm2.bridge.blocks[5].attn.W_O[2], atol=1e-5)
    assert torch.allclose(write(smollm2, point, z, out, out), z, atol=1e-5)
    edit = torch.randn_like(out)
    z_new = write(smollm2, point, z, out, out + edit)
    assert torch.equal(z_new[:, :, [0, 1, 3]], z[:, :, [0, 1, 3]])  # other heads untouched
    # The head's new output is the edit's projection onto what the head can write.
    change = read(smollm2, point, z_new) - out
    assert torch.allclose(read(smollm2, point, write(smollm2, point, z, out, out + change)) - out,
                          change, atol=1e-4)


def test_per_head_sae_trains_on_every_heads_output(smollm2):
    trained = tiny_sae(smollm2, "blocks.4.attn.hook_result", tokens=2048, features=128, k=8)
    report = trained.report
    # Every head's output is one example: 9 vectors per token position.
    assert trained.point.per_head and report["n_vectors"] == 2 * 63 * smollm2.n_heads
    assert report["explained_variance"] > 0
    # The splice reaches the model (on one held-out window it may move the loss either way).
    assert abs(report["loss_spliced"] - report["loss_clean"]) > 1e-4
    assert report["loss_zero_ablated"] != report["loss_clean"]


def test_bad_input_is_refused_before_slow_work(smollm2):
    with pytest.raises(InvalidInput, match="unknown hook name"):
        train_sae(smollm2, "blocks.99.hook_resid_pre")
    with pytest.raises(InvalidInput, match="not a hook an SAE can read"):
        train_sae(smollm2, "blocks.3.attn.hook_pattern")
    with pytest.raises(InvalidInput, match="head index applies"):
        train_sae(smollm2, "blocks.3.hook_resid_pre", head=1)
    with pytest.raises(InvalidInput, match="fewer than one training batch"):
        train_sae(smollm2, "blocks.3.hook_resid_pre", tokens=100, batch_size=256)
    with pytest.raises(InvalidInput, match="k must be"):
        train_sae(smollm2, "blocks.3.hook_resid_pre", features=64, k=65)
    with pytest.raises(InvalidInput, match="does not exist"):
        train_sae(smollm2, "blocks.3.hook_resid_pre", corpus="/no/such/corpus.txt")


def test_sae_on_a_hook_of_another_width_is_refused(smollm2, trained):
    from circuits.sae.feature_circuits import attach

    with pytest.raises(InvalidInput, match="width 64 but this SAE reads vectors of width 576"):
        attach(smollm2, [("blocks.3.attn.hook_z", 1, trained.sae)])
