"""Train an SAE on a model's activations at one hook, streamed from a text corpus.

    trained = train_sae(model, "blocks.6.hook_resid_pre", features=4096, k=32, tokens=100_000)
    trained.report["explained_variance"], trained.report["l0"], trained.report["loss_increase"]
    trained.run_id           # when a store was given: the SAE is saved there (SAELens layout)

Activations are never all in memory: windows of the corpus run through the model a few at a
time (the forward stops after the hook's layer), their vectors go into a shuffling buffer of
`buffer_tokens` vectors, and the SAE trains on batches drawn from it (SAELens's mixing buffer).
When `tokens` exceeds the corpus's training windows, the windows are reused in a new order (the
report gives the number of epochs).

Training, following SAELens and the papers it implements:
- Inputs are scaled by one constant so their mean norm is sqrt(d_in) (SAELens
  `normalize_activations="expected_average_only_in"`), which makes the L1 coefficient and the
  learning rate mean the same for every hook; the scale is folded into b_enc, b_dec and the
  feature scale when training ends, so the saved SAE reads raw activations and its decoder rows
  stay at norm 1.
- b_dec starts at the mean of the first buffer; W_enc = W_dec^T (Gao et al. 2024, section 2.4).
- Loss: sum of squared error per vector, plus `l1_coefficient` * sum|f| (ReLU) or the auxiliary
  loss of Gao et al. (section A.2; TopK): the `k_aux` largest pre-activations among dead features
  reconstruct the residual error, weighted 1/32. ReLU SAEs instead resample dead features at 1/4
  and 1/2 of training (Bricken et al. 2023, "Towards Monosemanticity", appendix): each dead
  feature is given the direction of an input it reconstructs badly.
- Adam; linear warm-up over the first 5% of steps, linear decay to 0 over the last 20%.
- After every step: the gradient along each decoder row is removed before the step, and rows are
  renormalised to 1 after it (`SparseAutoencoder.remove_parallel_grad` / `normalize_decoder`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from circuits.sae.corpus import Windows, corpus_windows
from circuits.sae.points import ActivationPoint, activation_point, collect
from circuits.sae.quality import flat_vectors, sae_report
from circuits.sae.sae import SAEConfig, SparseAutoencoder
from interp.errors import InvalidInput
from interp.models import Model

Progress = Callable[[float, str], None]


@dataclass
class FitConfig:
    """Optimisation knobs shared by every SAE this package trains."""

    lr: float = 1e-3
    l1_coefficient: float = 5.0  # ReLU SAEs only (on inputs of mean norm sqrt(d_in))
    aux_coefficient: float = 1 / 32  # TopK auxiliary loss (Gao et al.)
    dead_after: int = 50_000  # vectors without firing before a feature counts as dead
    resample_at: tuple[float, ...] = (0.25, 0.5)  # ReLU: fractions of training
    warmup: float = 0.05
    decay: float = 0.2
    seed: int = 0


@dataclass
class TrainedSAE:
    """An SAE, its quality figures and, when stored, its run id and folder."""

    sae: SparseAutoencoder
    report: dict
    point: ActivationPoint | None = None
    history: dict | None = None
    run_id: str | None = None
    path: Path | None = None


def _lr_factor(step: int, n_steps: int, config: FitConfig) -> float:
    warm = max(1, int(config.warmup * n_steps))
    if step < warm:
        return (step + 1) / warm
    decay_from = n_steps - int(config.decay * n_steps)
    if step >= decay_from:
        return max(0.0, (n_steps - step) / max(1, n_steps - decay_from))
    return 1.0


def _aux_loss(sae: SparseAutoencoder, pre: torch.Tensor, residual: torch.Tensor,
              dead: torch.Tensor) -> torch.Tensor:
    """Gao et al.'s AuxK: dead features' top pre-activations reconstruct the residual error."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return pre.new_zeros(())
    k_aux = min(sae.d_in // 2, n_dead)
    masked = torch.where(dead, pre, torch.full_like(pre, -math.inf))
    values, indices = masked.topk(k_aux, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, indices, values.relu())
    return (acts @ sae.W_dec - residual).pow(2).sum(-1).mean()


@torch.no_grad()
def _resample_dead(sae: SparseAutoencoder, optimizer: torch.optim.Adam, x: torch.Tensor,
                   dead: torch.Tensor, generator: torch.Generator) -> int:
    """Bricken et al.'s resampling: each dead feature takes the direction of an input drawn with
    probability proportional to its squared reconstruction loss. Returns how many."""
    index = dead.nonzero().flatten()
    if index.numel() == 0:
        return 0
    loss = (sae(x)[0] - x).pow(2).sum(-1)
    weights = loss.pow(2)
    if float(weights.sum()) <= 0:
        return 0
    picks = torch.multinomial(weights, index.numel(), replacement=True, generator=generator)
    directions = x[picks] - sae.b_dec
    directions = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    alive = ~dead
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
    sae.W_dec[index] = directions
    sae.W_enc[:, index] = directions.T * 0.2 * enc_norm
    sae.b_enc[index] = 0.0
    for param, rows in ((sae.W_dec, (index,)), (sae.W_enc, (slice(None), index)), (sae.b_enc, (index,))):
        state = optimizer.state.get(param, {})
        for moment in ("exp_avg", "exp_avg_sq"):
            if moment in state:
                state[moment][rows] = 0.0
    return index.numel()


def fit(sae: SparseAutoencoder, batches: Iterator[torch.Tensor], n_steps: int,
        config: FitConfig | None = None, on_step: Callable[[int, dict], None] | None = None,
        ) -> dict:
    """Train `sae` in place on `n_steps` batches of raw vectors [B, d_in] (see module doc).

    Returns the training history {"loss": [...], "mse": [...], "scale": s, "resampled": n}.
    """
    config = config or FitConfig()
    generator = torch.Generator().manual_seed(config.seed)
    first = next(batches).float()
    sae.check_width(first.shape[-1], "the training activations")
    scale = math.sqrt(sae.d_in) / float(first.norm(dim=-1).mean().clamp_min(1e-12))
    with torch.no_grad():
        sae.b_dec.copy_((first * scale).mean(0))
    optimizer = torch.optim.Adam(sae.parameters(), lr=config.lr)
    since_fired = torch.zeros(sae.d_sae, dtype=torch.long)
    resample_steps = {int(f * n_steps) for f in config.resample_at} if sae.cfg.architecture == "standard" else set()
    history = {"loss": [], "mse": [], "resampled": 0}
    batch = first
    for step in range(n_steps):
        if step:
            batch = next(batches).float()
        x = batch * scale
        for group in optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(step, n_steps, config)
        pre = sae.pre_activations(x)
        f = sae.activate(pre)
        x_hat = sae.decode(f)
        mse = (x_hat - x).pow(2).sum(-1).mean()
        fired = (f > 0).any(0)
        since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + x.shape[0])
        dead = since_fired >= config.dead_after
        if sae.cfg.architecture == "standard":
            loss = mse + config.l1_coefficient * f.abs().sum(-1).mean()
        else:
            loss = mse + config.aux_coefficient * _aux_loss(sae, pre, (x - x_hat).detach(), dead)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_parallel_grad()
        optimizer.step()
        sae.normalize_decoder()
        if step in resample_steps:
            history["resampled"] += _resample_dead(sae, optimizer, x, dead, generator)
            since_fired[dead] = 0
        history["loss"].append(float(loss.detach()))
        history["mse"].append(float(mse.detach()))
        if on_step is not None:
            on_step(step, {"loss": history["loss"][-1], "mse": history["mse"][-1], "dead": int(dead.sum())})
    _fold_scale(sae, scale)
    history["scale"] = scale
    return history


@torch.no_grad()
def _fold_scale(sae: SparseAutoencoder, scale: float) -> None:
    """Make an SAE trained on `scale * x` read raw x: with f' = f / scale (ReLU and TopK commute
    with a positive scale), b_enc and b_dec divide by `scale`, W_enc and W_dec stay."""
    sae.b_enc.div_(scale)
    sae.b_dec.div_(scale)


def _stream(model: Model, point: ActivationPoint, windows: torch.Tensor, batch_size: int,
            buffer_tokens: int, model_batch: int, exclude_first: bool,
            generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of shuffled SAE inputs from `windows` (reshuffled every epoch)."""
    buffer = torch.empty(0, point.d_in)
    while True:
        order = torch.randperm(windows.shape[0], generator=generator)
        for start in range(0, len(order), model_batch):
            ids = windows[order[start:start + model_batch]]
            x = collect(model, ids, [point])[point]
            buffer = torch.cat([buffer, flat_vectors(x.float().cpu(), exclude_first)])
            if buffer.shape[0] < buffer_tokens:
                continue
            buffer = buffer[torch.randperm(buffer.shape[0], generator=generator)]
            # Hand out half the buffer; the rest mixes with the next windows.
            n_out = (buffer.shape[0] // 2) // batch_size * batch_size
            for b in range(0, n_out, batch_size):
                yield buffer[b:b + batch_size]
            buffer = buffer[n_out:]


def train_sae(
    model: Model,
    hook: str,
    *,
    head: int | None = None,
    features: int | None = None,
    k: int | None = 32,
    tokens: int = 100_000,
    corpus: str | Path | None = None,
    context_size: int = 128,
    batch_size: int = 1024,
    held_out_windows: int = 16,
    loss_windows: int = 8,
    buffer_tokens: int | None = None,
    model_batch: int = 8,
    fit_config: FitConfig | None = None,
    store=None,
    progress: Progress | None = None,
    show_progress: bool = True,
) -> TrainedSAE:
    """Train an SAE at `hook` (and `head`) of `model`; report its quality; store it if asked.

    features: dictionary size (default 8 x the input width).
    k:        TopK SAE with this k; None for a ReLU SAE with an L1 penalty.
    tokens:   vectors to train on (each token position is one vector; per-head hook_result
              gives n_heads vectors per token).
    corpus:   None (the shipped novel), "essays", or a .txt file / directory (`circuits.sae.corpus`).
    held_out_windows / loss_windows: context windows kept out of training for the quality
              figures / of those, the ones the next-token losses are measured on.
    store:    an `interp.store.Store`: save the SAE there (`circuits.sae.io.store_sae`).
    """
    point = activation_point(model, hook, head)
    features = features or 8 * point.d_in
    if features < 1:
        raise InvalidInput(f"features must be at least 1, got {features}")
    if k is not None and not 1 <= k <= features:
        raise InvalidInput(f"k must be between 1 and features ({features}), got {k}")
    if tokens < batch_size:
        raise InvalidInput(f"tokens ({tokens}) is fewer than one training batch ({batch_size} "
                           "vectors): train on more tokens or pass a smaller batch_size")
    if not 0 <= loss_windows <= held_out_windows:
        raise InvalidInput(f"loss_windows must be between 0 and held_out_windows ({held_out_windows})")
    windows: Windows = corpus_windows(model, corpus, context_size, held_out_windows)
    config = fit_config or FitConfig()
    cfg = SAEConfig(
        d_in=point.d_in, d_sae=features, architecture="topk" if k is not None else "standard",
        k=k, hook_name=hook, hook_head_index=point.head, model_name=model.name,
        model_id=model.model_id, context_size=context_size, prepend_bos=model.prepend_bos,
        dataset_path=windows.corpus,
    )
    generator = torch.Generator().manual_seed(config.seed)
    sae = SparseAutoencoder(cfg)
    sae.reset_parameters(generator)
    per_window = (context_size - int(cfg.exclude_first_position)) * (model.n_heads if point.per_head else 1)
    buffer_tokens = buffer_tokens or max(8 * batch_size, model_batch * per_window)
    n_steps = tokens // batch_size
    stream = _stream(model, point, windows.train, batch_size, buffer_tokens, model_batch,
                     cfg.exclude_first_position, generator)
    started = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=n_steps * batch_size, unit="vec", desc=f"SAE {point.label()}",
               disable=not show_progress)

    def on_step(step, stats):
        bar.update(batch_size)
        bar.set_postfix(mse=f"{stats['mse']:.3g}", dead=stats["dead"], refresh=False)
        if progress is not None and (step % 10 == 0 or step == n_steps - 1):
            progress(0.9 * (step + 1) / n_steps, f"step {step + 1}/{n_steps}")

    try:
        history = fit(sae, stream, n_steps, config, on_step)
    finally:
        bar.close()
    train_seconds = time.perf_counter() - started
    if progress is not None:
        progress(0.9, "evaluating on held-out tokens")
    report = sae_report(model, sae, point, windows.held_out, loss_windows)
    report.update({
        "hook": hook, "head": point.head, "architecture": cfg.architecture, "k": k,
        "features": features, "d_in": point.d_in, "tokens_trained": n_steps * batch_size,
        "steps": n_steps, "epochs": round(n_steps * batch_size / max(1, windows.train.shape[0] * per_window), 3),
        "corpus": windows.corpus, "train_windows": windows.train.shape[0],
        "held_out_windows": windows.held_out.shape[0], "loss_windows": loss_windows,
        "resampled": history["resampled"], "input_scale": history["scale"],
        "final_train_mse": history["mse"][-1], "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
    })
    trained = TrainedSAE(sae=sae, report=report, point=point, history=history)
    if store is not None:
        from circuits.sae.io import store_sae

        store_sae(store, trained)
    if progress is not None:
        progress(1.0, "done")
    return trained
