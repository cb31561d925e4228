"""The `safety` detector of the registry: Ships on harmful prompts the model refuses, its
refusal measurement for the generic causal check (`interp.heads.verify`), and its summary."""

from __future__ import annotations

from dataclasses import dataclass

from interp.ablation import ABLATIONS, ablate_heads
from interp.heads.base import Detector, Progress, Prompts, as_prompt_set, check_context, param, params_json
from interp.heads.behaviour import Behaviour
from interp.heads.safety.pipeline import DETECTOR, safety_analysis
from interp.heads.safety.rankings import RANKINGS
from interp.models import Model
from interp.refusal import RefusalSplits, RefusalTokens, first_token_refusal, select_refusing
from interp.scores import HeadScores
from interp.tasks.safety import default_instructions, safety_prompt_set


def held_out_splits(model: Model, scores: HeadScores, n_test: int, calibration: int = 8,
                    max_new_tokens: int = 24) -> RefusalSplits:
    """For a scan that stored no refusal tokens or test split (one on the caller's own
    prompts): `select_refusing` on the project's default sets, with the scan's own training
    instructions left out, no training prompts: refusal tokens from `calibration` prompts of
    each kind and `n_test` held-out harmful prompts, as the detector's default path draws them."""
    trained = set(scores.info.get("train_instructions") or [])
    harmful = [i for i in default_instructions("harmful") if i not in trained]
    return select_refusing(model, harmful, default_instructions("harmless"), n_calibration=calibration,
                           n_train=0, n_test=n_test, max_new_tokens=max_new_tokens)


def refusal_tokens_of(model: Model, scores: HeadScores, calibration: int = 8,
                      max_new_tokens: int = 24) -> RefusalTokens:
    """The refusal/compliance tokens a scan was scored with (stored by the detector's default
    path and by `safety_analysis`), or, for a scan on the caller's own prompts, calibrated now
    (`held_out_splits`)."""
    stored = scores.info.get("refusal_tokens")
    if stored:
        return RefusalTokens.from_json(stored)
    return held_out_splits(model, scores, 1, calibration, max_new_tokens).tokens


def refusal_measure(model: Model, scores: HeadScores, n_prompts: int, prompts=None,
                    calibration: int = 8):
    """(heads -> mean first-token refusal log-odds on held-out harmful prompts with those heads
    ablated the scan's way, the prompt count, the intervention in words). Held out: `prompts`
    if given, else the scan's own test split (`info["test_instructions"]`), else (a scan on the
    caller's prompts) the test split of `held_out_splits`. Tokens: the stored ones, else those
    `held_out_splits` calibrates."""
    stored = scores.info.get("refusal_tokens")
    test = scores.info.get("test_instructions")
    splits = None
    if not stored or (prompts is None and not test):
        splits = held_out_splits(model, scores, n_prompts, calibration)
    tokens = RefusalTokens.from_json(stored) if stored else splits.tokens
    if prompts is None:
        prompts = safety_prompt_set(model, (test or splits.harmful_test)[:n_prompts], "harmful")
    else:
        prompts = as_prompt_set(model, prompts, DETECTOR)
    method = scores.params.get("method", "query_scale")
    eps = float(scores.params.get("eps", 1e-5))
    z_mean = scores.details.get("z_mean")

    def measure(heads) -> float:
        with ablate_heads(model, heads, method, means=z_mean, eps=eps):
            logodds, _ = first_token_refusal(model, prompts, tokens)
        return float(logodds.mean())
    return measure, len(prompts), f"the scan's ablation ({method}, eps {eps:g})"


@dataclass(frozen=True)
class SafetyParams:
    n_prompts: int = param(16, "training prompts (default prompts only): the most confident refusals "
                           "among the project's harmful set, chosen by the model's own replies")
    method: str = param("query_scale", "head ablation: query*eps (paper), query:=mean over heads, "
                        "output zeroed or mean", choices=tuple(ABLATIONS))
    eps: float = param(1e-5, "query scale of the query_scale ablation (the paper's epsilon)")
    sahara_steps: int = param(0, "Sahara greedy steps (heads in the set); each is a full scan")
    sahara_candidates: int = param(0, "Sahara steps after the first consider only this many top "
                                   "first-step heads (0: all heads, as the reference)")
    layers: tuple[int, ...] = param((), "scan only these layers (empty: all)")
    rows_per_forward: int = param(56, "(prompt, head) rows per forward pass")
    rank_by: str = param("ships", "which score ranks the heads: 'ships' (KL of the next-token "
                         "distribution, the paper's) or 'refusal_logodds' (drop of the refusal "
                         "log-odds when ablated); both are stored", choices=tuple(RANKINGS))


class SafetyDetector(Detector):
    name = DETECTOR
    description = ("safety heads: Ships, KL of the next-token distribution when the head's query "
                   "is scaled by eps (Zhou et al. 2024), or the drop of the refusal log-odds "
                   "(rank_by), on harmful chat prompts")
    meaning = ("KL of the next-token distribution on harmful prompts when the head's query is "
               "scaled to ~0; high = ablating it changes refusal (Zhou et al. 2024, Ships / "
               "Sahara: On the Role of Attention Heads in LLM Safety)")
    Params = SafetyParams
    behaviour = "refusal rate on held-out harmful prompts with these heads ablated"
    check_sizes = (16, None)

    def scan(self, model: Model, prompts: Prompts = None, params: SafetyParams | None = None,
             progress: Progress | None = None) -> HeadScores:
        """Without prompts: the pipeline on the project's own sets (the paper's Ships is about
        the refusal decision: score on harmful prompts this model refuses, chosen by its own
        replies, as `interp safety` does; 8 held-out test prompts). With prompts: scored on them
        as they are. `rank_by` "refusal_logodds" needs refusal tokens, so it calibrates them on
        the project's own sets either way; "ships" (the paper's) is the default."""
        params = params if isinstance(params, SafetyParams) else self.make_params(params)
        train = None
        if prompts is not None:
            train = as_prompt_set(model, prompts, self.name)
            check_context(model, train)
        scores = safety_analysis(model, n_train=params.n_prompts, n_test=8, method=params.method,
                                 eps=params.eps, sahara_steps=params.sahara_steps,
                                 sahara_candidates=params.sahara_candidates or None,
                                 layers=list(params.layers) or None, run_verify=False,
                                 train=train, rows_per_forward=params.rows_per_forward,
                                 progress=progress, rank_by=params.rank_by)
        scores.params = params_json(params)
        return scores

    def causal_behaviour(self, model: Model, scores: HeadScores, ablation: str, n_prompts: int,
                         max_tokens: int | None, seed: int, prompts=None) -> Behaviour:
        """Mean first-token refusal log-odds on held-out harmful chat prompts, heads ablated the
        way the scan ablated them (`ablation` does not apply; see `refusal_measure`).
        `safety_analysis` adds the generation-based rate and random draws per k."""
        measure, n, intervention = refusal_measure(model, scores, n_prompts, prompts)
        # higher log-odds = more refusal, so "worse" (less refusal) is a drop, as for recall
        return Behaviour("refusal of held-out harmful prompts", "refusal_logodds", "top_k_hurts_more",
                         measure, n, intervention)

    def summary(self, scores: HeadScores) -> dict:
        """Top heads by the ranking score (and by every score the scan stored), Sahara's set,
        timings, the refusal tokens and, after `safety_analysis`'s check, the held-out baseline,
        the top-k vs random-k table per head set and its verdicts."""
        out = {"model_id": scores.model_id, "top_heads": scores.top(10),
               "rank_by": scores.info.get("rank_by", scores.params.get("rank_by", "ships")),
               "top_by": scores.info.get("top_by"),
               "sahara": scores.info.get("sahara"),
               "scan_seconds": scores.info.get("scan_seconds"),
               "sahara_seconds": scores.info.get("sahara_seconds"),
               "n_train": scores.info.get("n_prompts"),
               "refusal_tokens": scores.info.get("refusal_tokens")}
        verify = scores.verify or {}
        if "summary" in verify:                 # `causal_check`'s result
            out["baseline"] = verify["baseline"]["harmful"]
            out["causal_check"] = verify["summary"]
            out["verdicts"] = verify.get("verdicts", [])
            out["check_method"] = verify.get("method")
        elif verify:                            # the generic `interp.heads.verify`
            out["verify"] = verify
        return out


SAFETY = SafetyDetector()
