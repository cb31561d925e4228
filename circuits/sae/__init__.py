"""Sparse autoencoders: training (SAELens file layout) and SAE-based circuit discovery.

    from circuits.sae import train_sae, sae_heads, sae_features
    trained = train_sae(model, "blocks.6.hook_resid_pre", features=4096, k=32, tokens=100_000)
    trained.report                            # explained variance, L0, dead fraction, loss increase
    sae_heads(model, "ioi")                   # O'Neill & Bui head codes -> circuit JSON
    sae_features(model, [trained], "ioi")     # Marks et al. feature circuit -> circuit JSON

Modules: `sae` (the SAE), `points` (hooks it reads; every forward pass of the package),
`corpus`, `train`, `quality`, `io` (SAELens layout, the store), `head_codes`,
`feature_circuits`, `contexts` (top-activating contexts), `discover` (entry points).
"""

from circuits.sae.contexts import top_contexts
from circuits.sae.discover import rank_against, reference_heads, sae_features, sae_heads
from circuits.sae.feature_circuits import FeatureCircuit, discover_feature_circuit
from circuits.sae.head_codes import head_codes, ioi_negatives, task_examples
from circuits.sae.io import (
    latest_stored_saes, list_stored_saes, load_sae, load_stored_sae, save_sae, store_sae,
)
from circuits.sae.points import ActivationPoint, activation_point
from circuits.sae.sae import SAEConfig, SparseAutoencoder
from circuits.sae.train import FitConfig, TrainedSAE, train_sae

__all__ = [
    "ActivationPoint", "FeatureCircuit", "FitConfig", "SAEConfig", "SparseAutoencoder",
    "TrainedSAE", "activation_point", "discover_feature_circuit", "head_codes", "ioi_negatives",
    "latest_stored_saes", "list_stored_saes", "load_sae", "load_stored_sae", "rank_against", "reference_heads",
    "sae_features", "sae_heads", "save_sae", "store_sae", "task_examples", "top_contexts",
    "train_sae",
]
