"""Which heads PASTA should steer: profile each head alone on tasks where emphasis matters.

Zhang et al., "Tell Your Model Where to Attend: Post-hoc Attention Steering for LLMs" (ICLR
2024, arXiv:2311.02262; code QingruZhang/PASTA) pick the steered heads by "model profiling":
steer one head at a time (alpha = 0.01 on the keys outside the highlighted span), measure the
task's performance on a small profiling set, rank the heads, and keep the top-k of each task,
intersected across tasks. Steering whole layers is the coarse alternative they compare against.
Here, sized for a CPU (SmolLM2-135M has 30 x 9 = 270 heads):

1. Profiling items: the first `n_items` of each task's profiling half (`pasta_tasks.split`,
   seeded); the evaluation half is never seen. One unedited forward per item gives the
   baseline margin (log p(target) - max log p(foil), see `interp.tasks.pasta_tasks`) and the
   residual entering every layer.
2. Layer screen (`layers` < n_layers): every head of one layer steered together, each layer in
   turn; layers are ranked by their margin gain averaged over the tasks and the top `layers`
   are kept (the paper's layer-wise steering, used here as a screen: 30 runs instead of 270).
   `layers=None` skips the screen and profiles every head.
3. Each head of the kept layers alone, exactly. Steering a head of layer L leaves layers < L
   unchanged, so each run starts at L from the stored residual; one batch row per (head, item)
   pair, so one forward scores several heads (a row's other heads get a highlight covering
   every key, which makes their edit the identity).
4. Ranking: per task by the mean margin gain over the unsteered model (the smooth form of the
   accuracy gain, which moves in steps of 1/n_items); the accuracy gain is kept beside it.
   Choosing k: the chosen set is the heads that help (margin gain > 0) on every task and lie in
   every task's top k, for the smallest k where that intersection holds `size` heads (all the
   helpful heads when it never does); of those, the `size` best by mean rank are kept.

    profile = profile_heads(model, ["counterfactual", "uppercase"], n_items=16, layers=8)
    profile.heads            # [(layer, head), ...]
    profile.save_to_store(store); PastaProfile.from_store(store, model.model_id).heads

Cancellation: run inside `interp.forward.stop_when(...)`; every forward polls it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from interp.errors import InvalidInput
from interp.steering.head_set import SavedHeadSet
from interp.steering.resume import residual_recorders, run_from_layer
from interp.tasks.pasta_tasks import (PastaItem, PastaTask, answer_token_ids, distinguishable,
                                      load_pasta_task, margins, split)
from interp.tokens import TokenBatch
from kernels import AttentionEdit, pasta

ALPHA = 0.01
KIND = "pasta_profile"
Progress = Callable[[float, str], None]
_EVERY_KEY = ((0, 1 << 30),)      # a highlight covering every key: PASTA is then the identity


@dataclass
class PastaProfile(SavedHeadSet):
    """A profiled PASTA head set: steer these heads of this model when highlighting a phrase.

    heads: the chosen heads [(layer, head), ...] (may be empty: no head helped every task).
    head_gains: {task: [[layer, head, margin gain, accuracy gain], ...]} best first, every head
        profiled alone. layer_gains: {task: [[layer, margin gain, accuracy gain], ...]} of the
        layer screen (empty without one). baseline: {task: {"accuracy", "margin"}}.
    k: the per-task top-k whose intersection gave `heads`. layers_profiled: the layers whose
    heads were profiled one by one (the layer screen's pick, or every candidate layer).
    """

    KIND = KIND
    WHAT = "a PASTA profile"
    MADE_BY = "interp pasta MODEL --json PROFILE.json"

    model_id: str
    heads: list[tuple[int, int]]
    alpha: float = ALPHA
    tasks: list[str] = field(default_factory=list)
    n_items: dict = field(default_factory=dict)
    seed: int = 0
    size: int = 8
    k: int | None = None
    layers_profiled: list[int] = field(default_factory=list)
    head_gains: dict = field(default_factory=dict)
    layer_gains: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)
    seconds: float | None = None

    def save_to_store(self, store) -> str:
        """Record it as a complete `pasta_profile` run of the results store; returns its id."""
        params = {"alpha": self.alpha, "tasks": self.tasks, "n_items": self.n_items,
                  "seed": self.seed, "size": self.size}
        with store.run(KIND, self.model_id, params) as run:
            run.set_result(self.to_json())
        return run.id

    @classmethod
    def from_store(cls, store, model: str) -> "PastaProfile":
        """The newest complete profile of `model`: a model id ("name@hash", exact match) or a
        model name (any weights of that name; check `matches` once the model is loaded). An
        error naming the command that makes one when there is none."""
        runs = store.list_runs(kind=KIND, status="complete", limit=10_000)
        name = model.split("@")[0]
        found = [r for r in runs
                 if (r.model_id == model if "@" in model else r.model_id.split("@")[0] == name)]
        if not found:
            raise InvalidInput(f"no PASTA profile of {model} in {store.path}: run "
                               f"`interp pasta {name}` first to profile its heads (or name the "
                               "heads: --heads LAYER.HEAD,...)")
        return cls.from_json(found[0].result or {})

    def check_model(self, model) -> None:
        """Refuse a loaded model whose weights are not the ones profiled."""
        if model.model_id != self.model_id:
            raise InvalidInput(f"the stored PASTA profile is of {self.model_id}, not "
                               f"{model.model_id}: run `interp pasta {model.name}` to profile "
                               "these weights")


# ---- one task's profiling data -----------------------------------------------------------------
@dataclass
class _Prepared:
    """One task's profiling items on one model: tokens, highlight spans, answer ids, the
    baseline margins [n] and the residual entering each layer (resid[L][i]: [len_i, d])."""

    name: str
    items: list[PastaItem]
    tokens: list[list[int]]
    spans: list[tuple]
    target_ids: torch.Tensor
    foil_ids: torch.Tensor
    base: torch.Tensor | None = None
    resid: list | None = None


def prepare(model, task: PastaTask, n_items: int, seed: int) -> _Prepared:
    """The first `n_items` of `task`'s profiling half usable on `model` (no answer collision)."""
    from interp.steering.edits import token_spans

    profile_half, _ = split(task, seed)
    items, _ = distinguishable(model, profile_half)
    items = items[:n_items]
    if not items:
        raise InvalidInput(f"task {task.name} has no usable profiling item on {model.name}")
    tokens = [model.encode(item.prompt) for item in items]
    spans = [tuple(token_spans(model, item.prompt, item.highlight)) for item in items]
    target_ids, foil_ids = answer_token_ids(model, items)
    return _Prepared(task.name, items, tokens, spans, target_ids, foil_ids)


def _baseline(model, data: _Prepared, batch_size: int) -> None:
    """Fill data.base (unsteered margins) and data.resid (residual entering each layer)."""
    from interp.forward import run

    n, L = len(data.tokens), model.n_layers
    resid: list[list] = [[None] * n for _ in range(L)]
    base = torch.empty(n)
    for start in range(0, n, batch_size):
        rows = list(range(start, min(n, start + batch_size)))
        batch = TokenBatch.from_lists([data.tokens[i] for i in rows], model.pad_token_id)

        hooks = residual_recorders(resid, rows, data.tokens, L)
        with torch.no_grad():
            out = run(model, batch.to(model.device), output="final_logprobs", hooks=hooks)
        base[rows] = margins(out, data.target_ids[rows], data.foil_ids[rows])
    data.base, data.resid = base, resid


def steered_margins(model, data: _Prepared, layer: int, row_items: Sequence[int],
                    row_heads: Sequence[tuple[int, ...]], alpha: float) -> torch.Tensor:
    """[rows] margins with PASTA on `row_heads[r]` (heads of `layer`) of item `row_items[r]`,
    run from `layer` on the stored residual (layers below are unsteered, hence unchanged)."""
    heads = sorted({h for hs in row_heads for h in hs})
    parts = tuple(pasta(((layer, h),), tuple(data.spans[i] if h in hs else _EVERY_KEY
                                             for i, hs in zip(row_items, row_heads)), alpha)
                  for h in heads)
    out = run_from_layer(model, data.tokens, data.resid, row_items, layer, AttentionEdit(parts))
    return margins(out, data.target_ids[list(row_items)], data.foil_ids[list(row_items)])


def _gains(data: _Prepared, steered: torch.Tensor, rows: Sequence[int]) -> tuple[float, float]:
    """(mean margin gain, accuracy gain) of steered margins over the baseline of items `rows`."""
    base = data.base[list(rows)]
    return (float((steered - base).mean()),
            float((steered > 0).float().mean() - (base > 0).float().mean()))


# ---- the profile -------------------------------------------------------------------------------
def profile_heads(model, tasks: Sequence[str | PastaTask] = ("counterfactual", "uppercase"), *,
                  n_items: int = 16, layers: int | None = 8, size: int = 8,
                  alpha: float = ALPHA, seed: int = 0, batch_size: int = 16,
                  only_layers: Sequence[int] | None = None,
                  progress: Progress | None = None) -> PastaProfile:
    """Profile PASTA heads of `model` on `tasks` (built-in names, JSONL paths or PastaTasks);
    see the module docstring for the procedure, `layers` (the screen) and `size` (the set).
    only_layers: profile the heads of these layers only (the screen, if any, ranks them)."""
    from interp.forward import check_stop

    check_profile_arguments(n_items, layers, size, alpha, batch_size, model.n_layers)
    candidates = sorted(set(range(model.n_layers) if only_layers is None else only_layers))
    if not candidates or not all(0 <= layer < model.n_layers for layer in candidates):
        raise InvalidInput(f"only_layers {only_layers}: name layers 0..{model.n_layers - 1}")
    tasks = [t if isinstance(t, PastaTask) else load_pasta_task(t) for t in tasks]
    names = [t.name for t in tasks]
    if not tasks or len(set(names)) != len(names):
        raise InvalidInput(f"tasks {names}: give at least one task, each once (by name)")
    started = time.perf_counter()
    prepared = [prepare(model, task, n_items, seed) for task in tasks]
    n_heads, n_layers = model.n_heads, len(candidates)
    screen = layers is not None and layers < n_layers
    total = sum(len(d.items) for d in prepared) * (1 + (n_layers if screen else 0)
                                                   + n_heads * (layers if screen else n_layers))
    done = 0

    def advance(rows: int, message: str) -> None:
        nonlocal done
        done += rows
        check_stop()
        if progress is not None:
            progress(min(1.0, done / total), message)

    for data in prepared:
        _baseline(model, data, batch_size)
        advance(len(data.items), f"{data.name}: unsteered pass")

    # layer screen: every head of a layer together
    layer_gains: dict[str, list] = {d.name: [] for d in prepared}
    kept_layers = candidates
    if screen:
        all_heads = tuple(range(n_heads))
        for data in prepared:
            n = len(data.items)
            for count, layer in enumerate(candidates):
                steered = torch.cat([
                    steered_margins(model, data, layer, rows, [all_heads] * len(rows), alpha)
                    for rows in _chunks(range(n), batch_size)])
                layer_gains[data.name].append([layer, *_gains(data, steered, range(n))])
                advance(n, f"{data.name}: layer screen {count + 1}/{n_layers}")
        mean_gain = {row[0]: sum(layer_gains[d.name][j][1] for d in prepared) / len(prepared)
                     for j, row in enumerate(layer_gains[prepared[0].name])}
        kept_layers = sorted(sorted(mean_gain, key=lambda l: -mean_gain[l])[:layers])
        for name in layer_gains:
            layer_gains[name].sort(key=lambda row: -row[1])

    # each head of the kept layers alone: one row per (head, item)
    head_gains: dict[str, list] = {d.name: [] for d in prepared}
    for data in prepared:
        n = len(data.items)
        for layer in kept_layers:
            pairs = [(h, i) for h in range(n_heads) for i in range(n)]
            steered = torch.cat([
                steered_margins(model, data, layer, [i for _, i in chunk],
                                [(h,) for h, _ in chunk], alpha)
                for chunk in _chunks(pairs, batch_size)])
            for h in range(n_heads):
                head_gains[data.name].append(
                    [layer, h, *_gains(data, steered[h * n:(h + 1) * n], range(n))])
            advance(n * n_heads, f"{data.name}: heads of layer {layer}")
        head_gains[data.name].sort(key=lambda row: (-row[2], row[0], row[1]))

    heads, k = choose_heads(head_gains, size)
    return PastaProfile(
        model_id=model.model_id, heads=heads, alpha=alpha,
        tasks=[t.source or t.name for t in tasks],
        n_items={d.name: len(d.items) for d in prepared}, seed=seed, size=size, k=k,
        layers_profiled=list(kept_layers), head_gains=head_gains,
        layer_gains=layer_gains if screen else {},
        baseline={d.name: {"accuracy": float((d.base > 0).float().mean()),
                           "margin": float(d.base.mean())} for d in prepared},
        seconds=time.perf_counter() - started)


def choose_heads(head_gains: dict[str, list], size: int) -> tuple[list[tuple[int, int]], int]:
    """(the chosen heads, k): the heads with margin gain > 0 on every task that lie in every
    task's top k, for the smallest k where they number at least `size`; the `size` best of
    them by mean rank. head_gains: {task: [[layer, head, margin gain, ...], ...] best first}."""
    ranks = {name: {(row[0], row[1]): r for r, row in enumerate(rows)}
             for name, rows in head_gains.items()}
    helpful = set.intersection(*({(row[0], row[1]) for row in rows if row[2] > 0}
                                 for rows in head_gains.values()))
    n = max(len(rows) for rows in head_gains.values())
    chosen, k = helpful, n
    for k in range(1, n + 1):
        top = {h for h in helpful if all(r.get(h, n) < k for r in ranks.values())}
        if len(top) >= size:
            chosen = top
            break
    order = sorted(chosen, key=lambda h: (sum(r[h] for r in ranks.values()), h))
    return [tuple(h) for h in order[:size]], k


def check_profile_arguments(n_items: int, layers: int | None, size: int, alpha: float,
                            batch_size: int, n_layers: int | None = None) -> None:
    """The profile's numbers, checked before any model runs (the CLI calls it before loading)."""
    if n_items < 1:
        raise InvalidInput(f"--n-items {n_items}: profile on at least 1 item per task")
    if layers is not None and (layers < 1 or (n_layers is not None and layers > n_layers)):
        raise InvalidInput(f"--layers {layers}: keep between 1 and the model's layers "
                           f"({n_layers}) in the layer screen, or 0 to profile every head")
    if size < 1:
        raise InvalidInput(f"--size {size}: choose at least 1 head")
    if not 0 < alpha < 1:
        raise InvalidInput(f"--alpha {alpha}: PASTA down-weights the other keys, 0 < alpha < 1 "
                           "(the paper uses 0.01)")
    if batch_size < 1:
        raise InvalidInput(f"--batch-size {batch_size}: must be >= 1")


def _chunks(seq, size: int):
    seq = list(seq)
    for start in range(0, len(seq), size):
        yield seq[start:start + size]


# ---- applying a profile ------------------------------------------------------------------------
def evaluate_heads(model, items: Sequence[PastaItem], heads, alpha: float = ALPHA,
                   batch_size: int = 16) -> torch.Tensor:
    """[n] margins of `items` with PASTA on `heads` (None or empty: unsteered), each item
    highlighting its own phrase (every head of every row steered)."""
    from interp.forward import run
    from interp.steering.edits import token_spans

    target_ids, foil_ids = answer_token_ids(model, items)
    out = torch.empty(len(items))
    heads = tuple(map(tuple, heads or ()))
    for rows in _chunks(range(len(items)), batch_size):
        tokens = [model.encode(items[i].prompt) for i in rows]
        edit = None
        if heads:
            spans = tuple(tuple(token_spans(model, items[i].prompt, items[i].highlight))
                          for i in rows)
            edit = AttentionEdit((pasta(heads, spans, alpha),))
        batch = TokenBatch.from_lists(tokens, model.pad_token_id)
        with torch.no_grad():
            logprobs = run(model, batch.to(model.device), output="final_logprobs", edit=edit)
        out[rows] = margins(logprobs, target_ids[rows], foil_ids[rows])
    return out
