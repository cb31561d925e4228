"""The safety-head pipeline, the one both the `safety` detector and `interp safety` run:

1-2. `interp.refusal.select_refusing`: refusal tokens calibrated on the model's own replies,
     harmful training prompts the model refuses, disjoint test splits;
3.   `detect`: Ships of every head (and Sahara's set) on the training prompts;
4.   `interp.heads.safety.check.causal_check`: refusal on the held-out prompts with the top
     heads ablated vs random heads.

    scores = safety_analysis(model)                    # the project's own prompt sets
    scores = safety_analysis(model, train=my_prompts, run_verify=False)   # scan given prompts
"""

from __future__ import annotations

import time


from interp.errors import InvalidInput
from interp.heads.base import no_progress
from interp.heads.safety.rankings import check_rank_by, ranking_scores
from interp.heads.safety.check import causal_check
from interp.heads.safety.sahara import sahara, sahara_shifts, top_entries
from interp.heads.safety.ships import ships_scan
from interp.models import Model
from interp.refusal import RefusalTokens, select_refusing
from interp.scores import HeadScores
from interp.tasks.base import PromptSet
from interp.tasks.safety import default_instructions, safety_prompt_set

DETECTOR = "safety"


def default_harmful_prompts(model: Model) -> PromptSet:
    return safety_prompt_set(model, default_instructions("harmful"), "harmful")


def detect(model: Model, prompts: PromptSet | None = None, method: str = "query_scale",
           eps: float = 1e-5, sahara_steps: int = 0, sahara_rank: int = 1,
           layers: list[int] | None = None, tokens: RefusalTokens | None = None,
           progress=None, sahara_candidates: int | None = None,
           rows_per_forward: int = 56, rank_by: str = "ships") -> HeadScores:
    """The `safety` detector: every head ablated alone on harmful chat prompts, ranked by
    `rank_by` (`interp.heads.safety.rankings`): "ships" (the paper's, dataset-level Ships) or
    "refusal_logodds" (the mean drop of the refusal log-odds; needs `tokens`). Both scores are
    kept in the details ("ships", and "refusal_logodds" when tokens are given).

    prompts: harmful prompts the model refuses (default: the project's own harmful set).
    sahara_steps: also run Sahara's greedy search for this many heads (0: only its first-step
        angles, which come free with the Ships scan).
    tokens: refusal/compliance tokens (`interp.refusal.calibrate_refusal_tokens`); with them the
        details also hold each ablation's refusal log-odds.
    """
    check_rank_by(rank_by)
    if rank_by == "refusal_logodds" and tokens is None:
        raise InvalidInput("rank_by='refusal_logodds' needs refusal tokens (tokens=...): "
                           "calibrate them with interp.refusal.calibrate_refusal_tokens, or "
                           "rank by 'ships'")
    prompts = default_harmful_prompts(model) if prompts is None else prompts
    scan = ships_scan(model, prompts, method, eps, layers, tokens=tokens,
                      rows_per_forward=rows_per_forward,
                      progress=None if progress is None else
                      (lambda f, m: progress(f / (1 + sahara_steps), m)))
    rankings = ranking_scores(scan)
    details = {**rankings, "ships_per_prompt": scan.kl,
               "sahara_angle": sahara_shifts(scan, scan.base_hidden, sahara_rank)}
    info = {"scan_seconds": round(scan.seconds, 1), "n_prompts": len(prompts),
            "shared_prefix_tokens": scan.shared_prefix_tokens,
            "sahara_first_step_top": top_entries(details["sahara_angle"], 5),
            "rank_by": rank_by,
            "top_by": {name: top_entries(score, 10) for name, score in rankings.items()}}
    if scan.z_mean is not None:
        details["z_mean"] = scan.z_mean
    if tokens is not None:
        details["refusal_logodds_ablated"] = scan.logodds
        details["refusal_logodds_base"] = scan.base_logodds
        info["refusal_tokens"] = tokens.to_json()
    if sahara_steps > 0:
        start = time.perf_counter()
        result = sahara(model, prompts, sahara_steps, method, eps, sahara_rank, layers,
                        first_scan=scan, candidates=sahara_candidates, progress=None if progress is None else
                        (lambda f, m: progress((1 + f * sahara_steps) / (1 + sahara_steps), m)))
        info["sahara"] = result.to_json()
        info["sahara_seconds"] = round(time.perf_counter() - start, 1)
    params = {"method": method, "eps": eps, "sahara_steps": sahara_steps,
              "sahara_rank": sahara_rank, "sahara_candidates": sahara_candidates,
              "layers": scan.layers, "rank_by": rank_by}
    return HeadScores(DETECTOR, rankings[rank_by], model.model_id, params, prompts.hash, details,
                      info)



def safety_analysis(model: Model, harmful: list[str] | None = None,
                    harmless: list[str] | None = None, harmful_test: list[str] | None = None,
                    harmless_test: list[str] | None = None, n_calibration: int = 8,
                    n_train: int = 16, n_test: int = 16, seed: int = 0,
                    method: str = "query_scale", eps: float = 1e-5, sahara_steps: int = 3,
                    sahara_candidates: int | None = None, ks=(1, 3, 5), n_random: int = 3,
                    max_new_tokens: int = 24, run_verify: bool = True, batch_size: int = 16,
                    layers: list[int] | None = None, n_pool: int | None = None,
                    progress=None, train: PromptSet | None = None,
                    rows_per_forward: int = 56, rank_by: str = "ships") -> HeadScores:
    """Ships + Sahara on harmful prompts the model refuses, then the causal check.

    1-2. `select_refusing`: refusal tokens from a calibration split, training prompts the model
    refuses. 3. `detect` on them (Ships, Sahara; `layers` restricts the scan), 4. `causal_check`
    on held-out harmful/harmless prompts (both refusal metrics, the top-k of Ships, of the
    refusal log-odds score and of Sahara's set vs `n_random` random k-head sets).
    harmful/harmless default to the project's own sets; *_test default to a split of them.
    rank_by: which score becomes `scores.scores` ("ships", the paper's, or "refusal_logodds";
        see `interp.heads.safety.rankings`); both are computed and checked either way.
    train: scan these prompts as they are instead of selecting refused ones; calibration (with
        the training instructions left out of the harmful set) then runs only for the check
        and for the refusal log-odds score.
    """
    check_rank_by(rank_by)
    harmful = default_instructions("harmful") if harmful is None else harmful
    harmless = default_instructions("harmless") if harmless is None else harmless
    report = progress or no_progress
    splits = None
    if train is None or run_verify or rank_by == "refusal_logodds":
        report(0.0, "calibrating refusal tokens on the model's own replies")
        given = set(training_instructions(train) or []) if train is not None else set()
        splits = select_refusing(model, [h for h in harmful if h not in given], harmless,
                                 harmful_test, harmless_test, n_calibration,
                                 n_train if train is None else 0, n_test, seed, max_new_tokens,
                                 batch_size, n_pool)
        train = splits.train if train is None else train
    scan_start = 0.0 if splits is None else 0.05
    scan_share = 0.6 if run_verify else 1.0
    scores = detect(model, train, method, eps, sahara_steps, 1, layers,
                    None if splits is None else splits.tokens,
                    progress=lambda f, m: report(scan_start + (scan_share - scan_start) * f, m),
                    sahara_candidates=sahara_candidates, rows_per_forward=rows_per_forward,
                    rank_by=rank_by)
    trained = training_instructions(train)
    if trained is not None:
        scores.info["train_instructions"] = trained
    if splits is not None:
        scores.info.update({"test_instructions": splits.harmful_test,
                            "n_calibration": n_calibration, "seed": seed})
        if splits.train is not None:
            scores.info["train_selection"] = splits.selection
    if run_verify:
        scores.verify = causal_check(
            model, scores, safety_prompt_set(model, splits.harmful_test, "harmful"),
            safety_prompt_set(model, splits.harmless_test, "harmless"), splits.tokens, ks,
            n_random, seed, method, eps, max_new_tokens, batch_size,
            progress=lambda f, m: report(scan_share + (1 - scan_share) * f, m))
        scores.verify.pop("_baseline")          # generated replies, not JSON
    return scores


def training_instructions(prompts: PromptSet) -> list[str] | None:
    """The instructions of chat prompts made by `safety_prompt_set` (None for other prompts)."""
    found = [m.get("instruction") for m in prompts.metadata]
    return found if found and all(isinstance(i, str) for i in found) else None
