"""Head codes: circuit discovery with one small SAE shared by every attention head.

O'Neill & Bui, "Sparse Autoencoders Enable Scalable and Reliable Circuit Identification in
Language Models" (2024); procedure as in their code (charlieoneill11/sae-circuits: data/*.py,
src/node.py, src/edge.py, src/train.py), written anew here:

1. Examples: positives (prompts on which the model predicts the answer) and negatives (the same
   prompts changed so it cannot; for IOI the first mention of the subject is replaced by a fresh
   name, so three different names appear and nothing marks the indirect object).
2. Per example, each head's output (z_h W_O[h], what it writes to the residual) averaged over
   the prompt's positions: [n_examples, n_layers * n_heads, d_model].
3. One ReLU SAE (L1 penalty, unit-norm decoder; the paper's 300 features) trained on the head
   vectors of a few examples (`n_sae_examples`, drawn at random from positives and negatives).
4. Every (example, head) vector is discretised to its argmax feature: its code (-1 when no
   feature is active).
5. Node score of a head = the number of distinct codes it shows on positives and never on
   negatives. Edge score of a head pair = the number of distinct (code, code) pairs the two
   heads show together on positives and never on negatives; a head's edge-derived score sums its
   pairs' scores.

Deviations, for a CPU: the SAE trains on random mini-batches of head vectors for `steps` steps
(the paper: 500 full-batch epochs on a GPU), with this package's trainer (inputs scaled to mean
norm sqrt(d_model), see `circuits.sae.train`); all heads of all examples are scored, as in the
paper. The edge variant counts pairs with sorting, not the paper's dense
[heads, heads, features, features] array (20 GB for SmolLM2).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from circuits.sae.points import final_logit_diff, run_model
from circuits.sae.sae import SAEConfig, SparseAutoencoder
from circuits.sae.train import FitConfig, fit
from interp.errors import InvalidInput
from interp.models import Model
from interp.names import Head, hook_name
from interp.tasks.base import PromptSet
from interp.tokens import TokenBatch

NEGATIVES = ("s1", "s2", "abc")


@dataclass
class HeadExamples:
    """Head output vectors of positive and negative examples.

    vectors:    [n_examples, n_layers * n_heads, d_model], head (l, h) at index l * n_heads + h.
    positive:   [n_examples] bool.
    logit_diff: [n_examples] answer minus wrong-answer logit at the last position.
    """

    vectors: torch.Tensor
    positive: torch.Tensor
    logit_diff: torch.Tensor
    n_layers: int
    n_heads: int
    info: dict = field(default_factory=dict)


@torch.no_grad()
def head_output_means(model: Model, tokens: TokenBatch, answers: torch.Tensor,
                      wrong: torch.Tensor, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """([n, L*H, d_model] each head's output averaged over the prompt's real positions,
    [n] logit(answer) - logit(wrong) at the last real position)."""
    means, diffs = [], []
    w_o = [model.bridge.blocks[layer].attn.W_O.detach() for layer in range(model.n_layers)]
    for start in range(0, tokens.batch_size, batch_size):
        sub = tokens[start:start + batch_size]
        mask = sub.mask.to(model.device)
        kept = {}

        def keep(layer):
            def hook(z, hook=None):
                weights = mask[:, :, None, None].to(z.dtype)
                # Head outputs are linear in z: mean over positions of z, then through W_O.
                z_mean = (z * weights).sum(1) / weights.sum(1)  # [b, H, d_head]
                kept[layer] = torch.einsum("bhd,hdm->bhm", z_mean, w_o[layer].to(z.dtype))
            return hook

        logits = run_model(model, sub.input_ids, [(hook_name("z", layer), keep(layer))
                                                   for layer in range(model.n_layers)])
        diffs.append(final_logit_diff(logits.float(), sub, answers[start:start + batch_size],
                                      wrong[start:start + batch_size]).cpu())
        means.append(torch.stack([kept[layer] for layer in range(model.n_layers)], 1)
                     .flatten(1, 2).float().cpu())
    return torch.cat(means), torch.cat(diffs)


def ioi_negatives(model: Model, prompts: PromptSet, kind: str = "s1", seed: int = 0) -> TokenBatch:
    """Negatives of IOI `prompts` (same token lengths):

    "s1":  the first mention of the subject replaced by a fresh name (the paper's negatives:
           "A ... C ... B gave it to" - no name is repeated, so no name is the indirect object);
    "s2":  the second mention replaced instead;
    "abc": the task's corrupted prompts (three fresh names).
    """
    if kind not in NEGATIVES:
        raise InvalidInput(f"negatives must be one of {NEGATIVES}, got {kind!r}")
    if kind == "abc":
        if prompts.corrupted is None:
            raise InvalidInput("negatives='abc' needs prompts with a corrupted counterpart")
        return prompts.corrupted
    from interp.tasks.ioi import vocabulary

    names = vocabulary(model).names
    rng = random.Random(seed)
    ids = prompts.tokens.input_ids.clone()
    slot = "S1" if kind == "s1" else "S2"
    for row, meta in enumerate(prompts.metadata):
        fresh = rng.choice([n for n in names if n not in (meta["io"], meta["s"])])
        ids[row, meta["positions"][slot]] = model.single_token_id(" " + fresh)
    return TokenBatch(ids, prompts.tokens.lengths.clone(), prompts.tokens.pad_id)


def task_examples(model: Model, prompts: PromptSet, negatives: TokenBatch,
                  keep_correct: bool = True, batch_size: int = 16) -> HeadExamples:
    """Head vectors of `prompts` (positives) and `negatives`; with `keep_correct`, only the
    prompts on which the model prefers the answer to the wrong answer stay positive (and their
    negatives stay with them, so the two sets keep the same templates)."""
    if prompts.answers is None or prompts.wrong_answers is None:
        raise InvalidInput("head codes need prompts with answers and wrong answers")
    if negatives.batch_size != len(prompts):
        raise InvalidInput(f"{len(prompts)} prompts but {negatives.batch_size} negatives; give one "
                           "negative per prompt")
    pos, pos_diff = head_output_means(model, prompts.tokens, prompts.answers, prompts.wrong_answers, batch_size)
    neg, neg_diff = head_output_means(model, negatives, prompts.answers, prompts.wrong_answers, batch_size)
    kept = pos_diff > 0 if keep_correct else torch.ones(len(prompts), dtype=torch.bool)
    if int(kept.sum()) < 2:
        raise InvalidInput(f"the model prefers the answer on only {int(kept.sum())} of "
                           f"{len(prompts)} prompts; head codes need positives it gets right")
    vectors = torch.cat([pos[kept], neg[kept]])
    labels = torch.cat([torch.ones(int(kept.sum()), dtype=torch.bool),
                        torch.zeros(int(kept.sum()), dtype=torch.bool)])
    info = {"n_prompts": len(prompts), "n_positive": int(kept.sum()), "n_negative": int(kept.sum()),
            "positive_logit_diff": float(pos_diff[kept].mean()),
            "negative_logit_diff": float(neg_diff[kept].mean())}
    return HeadExamples(vectors, labels, torch.cat([pos_diff[kept], neg_diff[kept]]),
                        model.n_layers, model.n_heads, info)


def train_code_sae(vectors: torch.Tensor, features: int = 300, l1_coefficient: float = 1.0,
                   steps: int = 200, batch_size: int = 512, lr: float = 1e-3, seed: int = 0
                   ) -> SparseAutoencoder:
    """A ReLU SAE on head vectors [N, d_model] (random mini-batches; module doc)."""
    if vectors.shape[0] < 2:
        raise InvalidInput(f"an SAE needs at least 2 training vectors, got {vectors.shape[0]}")
    generator = torch.Generator().manual_seed(seed)
    sae = SparseAutoencoder(SAEConfig(d_in=vectors.shape[1], d_sae=features,
                                      architecture="standard", k=None,
                                      hook_name="attn.hook_result (every head, position mean)",
                                      exclude_first_position=False))
    sae.reset_parameters(generator)

    def batches():
        while True:
            yield vectors[torch.randint(vectors.shape[0], (batch_size,), generator=generator)]

    fit(sae, batches(), steps, FitConfig(lr=lr, l1_coefficient=l1_coefficient, seed=seed,
                                         dead_after=10 * batch_size))
    return sae


@torch.no_grad()
def codes_of(sae: SparseAutoencoder, vectors: torch.Tensor) -> torch.Tensor:
    """[n, H, d] -> [n, H] long: the argmax feature of each vector, -1 where none is active."""
    features = sae.encode(vectors.float())
    values, index = features.max(-1)
    return torch.where(values > 0, index, torch.full_like(index, -1))


def node_scores(codes: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """[n, H] codes, [n] labels -> [H]: distinct codes each head shows only on positives."""
    pos, neg = codes[positive], codes[~positive]
    scores = torch.zeros(codes.shape[1])
    for h in range(codes.shape[1]):
        only = set(pos[:, h].tolist()) - set(neg[:, h].tolist())
        scores[h] = len(only)
    return scores


def edge_scores(codes: torch.Tensor, positive: torch.Tensor, n_codes: int,
                chunk: int = 4096) -> torch.Tensor:
    """[n, H] codes -> [H, H] symmetric: distinct (code_i, code_j) pairs heads i and j show
    together on positives and never on negatives (diagonal 0)."""
    n, n_heads = codes.shape
    shifted = (codes + 1).long()  # -1 (silent) -> 0
    base = n_codes + 1
    rows, cols = torch.triu_indices(n_heads, n_heads, offset=1)
    out = torch.zeros(n_heads, n_heads)
    negative = (~positive).long()
    for start in range(0, rows.shape[0], chunk):
        i, j = rows[start:start + chunk], cols[start:start + chunk]
        pair = shifted[:, i] * base + shifted[:, j]  # [n, P]
        counts = _positive_only_distinct(pair, negative)
        out[i, j] = counts
        out[j, i] = counts
    return out


def _positive_only_distinct(values: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """[n, P] values, [n] 0/1 negative flags -> [P]: distinct values per column that occur
    only in positive rows."""
    n, p = values.shape
    order = values.argsort(0)
    ordered = values.gather(0, order)
    neg = negative[order]  # [n, P]
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    run = starts.long().cumsum(0) - 1  # run index within each column
    flat = run + torch.arange(p)[None, :] * n
    has_negative = torch.zeros(n * p, dtype=torch.long).scatter_reduce(
        0, flat.flatten(), neg.flatten(), reduce="amax")
    positive_run = starts.flatten() & (has_negative[flat.flatten()] == 0)
    return positive_run.view(n, p).sum(0).float()


@dataclass
class HeadCodeResult:
    """Scores of every head: node [L, H] and edge-derived [L, H]; pair scores [L*H, L*H]."""

    node: torch.Tensor
    edge_heads: torch.Tensor
    edges: torch.Tensor
    codes: torch.Tensor
    positive: torch.Tensor
    sae: SparseAutoencoder
    info: dict

    def top_edges(self, n: int = 20) -> list[tuple[Head, Head, float]]:
        n_heads = self.node.shape[1]
        upper = torch.triu(self.edges, diagonal=1)
        values, index = upper.flatten().topk(min(n, upper.numel()))
        size = self.edges.shape[0]
        out = []
        for v, i in zip(values.tolist(), index.tolist()):
            a, b = divmod(i, size)
            if v > 0:
                out.append(((a // n_heads, a % n_heads), (b // n_heads, b % n_heads), v))
        return out


def head_codes(examples: HeadExamples, n_sae_examples: int = 10, features: int = 300,
               l1_coefficient: float = 1.0, steps: int = 200, seed: int = 0,
               edges: bool = True) -> HeadCodeResult:
    """Train the shared SAE on `n_sae_examples` random examples and score every head."""
    n = examples.vectors.shape[0]
    if not 1 <= n_sae_examples <= n:
        raise InvalidInput(f"n_sae_examples must be between 1 and the {n} examples, got "
                           f"{n_sae_examples}")
    if examples.positive.all() or not examples.positive.any():
        raise InvalidInput("head codes need both positive and negative examples")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(n, generator=generator)[:n_sae_examples]
    sae = train_code_sae(examples.vectors[chosen].flatten(0, 1), features, l1_coefficient, steps,
                         seed=seed)
    codes = codes_of(sae, examples.vectors)
    shape = (examples.n_layers, examples.n_heads)
    node = node_scores(codes, examples.positive).view(shape)
    pair = edge_scores(codes, examples.positive, features) if edges else torch.zeros(codes.shape[1], codes.shape[1])
    info = {**examples.info, "n_sae_examples": n_sae_examples, "features": features,
            "l1_coefficient": l1_coefficient, "steps": steps, "seed": seed,
            "distinct_codes": int(codes.unique().numel())}
    return HeadCodeResult(node=node, edge_heads=pair.sum(1).view(shape), edges=pair, codes=codes,
                          positive=examples.positive, sae=sae, info=info)
