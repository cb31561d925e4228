"""previous_token, duplicate_token and induction heads: TransformerLens's `head_detector`, streamed.

Definition (TransformerLens `transformer_lens/head_detector.py`, `detect_head` with
`error_measure="mul"`): for one prompt with attention pattern A [N, N] and a 0/1 detection pattern
D [N, N] (lower triangular),

    A' = A with column 0 zeroed if exclude_bos, and the diagonal zeroed if exclude_current_token
    score = sum(A' * D) / sum(A')

with D[i, j] = 1 where
- previous_token:  j = i - 1;
- duplicate_token: j < i and token[j] == token[i];
- induction:       1 <= j <= i and token[j - 1] == token[i] (j - 1 < i): the key right after an
                   earlier occurrence of the current token.

Instead of caching A we ask the attention kernel for A at the few keys each query needs
(`AttentionStatsRequest.gather_keys`): the detection keys, plus key i when the current token is
excluded. sum(A') is summed row by row: with exclude_bos each row's mass on keys >= 1 comes from
`key_mass` (summed directly by the kernel: 1 - A[i, 0] would cancel catastrophically in float32
for heads that put ~all their attention on the first token, and those heads' scores are a ratio
of two tiny numbers), minus A[i, i] when the current token is excluded. `detect_head` on a list of prompts averages the per-prompt scores; so do we, over many
prompts (details keep the per-prompt scores).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.ablation import ablate_heads, head_means
from interp.attention_stats import stream_attention_stats
from interp.errors import InvalidInput
from interp.heads.base import (Detector, Progress, Prompts, as_prompt_set, check_context, param,
                               params_json)
from interp.heads.behaviour import Behaviour, next_token_loss
from interp.models import Model
from interp.scores import HeadScores
from interp.tasks.base import PromptSet
from interp.tasks.natural_text import natural_text
from interp.tasks.repeated_tokens import repeated_tokens, second_half_mask
from interp.tokens import TokenBatch
from kernels import AttentionStatsRequest

KINDS = ("previous_token", "duplicate_token", "induction")


@dataclass(frozen=True)
class InductionFamilyParams:
    n_prompts: int = param(16, "number of prompts (default prompts only)")
    max_tokens: int = param(256, "tokens per default prompt")
    prompts: str = param("mixed", "default prompts: repeated random tokens, natural text, or half of each",
                         choices=("repeated", "natural", "mixed"))
    exclude_bos: bool = param(False, "ignore attention to the first token (TransformerLens exclude_bos)")
    exclude_current_token: bool = param(False, "ignore attention to the query's own token "
                                               "(TransformerLens exclude_current_token)")
    seed: int = param(0, "seed of the random-token prompts")
    batch_size: int = param(4, "prompts per forward pass")


def detection_keys(tokens: list[int], kind: str, exclude_bos: bool = False,
                   exclude_current_token: bool = False) -> list[list[int]]:
    """For each query i, the keys j with D[i, j] = 1 after the exclusions (ascending)."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown detection pattern {kind!r}; use one of {KINDS}")
    seen: dict[int, list[int]] = {}
    keys: list[list[int]] = []
    for i, token in enumerate(tokens):
        earlier = seen.get(token, [])
        if kind == "previous_token":
            row = [i - 1] if i >= 1 else []
        elif kind == "duplicate_token":
            row = list(earlier)
        else:
            row = [p + 1 for p in earlier]
        if exclude_bos:
            row = [j for j in row if j != 0]
        if exclude_current_token:
            row = [j for j in row if j != i]
        keys.append(row)
        seen.setdefault(token, []).append(i)
    return keys


def gather_request(batch: TokenBatch, kind: str, exclude_bos: bool,
                   exclude_current_token: bool) -> torch.Tensor:
    """[B, N, T + 1] key indices: T detection-key slots, then key i when it is excluded.

    -1 marks an empty slot (the kernel returns probability 0 there). Row 0's own key is key 0:
    with exclude_bos it is out of the row's mass already, so it is not subtracted again.
    """
    rows = [detection_keys(t, kind, exclude_bos, exclude_current_token) for t in batch.token_lists()]
    width = max((len(r) for prompt in rows for r in prompt), default=0)
    out = torch.full((batch.batch_size, batch.seq_len, width + 1), -1, dtype=torch.long)
    for b, prompt in enumerate(rows):
        for i, keys in enumerate(prompt):
            if keys:
                out[b, i, :len(keys)] = torch.tensor(keys)
        if exclude_current_token:
            n = len(prompt)
            out[b, :n, width] = torch.arange(n)
            if exclude_bos:
                out[b, 0, width] = -1
    return out


def not_first_key(batch: TokenBatch) -> torch.Tensor:
    """[B, N] bool key mask: every key but position 0 (for exclude_bos row masses)."""
    mask = torch.ones(batch.batch_size, batch.seq_len, dtype=torch.bool, device=batch.input_ids.device)
    mask[:, 0] = False
    return mask


def mul_scores(gathered: torch.Tensor, batch: TokenBatch, row_mass: torch.Tensor | None = None) -> torch.Tensor:
    """TransformerLens "mul" scores [b, H] from gathered probabilities [b, H, N, T + 1] and, with
    exclude_bos, each row's mass on keys >= 1 (`row_mass` [b, H, N]; None: rows sum to 1).

    A 2-token prompt with both exclusions has nothing left to score: TransformerLens returns
    0/0 = nan there, we return 0.
    """
    real = batch.mask.to(gathered.device)[:, None, :].to(gathered.dtype)          # [b, 1, N]
    numerator = (gathered[..., :-1].sum(-1) * real).sum(-1)
    mass = torch.ones_like(gathered[..., 0]) if row_mass is None else row_mass
    total = ((mass - gathered[..., -1]) * real).sum(-1)
    return numerator / total.clamp_min(1e-30)


def default_prompts(model: Model, params: InductionFamilyParams) -> PromptSet:
    """Repeated random-token sequences, natural-text windows, or half of each."""
    if params.n_prompts < 1:
        raise InvalidInput(f"n_prompts must be >= 1, got {params.n_prompts}")
    bos = 1 if model.prepend_bos else 0
    n_repeated = {"repeated": params.n_prompts, "natural": 0,
                  "mixed": (params.n_prompts + 1) // 2}[params.prompts]
    sets = []
    if n_repeated:
        sets.append(repeated_tokens(model, n_repeated, half=(params.max_tokens - bos) // 2, seed=params.seed))
    if params.n_prompts - n_repeated:
        sets.append(natural_text(model, params.n_prompts - n_repeated, params.max_tokens))
    return concat_prompt_sets(sets, model.pad_token_id)


def concat_prompt_sets(sets: list[PromptSet], pad_id: int) -> PromptSet:
    if len(sets) == 1:
        return sets[0]
    lists = [t for s in sets for t in s.tokens.token_lists()]
    return PromptSet(name="+".join(s.name for s in sets), tokens=TokenBatch.from_lists(lists, pad_id),
                     texts=[t for s in sets for t in s.texts],
                     metadata=[m for s in sets for m in s.metadata])


class InductionFamilyDetector(Detector):
    """previous_token, duplicate_token, induction. All three are checked on induction itself:
    previous-token heads are the first half of the induction circuit (Olsson et al. 2022);
    duplicate-token heads are checked there too (a weaker claim)."""

    Params = InductionFamilyParams
    behaviour = "loss on the second half of repeated random-token sequences"
    check_sizes = (8, 128)

    def __init__(self, kind: str, description: str, meaning: str):
        self.name = kind
        self.description = description
        self.meaning = meaning

    def scan(self, model: Model, prompts: Prompts = None, params: InductionFamilyParams | None = None,
             progress: Progress | None = None) -> HeadScores:
        params = self.make_params(params) if not isinstance(params, InductionFamilyParams) else params
        prompt_set = default_prompts(model, params) if prompts is None else as_prompt_set(model, prompts, self.name)
        check_context(model, prompt_set)
        current: dict = {}

        def request(layer: int, sub_batch: TokenBatch) -> AttentionStatsRequest:
            # One gather tensor per sub-batch, reused by every layer.
            if current.get("batch") is not sub_batch:
                keys = gather_request(sub_batch.to("cpu"), self.name, params.exclude_bos,
                                      params.exclude_current_token)
                current.update(batch=sub_batch, keys=keys.to(sub_batch.input_ids.device),
                               key_mask=not_first_key(sub_batch) if params.exclude_bos else None)
            return AttentionStatsRequest(gather_keys=current["keys"], key_mask=current["key_mask"])

        per_prompt = stream_attention_stats(
            model, prompt_set.tokens, request,
            reduce=lambda layer, stats, batch: mul_scores(stats["gathered"], batch, stats.get("key_mass")),
            batch_size=params.batch_size, progress=progress,
        )                                                                    # [L, n, H]
        per_prompt = per_prompt.permute(1, 0, 2).contiguous()                # [n, L, H]
        return HeadScores(
            detector=self.name, scores=per_prompt.mean(0), model_id=model.model_id,
            params=params_json(params), prompt_hash=prompt_set.hash,
            details={"per_prompt": per_prompt},
            info={"n_prompts": len(prompt_set), "prompt_set": prompt_set.name,
                  "definition": "TransformerLens head_detector, error_measure='mul', mean over prompts"},
        )

    def causal_behaviour(self, model: Model, scores: HeadScores, ablation: str, n_prompts: int,
                         max_tokens: int | None, seed: int, prompts=None) -> Behaviour:
        """Loss on the second half of repeated random-token sequences (`prompts`: such a
        PromptSet of your own), heads ablated at hook_z; "mean" ablation takes its means from 8
        other random repeated sequences (no shared tokens by design)."""
        bos = 1 if model.prepend_bos else 0
        half = max((max_tokens - bos) // 2, 4)
        if prompts is None:
            prompts = repeated_tokens(model, n_prompts, half=half, seed=seed + 1000)
        elif not all("half" in m and "offset" in m for m in prompts.metadata):
            raise InvalidInput("induction checks need repeated-token prompts "
                               "(interp.tasks.repeated_tokens.repeated_tokens)")
        else:
            half = prompts.metadata[0]["half"]
        positions = second_half_mask(prompts)
        means = None
        if ablation == "mean":
            means = head_means(model, repeated_tokens(model, 8, half=half, seed=seed + 2000).tokens)

        def measure(heads):
            with ablate_heads(model, heads, ablation, means):
                return next_token_loss(model, prompts.tokens, positions)
        return Behaviour("repeated-token loss (second half)", "loss", "top_k_hurts_more", measure,
                         len(prompts), f"{ablation} ablation of hook_z")


PREVIOUS_TOKEN = InductionFamilyDetector(
    "previous_token", "attention from each token to the token just before it (TransformerLens)",
    "mean attention from each token to the token just before it; ~1 = a "
    "previous-token head (Olsson et al. 2022, In-context Learning and Induction "
    "Heads; TransformerLens detect_head)")
DUPLICATE_TOKEN = InductionFamilyDetector(
    "duplicate_token", "attention to earlier occurrences of the same token (TransformerLens)",
    "mean attention from a repeated token to its earlier occurrences; ~1 = a "
    "duplicate-token head (Wang et al. 2022, Interpretability in the Wild "
    "(IOI); TransformerLens)")
INDUCTION = InductionFamilyDetector(
    "induction", "attention to the token after an earlier occurrence of the current token (TransformerLens)",
    "mean attention on repeated sequences to the token after the current token's "
    "earlier occurrence; ~1 = an induction head (Olsson et al. 2022)")
