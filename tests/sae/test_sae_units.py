"""SAE mechanics without a language model: the SAE, its trainer's constraints, the file layout,
the head-code counts and the curve areas."""

from __future__ import annotations

import json

import pytest
import torch

from circuits.sae.feature_circuits import curve_areas
from circuits.sae.head_codes import edge_scores, node_scores
from circuits.sae.io import CFG_FILENAME, WEIGHTS_FILENAME, load_sae, save_sae, saelens_cfg
from circuits.sae.sae import SAEConfig, SparseAutoencoder
from circuits.sae.train import FitConfig, fit
from interp.errors import InvalidInput


def sparse_data(n=2048, d=16, n_atoms=32, active=2, seed=0):
    """Vectors that are sums of `active` of `n_atoms` random unit directions."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(n_atoms, d, generator=g), dim=-1)
    codes = torch.zeros(n, n_atoms)
    idx = torch.stack([torch.randperm(n_atoms, generator=g)[:active] for _ in range(n)])
    codes.scatter_(1, idx, torch.rand(n, active, generator=g) + 0.5)
    return codes @ atoms


def batches(data, size=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    while True:
        yield data[torch.randint(data.shape[0], (size,), generator=g)]


def test_topk_keeps_k_and_standard_is_relu():
    topk = SparseAutoencoder(SAEConfig(d_in=16, d_sae=64, architecture="topk", k=4))
    x = torch.randn(10, 16)
    assert ((topk.encode(x) > 0).sum(-1) <= 4).all()
    relu = SparseAutoencoder(SAEConfig(d_in=16, d_sae=64, architecture="standard", k=None))
    pre = relu.pre_activations(x)
    assert torch.equal(relu.encode(x), pre.relu())


def test_config_rejects_bad_k():
    with pytest.raises(InvalidInput, match="k"):
        SAEConfig(d_in=8, d_sae=4, architecture="topk", k=5)
    with pytest.raises(InvalidInput, match="TopK"):
        SAEConfig(d_in=8, d_sae=4, architecture="standard", k=2)


@pytest.mark.parametrize("architecture,k", [("topk", 4), ("standard", None)])
def test_fit_lowers_error_and_keeps_decoder_rows_unit(architecture, k):
    data = sparse_data()
    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=64, architecture=architecture, k=k))
    with torch.no_grad():
        before = float((sae(data)[0] - data).pow(2).sum(-1).mean())
    history = fit(sae, batches(data, 128), 150, FitConfig(lr=3e-3, l1_coefficient=0.3))
    with torch.no_grad():
        after = float((sae(data)[0] - data).pow(2).sum(-1).mean())
    assert after < 0.3 * before
    assert history["mse"][-1] < history["mse"][0]
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(64), atol=1e-5)


def test_parallel_gradient_is_removed():
    sae = SparseAutoencoder(SAEConfig(d_in=8, d_sae=16, k=2))
    sae.W_dec.grad = torch.randn(16, 8)
    sae.remove_parallel_grad()
    assert torch.allclose((sae.W_dec.grad * sae.W_dec).sum(-1), torch.zeros(16), atol=1e-6)


def test_resampling_revives_dead_relu_features():
    data = sparse_data()
    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=64, architecture="standard", k=None))
    with torch.no_grad():
        sae.b_enc[:32] = -1e4  # half the features can never fire
    history = fit(sae, batches(data, 128), 20, FitConfig(lr=1e-3, l1_coefficient=0.3,
                                                         dead_after=256, resample_at=(0.5,)))
    assert history["resampled"] >= 32
    with torch.no_grad():
        fired = (sae.encode(data) > 0).any(0)
    assert fired[:32].float().mean() > 0.5


def test_topk_aux_loss_reaches_dead_features():
    """The AuxK term gives dead features a gradient; without it they get none."""
    from circuits.sae.train import _aux_loss

    sae = SparseAutoencoder(SAEConfig(d_in=8, d_sae=32, k=2))
    x = torch.randn(64, 8)
    pre = sae.pre_activations(x)
    dead = torch.zeros(32, dtype=torch.bool)
    dead[:16] = True
    loss = _aux_loss(sae, pre, x - sae(x)[0].detach(), dead)
    loss.backward()
    assert sae.W_dec.grad[:16].abs().sum() > 0
    assert sae.W_dec.grad[16:].abs().sum() == 0


def test_save_load_round_trip_is_exact_and_atomic(tmp_path):
    sae = SparseAutoencoder(SAEConfig(d_in=12, d_sae=40, k=5, hook_name="blocks.1.hook_resid_pre",
                                      model_name="m"))
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    folder = save_sae(sae, tmp_path / "sae", report={"l0": 5.0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]  # no temp folder left
    assert sorted(p.name for p in folder.iterdir()) == [CFG_FILENAME, WEIGHTS_FILENAME]
    cfg = json.loads((folder / CFG_FILENAME).read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 5 and cfg["d_sae"] == 40
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_pre"
    from safetensors.torch import load_file

    assert sorted(load_file(str(folder / WEIGHTS_FILENAME))) == ["W_dec", "W_enc", "b_dec", "b_enc"]
    loaded, report = load_sae(folder)
    x = torch.randn(7, 12)
    assert torch.equal(loaded.encode(x), sae.encode(x))
    assert report == {"l0": 5.0}
    with pytest.raises(InvalidInput, match="already exists"):
        save_sae(sae, folder)


def test_load_reads_a_flat_pre_6_saelens_config(tmp_path):
    sae = SparseAutoencoder(SAEConfig(d_in=6, d_sae=10, architecture="standard", k=None))
    folder = save_sae(sae, tmp_path / "new")
    flat = tmp_path / "old"
    flat.mkdir()
    (flat / WEIGHTS_FILENAME).write_bytes((folder / WEIGHTS_FILENAME).read_bytes())
    (flat / CFG_FILENAME).write_text(json.dumps({"d_in": 6, "d_sae": 10, "hook_point": "blocks.0.hook_resid_pre",
                                                 "hook_point_head_index": None}))
    loaded, _ = load_sae(flat)
    assert loaded.cfg.hook_name == "blocks.0.hook_resid_pre" and loaded.cfg.architecture == "standard"
    x = torch.randn(3, 6)
    assert torch.equal(loaded.encode(x), sae.encode(x))


def test_load_rejects_what_it_cannot_read(tmp_path):
    with pytest.raises(InvalidInput, match="not an SAE folder"):
        load_sae(tmp_path)
    sae = SparseAutoencoder(SAEConfig(d_in=6, d_sae=10, k=2))
    folder = save_sae(sae, tmp_path / "s")
    cfg = saelens_cfg(sae)
    cfg["architecture"] = "jumprelu"
    (folder / CFG_FILENAME).write_text(json.dumps(cfg))
    with pytest.raises(InvalidInput, match="jumprelu"):
        load_sae(folder)


def test_width_mismatch_is_a_clear_error():
    sae = SparseAutoencoder(SAEConfig(d_in=6, d_sae=10, k=2, hook_name="blocks.0.hook_resid_pre"))
    with pytest.raises(InvalidInput, match="width 64 but this SAE reads vectors of width 6"):
        sae.check_width(64, "blocks.3.attn.hook_z[1]")


def test_node_and_edge_scores_count_codes_only_on_positives():
    codes = torch.tensor([[1, 2, 5], [1, 3, 5], [1, 2, 6], [4, 2, 6]])  # rows 0-1 positive
    positive = torch.tensor([True, True, False, False])
    # head 0: {1} - {1, 4} = {}; head 1: {2, 3} - {2} = {3}; head 2: {5} - {6} = {5}
    assert node_scores(codes, positive).tolist() == [0.0, 1.0, 1.0]
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(-1, 5, (30, 6), generator=g)
    positive = torch.arange(30) < 15
    edges = edge_scores(codes, positive, n_codes=5, chunk=4)
    for i in range(6):
        for j in range(6):
            pos = {(a, b) for a, b in zip(codes[positive, i].tolist(), codes[positive, j].tolist())}
            neg = {(a, b) for a, b in zip(codes[~positive, i].tolist(), codes[~positive, j].tolist())}
            assert edges[i, j] == (0 if i == j else len(pos - neg))


def test_curve_areas():
    curve = [{"k_percent": 50, "faithfulness": 1.0}, {"k_percent": 100, "faithfulness": 1.0}]
    cpr, cmd = curve_areas(curve)
    assert cpr == pytest.approx(0.75) and cmd == pytest.approx(0.25)
