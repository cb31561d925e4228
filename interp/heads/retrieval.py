"""Retrieval heads: heads that copy the needle out of a long context while the model answers.

Definition (Wu et al., "Retrieval Head Mechanistically Explains Long-Context Factuality", 2024;
procedure as in nightdessert/Retrieval_Head, `retrieval_head_detection.py`):

- a needle-in-a-haystack prompt (`interp.tasks.needle`); the prompt minus its last token is
  prefilled, then greedy decoding starts by feeding that last token (up to 50 steps, stopping
  after a newline token or EOS);
- at every decoding step, head (l, h) earns 1 / |answer tokens| when its top-1 attended key lies
  inside the answer span and the token generated at that step equals the token at that key
  (copy-paste);
- a test counts only if the model answered it: ROUGE-1 recall of the answer in the response
  > 0.5; a head's retrieval score is its mean over the answered tests;
- heads scoring > 0.1 are retrieval heads (the paper finds fewer than 5 % of heads).

Only the argmax key of each decoding query is needed (`AttentionStatsRequest(argmax=True)`),
never the attention pattern, so contexts of several thousand tokens run on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.ablation import ablate_heads, head_means
from interp.errors import InvalidInput
from interp.forward import greedy_decode, kernel_attention
from interp.heads.base import Detector, Progress, param, params_json
from interp.heads.behaviour import Behaviour
from interp.models import Model
from interp.scores import HeadScores
from interp.tasks.base import PromptSet
from interp.tasks.natural_text import natural_text
from interp.tasks.needle import (Needle, NeedleTest, as_prompt_set, default_needles, is_stop_token,
                                 load_haystack, needle_tests, rouge1_recall)
from kernels import AttentionStatsRequest


@dataclass(frozen=True)
class RetrievalParams:
    context_lengths: tuple[int, ...] = param((1000, 2000), "needle-test context lengths in tokens",
                                             bounds=(16, 131072))
    depths: tuple[float, ...] = param((0.0, 25.0, 50.0, 75.0, 100.0), "needle depths, percent of the haystack",
                                      bounds=(0.0, 100.0))
    n_needles: int = param(5, "how many of the needles to use (the project's own set has 5)",
                           bounds=(1, 1000))
    max_new_tokens: int = param(50, "greedy decoding steps per test (the reference: 50)",
                                bounds=(1, 4096))
    threshold: float = param(0.1, "heads above this score are retrieval heads (Wu et al.)")
    rouge_threshold: float = param(0.5, "a test counts when the answer's ROUGE-1 recall exceeds this")
    buffer: int = param(200, "tokens of each context length kept for question and answer (reference: 200)",
                        bounds=(0, 131072))
    chat: str = param("auto", "wrap prompts in the chat template: auto (if the model has one), yes, no",
                      choices=("auto", "yes", "no"))
    haystack: str | None = param(None, "haystack .txt file or directory (default: the project's own essays)")


@dataclass
class DecodeResult:
    tokens: list[int]
    hits: torch.Tensor          # [L, H] the test's retrieval score per head
    response: str


def retrieval_decode(model: Model, test: NeedleTest, max_new_tokens: int = 50) -> DecodeResult:
    """Decode one needle test and score every head's copy-paste behaviour (see module doc)."""
    start, end = test.answer_span
    prompt = torch.tensor(test.input_ids)
    state: dict = {"decoding": False, "n_keys": {}, "argmax": {}}
    hits = torch.zeros(model.n_layers, model.n_heads)

    def stats_for(layer: int, batch: int, n_queries: int, n_keys: int):
        if not state["decoding"]:
            return None                       # the prefill needs no statistics
        state["n_keys"][layer] = n_keys
        return AttentionStatsRequest(argmax=True)

    def on_stats(layer: int, stats: dict) -> None:
        state["argmax"][layer] = stats["argmax"][0, :, -1].cpu()                  # [H]

    def on_step(step: int, token: int) -> None:
        total = len(test.input_ids) + step          # key slots once this step's query is cached
        for layer, keys in state["argmax"].items():
            # a sliding-window layer's cache holds only its last n_keys slots: map to positions
            position = keys + (total - state["n_keys"][layer])
            inside = (position >= start) & (position < end)
            copied = prompt[position.clamp(0, len(prompt) - 1)] == token
            hits[layer] += (inside & copied).float() / (end - start)
        state["argmax"].clear()

    with kernel_attention(model, stats=stats_for, on_stats=on_stats):
        tokens = greedy_decode(model, test.input_ids, max_new_tokens, on_step=on_step,
                               on_prefilled=lambda: state.update(decoding=True),
                               stop=lambda token: is_stop_token(model, token))
    response = model.tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return DecodeResult(tokens, hits, response)


def build_tests(model: Model, params: RetrievalParams) -> list[NeedleTest]:
    if params.n_needles < 1:
        raise InvalidInput(f"n_needles must be >= 1, got {params.n_needles}")
    needles = default_needles()[: params.n_needles]
    haystack = None if params.haystack is None else load_haystack(params.haystack)
    chat = {"auto": None, "yes": True, "no": False}[params.chat]
    return needle_tests(model, params.context_lengths, params.depths, needles, haystack,
                        params.buffer, chat)


def tests_from_prompt_set(model: Model, prompts: PromptSet) -> list[NeedleTest]:
    """Needle tests back from a PromptSet made by `interp.tasks.needle.as_prompt_set`."""
    tests = []
    for ids, meta in zip(prompts.tokens.token_lists(), prompts.metadata):
        if "answer_span" not in meta or "answer" not in meta:
            raise InvalidInput("retrieval needs needle prompts (interp.tasks.needle.as_prompt_set), "
                               "whose metadata carry the answer and its token span")
        needle = Needle(needle=meta["answer"], question=meta.get("question", ""), answer=meta["answer"])
        tests.append(NeedleTest(ids, tuple(meta["answer_span"]), needle,
                                int(meta.get("context_length", len(ids))), float(meta.get("depth", 0))))
    return tests


class RetrievalDetector(Detector):
    name = "retrieval"
    description = "retrieval heads: copy-paste from the needle while answering (Wu et al.)"
    meaning = ("share of needle-answer tokens the head copies from the needle while the "
              "model answers; above 0.1 = a retrieval head (Wu et al. 2024, Retrieval Head "
              "Mechanistically Explains Long-Context Factuality)")
    Params = RetrievalParams
    behaviour = "needle recall (ROUGE-1) with these heads ablated"
    check_sizes = (5, None)

    def cli_overrides(self, n_prompts: int | None, max_tokens: int | None) -> dict:
        out = {}
        if n_prompts is not None:
            out["n_needles"] = n_prompts
        if max_tokens is not None:
            out["context_lengths"] = tuple(sorted({max(max_tokens // 2, 300), max_tokens}))
        return out

    def scan(self, model: Model, prompts=None, params: RetrievalParams | None = None,
             progress: Progress | None = None) -> HeadScores:
        params = params if isinstance(params, RetrievalParams) else self.make_params(params)
        if prompts is None:
            tests = build_tests(model, params)
        elif isinstance(prompts, PromptSet):
            tests = tests_from_prompt_set(model, prompts)
        elif isinstance(prompts, list) and prompts and all(isinstance(t, NeedleTest) for t in prompts):
            tests = prompts
        else:
            raise InvalidInput("retrieval prompts are needle tests: a list of "
                               "interp.tasks.needle.NeedleTest or their PromptSet (or None for defaults)")
        prompt_set = as_prompt_set(model, tests)
        per_test, recalls, responses = [], [], []
        for index, test in enumerate(tests):
            result = retrieval_decode(model, test, params.max_new_tokens)
            per_test.append(result.hits)
            recalls.append(rouge1_recall(test.needle.answer, result.response))
            responses.append(result.response)
            if progress is not None:
                progress((index + 1) / len(tests), f"needle test {index + 1}/{len(tests)} "
                         f"({test.context_length} tokens, {test.depth:g}%): recall {recalls[-1]:.2f}")
        hits = torch.stack(per_test)                                          # [n, L, H]
        recall = torch.tensor(recalls)
        answered = recall > params.rouge_threshold
        scores = hits[answered].mean(0) if answered.any() else torch.zeros(model.n_layers, model.n_heads)
        n_above = int((scores > params.threshold).sum())
        info = {
            "n_tests": len(tests), "n_answered": int(answered.sum()),
            "mean_recall": float(recall.mean()),
            "n_retrieval_heads": n_above,
            "retrieval_head_fraction": n_above / scores.numel(),
            "threshold": params.threshold,
            "tests": [{**t.to_json(), "response": r, "recall": round(c, 4)}
                      for t, r, c in zip(tests, responses, recalls)],
        }
        if not answered.any():
            info["warning"] = ("the model answered no needle test (ROUGE-1 recall > "
                               f"{params.rouge_threshold}); scores are zero. Try shorter contexts.")
        return HeadScores(detector=self.name, scores=scores, model_id=model.model_id,
                          params=params_json(params), prompt_hash=prompt_set.hash,
                          details={"per_test": hits, "recall": recall, "answered": answered.float()},
                          info=info)

    def causal_behaviour(self, model: Model, scores: HeadScores, ablation: str, n_prompts: int,
                         max_tokens: int | None, seed: int, prompts=None) -> Behaviour:
        """Needle recall (ROUGE-1) of greedy answers with the heads ablated at hook_z, on the
        scan's own needle tests that the model answered (recall can only drop from there), or
        on `prompts` (a list of NeedleTest); the first `n_prompts`. "mean" ablation takes its
        means from natural text."""
        params = self.make_params({k: tuple(v) if isinstance(v, list) else v for k, v in scores.params.items()})
        tests = prompts
        if tests is not None:
            if not tests or not all(isinstance(t, NeedleTest) for t in tests):
                raise InvalidInput("retrieval checks take needle tests: a list of interp.tasks.needle.NeedleTest")
        else:
            tests = build_tests(model, params)
            answered = scores.details.get("answered")
            if answered is not None and len(answered) == len(tests) and answered.bool().any():
                tests = [t for t, ok in zip(tests, answered.bool().tolist()) if ok]
        tests = tests[:n_prompts]
        means = None
        if ablation == "mean":
            means = head_means(model, natural_text(model, 8, 256).tokens)

        def measure(heads):
            recalls = []
            with ablate_heads(model, heads, ablation, means):
                for test in tests:
                    tokens = greedy_decode(model, test.input_ids, params.max_new_tokens,
                                           stop=lambda token: is_stop_token(model, token))
                    response = model.tokenizer.decode(tokens, skip_special_tokens=True)
                    recalls.append(rouge1_recall(test.needle.answer, response))
            return sum(recalls) / len(recalls)
        return Behaviour("needle recall (ROUGE-1)", "recall", "top_k_hurts_more", measure, len(tests),
                         f"{ablation} ablation of hook_z")

    def summary(self, scores: HeadScores) -> dict:
        info = scores.info
        return {**super().summary(scores), **{k: info.get(k) for k in (
            "threshold", "n_retrieval_heads", "retrieval_head_fraction", "n_answered", "n_tests",
            "mean_recall", "warning")}}

    def summary_lines(self, scores: HeadScores) -> list[str]:
        info = scores.info
        lines = [f"retrieval heads (> {info['threshold']}): {info['n_retrieval_heads']} "
                 f"({100 * info['retrieval_head_fraction']:.1f}% of heads); answered "
                 f"{info['n_answered']}/{info['n_tests']} needle tests"]
        if "warning" in info:
            lines.append("warning: " + info["warning"])
        return lines + super().summary_lines(scores)


RETRIEVAL = RetrievalDetector()
