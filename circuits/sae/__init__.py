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

from interp.lazy import lazy_attributes

# name -> the module that defines it; imported on first use (PEP 562), so that importing
# one light module of the package (or checking an argument) does not import torch.
_LAZY = {
    "ActivationPoint": "circuits.sae.points",
    "FeatureCircuit": "circuits.sae.feature_circuits",
    "FitConfig": "circuits.sae.train",
    "SAEConfig": "circuits.sae.sae",
    "SparseAutoencoder": "circuits.sae.sae",
    "TrainedSAE": "circuits.sae.train",
    "activation_point": "circuits.sae.points",
    "discover_feature_circuit": "circuits.sae.feature_circuits",
    "head_codes": "circuits.sae.head_codes",
    "ioi_negatives": "circuits.sae.head_codes",
    "latest_stored_saes": "circuits.sae.io",
    "list_stored_saes": "circuits.sae.io",
    "load_sae": "circuits.sae.io",
    "load_stored_sae": "circuits.sae.io",
    "rank_against": "circuits.sae.discover",
    "reference_heads": "circuits.sae.discover",
    "sae_features": "circuits.sae.discover",
    "sae_heads": "circuits.sae.discover",
    "save_sae": "circuits.sae.io",
    "store_sae": "circuits.sae.io",
    "task_examples": "circuits.sae.head_codes",
    "top_contexts": "circuits.sae.contexts",
    "train_sae": "circuits.sae.train",
}

__all__ = [
    "ActivationPoint", "FeatureCircuit", "FitConfig", "SAEConfig", "SparseAutoencoder",
    "TrainedSAE", "activation_point", "discover_feature_circuit", "head_codes", "ioi_negatives",
    "latest_stored_saes", "list_stored_saes", "load_sae", "load_stored_sae", "rank_against", "reference_heads",
    "sae_features", "sae_heads", "save_sae", "store_sae", "task_examples", "top_contexts",
    "train_sae",
]


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
