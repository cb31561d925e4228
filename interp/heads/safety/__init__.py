"""Safety heads: Ships and Sahara, with a causal check by refusal rate.

After Zhou et al. 2024, "On the Role of Attention Heads in Large Language Model Safety"
(arXiv:2410.13708), and their reference code, github.com/ydyjya/SafetyHeadAttribution.
Written here from those definitions; no code is copied. One job per module:

- `decoder`:  the decoder run layer by layer from any layer on, a shared prefix cached once;
- `ships`:    Ships, KL(p_base || p_ablated) of the next-token distribution, every head batched;
- `rankings`: the two scores from that scan: Ships (the paper's) and the refusal log-odds drop;
- `sahara`:   Sahara's greedy head set by the principal angle of the final representations;
- `check`:    the causal check: refusal with the top-k heads of each score and Sahara's set
              ablated vs random heads (several draws, 95% intervals, a verdict in words);
- `pipeline`: select refused prompts -> Ships/Sahara -> check, for the detector and `interp safety`;
- `detector`: the registry's `safety` detector and its refusal measurement for `verify`.

The head ablations are `interp.ablation.ABLATIONS` (the paper's: "query_scale"); refusal tokens,
both refusal metrics and the selection of refused prompts are `interp.refusal`.
"""

from interp.ablation import ABLATIONS
from interp.heads.safety.check import (causal_check, compliance_multiplier, continuation_nll,
                                       default_head_sets, mean_interval, wilson_interval)
from interp.heads.safety.detector import (SAFETY, SafetyDetector, SafetyParams, held_out_splits,
                                          refusal_measure, refusal_tokens_of)
from interp.heads.safety.pipeline import DETECTOR, detect, safety_analysis
from interp.heads.safety.rankings import RANKINGS, ranking_scores, refusal_logodds_drop, top_heads
from interp.heads.safety.sahara import SaharaResult, principal_angle, sahara, sahara_shifts
from interp.heads.safety.ships import ShipsScan, head_ablation, kl_divergence, ships_scan
from interp.refusal import RefusalSplits, first_token_refusal, rank_refused, select_refusing

__all__ = [
    "ABLATIONS", "DETECTOR", "RANKINGS", "default_head_sets", "mean_interval", "ranking_scores",
    "refusal_logodds_drop", "top_heads", "wilson_interval", "SAFETY", "RefusalSplits", "SafetyDetector", "SafetyParams",
    "SaharaResult", "ShipsScan", "causal_check", "compliance_multiplier", "continuation_nll",
    "detect", "first_token_refusal", "head_ablation", "held_out_splits", "kl_divergence",
    "principal_angle", "rank_refused", "refusal_measure", "refusal_tokens_of", "safety_analysis",
    "sahara", "sahara_shifts", "select_refusing", "ships_scan",
]
