"""Shared, session-scoped pieces of the safety tests: refusal tokens calibrated once on Qwen and
harmful prompts it refuses (chosen by those tokens, from the shared refusal_direction data)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

N_CALIBRATION_HARMFUL = 3
N_CALIBRATION_HARMLESS = 2
POOL = 10
NEW_TOKENS = 6  # "I'm sorry, but" is 5 tokens


@pytest.fixture(scope="session")
def instructions(shared_data):
    def read(name):
        return [r["instruction"] for r in
                json.loads((shared_data / "refusal_direction" / f"{name}.json").read_text())]
    return {"harmful": read("harmful_train"), "harmless": read("harmless_train")[:40],
            "harmful_val": read("harmful_val")}


@dataclass
class Calibration:
    tokens: object            # RefusalTokens
    harmful: object           # PromptSet
    harmless: object
    harmful_replies: object   # Generation
    harmless_replies: object
    new_tokens: int


@pytest.fixture(scope="session")
def calibration(qwen, instructions) -> Calibration:
    """Refusal tokens read off Qwen's greedy replies (6 tokens) to a few shared-data prompts."""
    from interp.refusal import greedy_generate, refusal_tokens_from
    from interp.tasks.safety import safety_prompt_set

    harmful = safety_prompt_set(qwen, instructions["harmful"][:N_CALIBRATION_HARMFUL], "harmful")
    harmless = safety_prompt_set(qwen, instructions["harmless"][:N_CALIBRATION_HARMLESS], "harmless")
    both = greedy_generate(qwen, harmful.texts + harmless.texts, max_new_tokens=NEW_TOKENS)
    replies, calm = both[:len(harmful)], both[len(harmful):]
    return Calibration(refusal_tokens_from(qwen, replies, calm), harmful, harmless, replies, calm,
                       NEW_TOKENS)


@pytest.fixture(scope="session")
def refused(qwen, instructions, calibration):
    """Harmful instructions (outside calibration) whose greedy reply Qwen starts with a refusal
    token, the most confident first."""
    from interp.refusal import rank_refused
    from interp.tasks.safety import safety_prompt_set

    pool = instructions["harmful"][N_CALIBRATION_HARMFUL:N_CALIBRATION_HARMFUL + POOL]
    chosen = [pool[i] for i in rank_refused(qwen, safety_prompt_set(qwen, pool, "harmful"),
                                            calibration.tokens)]
    assert len(chosen) >= 6, f"Qwen starts a refusal on only {len(chosen)} of {len(pool)} prompts"
    return chosen


@pytest.fixture(scope="session")
def refused_harmbench(qwen, instructions, calibration):
    """HarmBench prompts (harmful_val.json, a different source than the training prompts) whose
    greedy reply Qwen starts with a refusal token, the most confident first."""
    from interp.refusal import rank_refused
    from interp.tasks.safety import safety_prompt_set

    pool = instructions["harmful_val"][:12]
    chosen = [pool[i] for i in rank_refused(qwen, safety_prompt_set(qwen, pool, "harmful"),
                                            calibration.tokens)]
    assert len(chosen) >= 3, f"Qwen starts a refusal on only {len(chosen)} of {len(pool)} prompts"
    return chosen
