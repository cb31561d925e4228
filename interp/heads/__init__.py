"""Head detectors: which heads do X, for every head of a model, each with a causal check.

    from interp.heads import get_detector, verify
    scores = get_detector("induction").scan(model)        # HeadScores [n_layers, n_heads]
    scores.verify = verify(model, scores, k=5)             # top-k vs random-k ablation

Detectors: previous_token, duplicate_token, induction (TransformerLens head_detector, streamed),
sink (Gu et al.), retrieval (Wu et al.), streaming (DuoAttention split), safety (Zhou et al.,
Ships). See `registry.DETECTORS`.
"""

from interp.heads.base import Detector
from interp.heads.registry import DETECTORS, detector_names, get_detector, parse_detectors
from interp.heads.verify import verify

__all__ = ["DETECTORS", "Detector", "detector_names", "get_detector", "parse_detectors", "verify"]
