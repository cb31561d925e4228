"""ACT's calibration step: find the heads whose sink calibration helps a task, keep a `Calibration`.

Yu et al. (ICML 2024), released code GATECH-EIC/ACT (`scripts/calibration.sh` calibrates one head
at a time on a calibration set and logs its accuracy; the heads that beat the uncalibrated model
are the ones calibrated at evaluation). Here:

1. Calibration set (drawn from the TRAIN split, seeded): one uncalibrated forward gives each
   prompt's label log-probs, the residual entering every layer, and each head's hidden sinks
   (ACT's rule, tau, first sink excluded).
2. Screening every head at once, to first order (attribution patching, Nanda 2023; AtP,
   Kramar et al. 2024): one forward and backward per prompt gives d margin / d pattern of every
   head; the ACT change of the pattern (sinks scaled by beta, mass given back in proportion) is
   computed from that pattern by the same rule, and their product estimates each head's margin
   gain. On SmolLM2 about 60% of (prompt, head) pairs have a hidden sink, so running every head
   exactly costs ~160 forwards per prompt: the screen keeps the `screen` most promising heads.
3. Each kept head alone, exactly. A head with no hidden sink on a prompt leaves that forward
   unchanged (its calibration is the identity), so only (prompt, head) pairs where the head has
   a sink run, and they run from the head's own layer (the residual entering it is the
   uncalibrated one): one batch row per pair, a different head per row
   (`SinkCalibration.per_row`). A head helps when it raises accuracy on the calibration set
   (ties: when it raises the mean margin of the gold label over the others); helpful heads are
   ranked by that gain (ACT keeps the heads that beat the uncalibrated model).
4. Greedy on a separate DEV split: add the ranked heads one at a time, keep a head when the dev
   accuracy (ties: margin) of the set improves, stop after `patience` heads in a row that do not.

    calibration = search_heads(model, task, train, dev, shots=4)
    calibration.save("cal.json"); Calibration.load("cal.json").edit(model)

`screen=None` runs step 3 on every head that has a hidden sink (exact, slow).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from interp.errors import InvalidInput
from interp.steering.head_set import SavedHeadSet
from interp.steering.resume import residual_recorders, run_from_layer
from interp.names import check_heads
from interp.tasks.icl import (Example, ICLTask, build_prompts, check_labels, label_token_ids,
                              margins, sample, tokenize_prompts)
from interp.tokens import TokenBatch
from kernels import AttentionEdit, AttentionStatsRequest, SinkCalibration, queries_seeing, sink_rule

TAU, BETA = 0.1, 0.4
Progress = Callable[[float, str], None]


@dataclass
class Calibration(SavedHeadSet):
    """A searched ACT calibration: apply it to any prompt or task of the same model.

    heads: the calibrated heads [(layer, head), ...] (may be empty: no head helped).
    data: what it was searched on (task, files, sizes, shots, seed).
    dev_accuracy / baseline_dev_accuracy: the dev split's accuracy with and without it.
    head_gains: [[layer, head, accuracy gain, margin gain(, first-order estimate)], ...] of
        every head tried alone on the calibration set, best first.
    """

    KIND = "act_calibration"
    WHAT = "an ACT calibration"
    MADE_BY = "interp calibrate --save CAL.json"

    model_id: str
    heads: list[tuple[int, int]]
    tau: float = TAU
    beta: float = BETA
    data: dict = field(default_factory=dict)
    dev_accuracy: float | None = None
    baseline_dev_accuracy: float | None = None
    head_gains: list = field(default_factory=list)
    search_seconds: float | None = None

    def edit(self, model=None) -> AttentionEdit | None:
        """The ACT edit (None when no head was kept). With `model`, check it is the model the
        calibration was searched on and that the heads exist."""
        if model is not None:
            if model.model_id.split("@")[0] != self.model_id.split("@")[0]:
                raise InvalidInput(f"this calibration was searched on {self.model_id}, not "
                                   f"{model.model_id}: search one for this model "
                                   "(`interp calibrate`)")
            check_heads(model, self.heads, allow_empty=True)
        if not self.heads:
            return None
        return AttentionEdit((SinkCalibration(heads=tuple(map(tuple, self.heads)), beta=self.beta,
                                              tau=self.tau, exclude_first=True),))

    def save_to_store(self, store) -> str:
        """Record it as a complete `calibration` run of the results store; returns the run id."""
        with store.run("calibration", self.model_id, {"tau": self.tau, "beta": self.beta,
                                                      **self.data}) as run:
            run.set_result(self.to_json())
        return run.id

    @classmethod
    def from_store(cls, store, run_id: str | None = None, model_id: str | None = None):
        """A stored calibration: run `run_id`, or the newest complete one of `model_id`."""
        if run_id is None:
            runs = store.list_runs(model_id=model_id, kind="calibration", status="complete",
                                   limit=1)
            if not runs:
                raise InvalidInput(f"no calibration of {model_id} in {store.path}: run "
                                   "`interp calibrate` first")
            run_id = runs[0].id
        return cls.from_json(store.get_run(run_id).result or {})


# ---- the uncalibrated pass ---------------------------------------------------------------------
@dataclass
class _Baseline:
    """An uncalibrated pass over some prompts: label log-probs [n, labels], the residual
    entering each layer (resid[L][i]: [len_i, d_model]) and each head's hidden sinks
    (has_sink [n, L, H] bool)."""

    logprobs: torch.Tensor
    resid: list[list[torch.Tensor]]
    has_sink: torch.Tensor


def _sliding_window(model, layer: int) -> int | None:
    config = model.hf_model.config.get_text_config()
    types = getattr(config, "layer_types", None)
    return config.sliding_window if types and types[layer] == "sliding_attention" else None


def _baseline(model, tokens: list[list[int]], label_ids, tau: float, batch_size: int,
              progress: Progress | None, keep_resid: bool = True) -> _Baseline:
    from interp.forward import run

    n, L = len(tokens), model.n_layers
    logprobs = torch.empty(n, len(label_ids))
    has_sink = torch.zeros(n, L, model.n_heads, dtype=torch.bool)
    resid: list[list] = [[None] * n for _ in range(L)]
    ids = torch.tensor(label_ids)
    for start in range(0, n, batch_size):
        rows = list(range(start, min(n, start + batch_size)))
        batch = TokenBatch.from_lists([tokens[i] for i in rows], model.pad_token_id).to(model.device)

        def on_stats(layer, stats):
            received = stats["received"].float()                            # [b, H, N]
            seen = queries_seeing(batch.seq_len, batch.seq_len, True,
                                  _sliding_window(model, layer), batch.mask, received.device)
            sinks = sink_rule(received, seen[:, None], tau, exclude_first=True)
            has_sink[rows, layer] = sinks.any(-1).cpu()

        hooks = residual_recorders(resid, rows, tokens, L) if keep_resid else []
        with torch.no_grad():
            out = run(model, batch, output="final_logprobs", hooks=hooks,
                      stats=AttentionStatsRequest(received=True), on_stats=on_stats)
        logprobs[rows] = out[:, ids.to(out.device)].float().cpu()
        if progress is not None:
            progress(rows[-1] + 1, f"uncalibrated pass {rows[-1] + 1}/{n}")
    return _Baseline(logprobs, resid, has_sink)


def _from_layer(model, tokens, resid, rows: list[int], layer: int, edit, label_ids):
    """Label log-probs [len(rows), labels] of prompts `rows` run with `edit` from `layer` on
    (the layers below are unedited: their output is the stored residual)."""
    out = run_from_layer(model, tokens, resid, rows, layer, edit)
    return out[:, torch.tensor(label_ids, device=out.device)].float().cpu()


# ---- first-order screen -------------------------------------------------------------------------
def act_pattern_change(pattern: torch.Tensor, query_mask: torch.Tensor, tau: float, beta: float,
                       window: int | None = None) -> torch.Tensor:
    """ACT's change of attention patterns [b, H, Nq, Nk] (Nq == Nk, prefill) of right-padded
    rows (query_mask [b, N] bool): sinks by ACT's rule on the pattern itself (mean attention over
    the valid queries that see a key > tau, first sink excluded), sink entries scaled by beta,
    the removed mass given back to the other keys in proportion. Returns A' - A."""
    A = pattern.float() * query_mask[:, None, :, None]
    n = A.shape[-1]
    received = A.sum(-2)                                                     # [b, H, Nk]
    seen = queries_seeing(n, n, True, window, query_mask, A.device)          # [b, Nk]
    sinks = sink_rule(received, seen[:, None], tau, exclude_first=True)      # [b, H, Nk]
    s = (A * sinks[:, :, None, :]).sum(-1, keepdim=True)                     # [b, H, Nq, 1]
    # rows whose whole mass is on sinks stay unchanged (nowhere to move mass), as in the kernel
    movable = s < 1 - 1e-6
    rescale = torch.where(movable, (1 - beta * s) / (1 - s).clamp_min(1e-6), torch.ones_like(s))
    scaled = torch.where(sinks[:, :, None, :] & movable, beta * A, A * rescale)
    return scaled - A


def attribution_gains(model, tokens: list[list[int]], gold: torch.Tensor, label_ids,
                      tau: float = TAU, beta: float = BETA, batch_size: int = 4,
                      progress: Progress | None = None) -> torch.Tensor:
    """[L, H]: first-order estimate of each head's mean margin gain under ACT on that head
    alone, sum over queries and keys of (d margin / d A) * (A' - A), from one forward and
    backward per batch (bridge engine, patterns at `hook_pattern`)."""
    from interp.forward import run

    L = model.n_layers
    total = torch.zeros(L, model.n_heads)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(L)]
    for start in range(0, len(tokens), batch_size):
        rows = list(range(start, min(len(tokens), start + batch_size)))
        batch = TokenBatch.from_lists([tokens[i] for i in rows], model.pad_token_id)
        patterns: dict[int, torch.Tensor] = {}

        def keep(layer):
            def hook(pattern, hook=None):
                pattern.retain_grad()
                patterns[layer] = pattern
            return hook

        with torch.enable_grad():
            out = run(model, batch.to(model.device), output="final_logprobs",
                      hooks=[(name, keep(layer)) for layer, name in enumerate(names)],
                      engine="bridge")
            m = margins(out[:, torch.tensor(label_ids, device=out.device)], gold[rows].to(out.device))
            m.sum().backward()
        mask = batch.mask.to(model.device)
        with torch.no_grad():
            for layer, pattern in patterns.items():
                change = act_pattern_change(pattern.detach(), mask, tau, beta,
                                            _sliding_window(model, layer))
                total[layer] += (change * pattern.grad.float()).sum((0, 2, 3)).cpu()
        del patterns, out, m
        model.hf_model.zero_grad(set_to_none=True)
        if progress is not None:
            progress(rows[-1] + 1, f"first-order screen {rows[-1] + 1}/{len(tokens)} prompts")
    return total / len(tokens)


# ---- the search --------------------------------------------------------------------------------
def single_head_gains(model, tokens, gold: torch.Tensor, label_ids, base: _Baseline,
                      tau: float = TAU, beta: float = BETA, batch_size: int = 8,
                      progress: Progress | None = None,
                      heads=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each head calibrated alone on the calibration prompts: (accuracy gain [L, H], mean margin
    gain [L, H]) over the uncalibrated pass. Only (prompt, head) pairs where the head has a
    hidden sink run (elsewhere the calibration is the identity); a batch holds many heads."""
    L, H = model.n_layers, model.n_heads
    n = len(tokens)
    base_margin = margins(base.logprobs, gold)
    delta_margin = torch.zeros(L, H)
    delta_correct = torch.zeros(L, H)
    chosen = torch.ones(L, H, dtype=torch.bool)
    if heads is not None:
        chosen = torch.zeros(L, H, dtype=torch.bool)
        for layer, head in heads:
            chosen[layer, head] = True
    pairs_total = int((base.has_sink & chosen).sum())
    done = 0
    for layer in range(L):
        pairs = [(i, h) for h in range(H) for i in range(n)
                 if base.has_sink[i, layer, h] and chosen[layer, h]]
        pairs.sort(key=lambda p: len(tokens[p[0]]))          # similar lengths share a batch
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start: start + batch_size]
            edit = AttentionEdit((SinkCalibration.per_row([(layer, h) for _, h in chunk],
                                                          beta=beta, tau=tau),))
            rows = [i for i, _ in chunk]
            logprobs = _from_layer(model, tokens, base.resid, rows, layer, edit, label_ids)
            m = margins(logprobs, gold[rows])
            for j, (i, h) in enumerate(chunk):
                delta_margin[layer, h] += float(m[j] - base_margin[i])
                delta_correct[layer, h] += float(m[j] > 0) - float(base_margin[i] > 0)
            done += len(chunk)
            if progress is not None:
                progress(done / max(pairs_total, 1),
                         f"single heads: layer {layer}, {done}/{pairs_total} (prompt, head) pairs")
    return delta_correct / n, delta_margin / n


def _set_score(model, tokens, gold, label_ids, base: _Baseline, heads, tau, beta,
               batch_size) -> tuple[float, float]:
    """(accuracy, mean margin) of the prompts with ACT on `heads`, run from their lowest layer."""
    edit = AttentionEdit((SinkCalibration(heads=tuple(heads), beta=beta, tau=tau),))
    layer = min(h[0] for h in heads)
    order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]))
    logprobs = torch.empty_like(base.logprobs)
    for start in range(0, len(order), batch_size):
        rows = order[start: start + batch_size]
        logprobs[rows] = _from_layer(model, tokens, base.resid, rows, layer, edit, label_ids)
    m = margins(logprobs, gold)
    return float((m > 0).float().mean()), float(m.mean())


def search_heads(model, task: ICLTask, train: Sequence[Example], dev: Sequence[Example],
                 shots: int = 4, n_calibration: int = 32, n_dev: int = 32, seed: int = 0,
                 tau: float = TAU, beta: float = BETA, screen: int | None = 16,
                 max_candidates: int = 8, patience: int = 3, batch_size: int = 8,
                 data: dict | None = None, progress: Progress | None = None) -> Calibration:
    """ACT's head search (see the module docstring): calibration prompts from `train` (their
    demonstrations too, never the query itself), the greedy stop on `dev`. Deterministic for a
    seed. Returns a `Calibration` (its heads may be empty when no head helps).

    screen: heads kept by the first-order screen for the exact single-head step (None: all).
    max_candidates: helpful heads tried by the greedy dev step, best first.
    """
    if not 0 < tau < 1 or not 0 <= beta <= 1:
        raise InvalidInput(f"ACT needs 0 < tau < 1 and 0 <= beta <= 1 (the paper: tau {TAU}, "
                           f"beta {BETA}); got tau {tau}, beta {beta}")
    if n_calibration < 1 or n_dev < 1:
        raise InvalidInput("n_calibration and n_dev must be >= 1")
    check_labels(task, train, "the train split")
    check_labels(task, dev, "the dev split")
    started = time.perf_counter()
    report = progress or (lambda fraction, message: None)
    label_ids = label_token_ids(model, task)
    calibration_set = sample(train, n_calibration, seed)
    dev_set = sample(dev, n_dev, seed + 1)

    def prepare(examples):
        tokens = tokenize_prompts(model, build_prompts(task, examples, train, shots, seed))
        gold = torch.tensor([task.labels.index(e.label) for e in examples])
        return tokens, gold

    cal_tokens, cal_gold = prepare(calibration_set)
    dev_tokens, dev_gold = prepare(dev_set)
    # progress: 10% uncalibrated passes, 30% screen, 40% single heads, 20% the dev stop
    n_all = len(cal_tokens) + len(dev_tokens)
    base = _baseline(model, cal_tokens, label_ids, tau, batch_size,
                     lambda done, msg: report(0.1 * done / n_all, msg))
    dev_base = _baseline(model, dev_tokens, label_ids, tau, batch_size,
                         lambda done, msg: report(0.1 * (len(cal_tokens) + done) / n_all, msg))
    every = [(l, h) for l in range(model.n_layers) for h in range(model.n_heads)
             if base.has_sink[:, l, h].any()]
    estimate = None
    if screen is not None and screen < len(every):
        estimate = attribution_gains(model, cal_tokens, cal_gold, label_ids, tau, beta,
                                     max(1, batch_size // 2),
                                     lambda done, msg: report(0.1 + 0.3 * done / len(cal_tokens),
                                                              msg))
        every = sorted(every, key=lambda x: (-float(estimate[x]), x))[:screen]
    acc_gain, margin_gain = single_head_gains(
        model, cal_tokens, cal_gold, label_ids, base, tau, beta, batch_size,
        lambda f, msg: report(0.4 + 0.4 * f, msg), heads=every)
    ranked = sorted(every, key=lambda x: (-acc_gain[x], -margin_gain[x], x))
    gains = [[l, h, float(acc_gain[l, h]), float(margin_gain[l, h])] +
             ([float(estimate[l, h])] if estimate is not None else []) for l, h in ranked]
    helpful = [x for x in ranked if acc_gain[x] > 0 or (acc_gain[x] == 0 and margin_gain[x] > 0)]
    candidates = helpful[:max_candidates]

    dev_margin = margins(dev_base.logprobs, dev_gold)
    best = (float((dev_margin > 0).float().mean()), float(dev_margin.mean()))
    baseline_dev = best[0]
    kept, misses = [], 0
    for k, head in enumerate(candidates):
        report(0.8 + 0.2 * k / max(len(candidates), 1),
               f"dev greedy: {len(kept)} kept, trying {head[0]}.{head[1]}")
        trial = _set_score(model, dev_tokens, dev_gold, label_ids, dev_base, kept + [head], tau,
                           beta, batch_size)
        if trial > best:
            kept, best, misses = kept + [head], trial, 0
        else:
            misses += 1
            if misses >= patience:
                break
    report(1.0, f"kept {len(kept)} heads")
    data = {"task": task.to_json(), "shots": shots, "seed": seed, "n_calibration":
            len(calibration_set), "n_dev": len(dev_set), "screen": screen,
            "candidates": [list(c) for c in candidates], **(data or {})}
    return Calibration(model.model_id, sorted(kept), tau, beta, data, best[0], baseline_dev,
                       gains, time.perf_counter() - started)
