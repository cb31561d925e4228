"""Retrieval heads on real SmolLM2 weights: the streamed argmax scoring equals the reference
procedure computed from full attention patterns; needle prompts and their errors."""


import pytest
import torch

from interp.errors import InvalidInput
from interp.forward import greedy_decode
from interp.heads import get_detector
from interp.heads.retrieval import retrieval_decode
from interp.names import hook_name
from interp.tasks.needle import (Needle, default_haystack, default_needles, is_stop_token, load_haystack,
                                 needle_test, rouge1_recall)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def test_prompt(smollm2):
    return needle_test(smollm2, default_needles()[1], context_length=450, depth=50)


def test_needle_prompt_places_the_answer_span(smollm2, test_prompt):
    start, end = test_prompt.answer_span
    span_text = smollm2.tokenizer.decode(test_prompt.input_ids[start:end])
    assert span_text.strip() == test_prompt.needle.answer
    # as the reference: haystack + needle fill context_length - buffer (200); question and chat
    # markup come on top, and the answer fits in what is left
    assert 250 <= len(test_prompt.input_ids) <= 450
    # the needle sits at a sentence break around the middle of the haystack
    text = smollm2.tokenizer.decode(test_prompt.input_ids)
    assert ". " + test_prompt.needle.needle in text


@torch.no_grad()
def test_streamed_scores_equal_the_reference_procedure_on_full_patterns(smollm2, test_prompt):
    """Wu et al.'s loop: decode with full attention maps, take each head's top-1 key of the last
    query, credit 1/|answer| when it lies in the answer and equals the generated token."""
    ours = retrieval_decode(smollm2, test_prompt, max_new_tokens=30)

    rows = {}
    def keep_last_row(pattern, hook):
        rows[hook.name] = pattern[0, :, -1].detach().clone()          # [H, keys]
    names = [hook_name("pattern", l) for l in range(smollm2.n_layers)]
    start, end = test_prompt.answer_span
    prompt = torch.tensor(test_prompt.input_ids)
    hits = torch.zeros(smollm2.n_layers, smollm2.n_heads)

    def score(step, token):
        for layer, name in enumerate(names):
            top = rows[name].argmax(-1)
            inside = (top >= start) & (top < end)
            copied = prompt[top.clamp(max=len(prompt) - 1)] == token
            hits[layer] += (inside & copied).float() / (end - start)

    with smollm2.bridge.hooks(fwd_hooks=[(n, keep_last_row) for n in names]):
        tokens = greedy_decode(smollm2, test_prompt.input_ids, 30, on_step=score,
                               stop=lambda token: is_stop_token(smollm2, token))
    assert tokens == ours.tokens
    assert rouge1_recall(test_prompt.needle.answer, ours.response) > 0.5       # it answered
    torch.testing.assert_close(ours.hits, hits)
    assert hits.max() > 0.5                                                      # some head copied


def test_scan_reports_counts_and_tests(smollm2):
    scores = get_detector("retrieval").scan(
        smollm2, params={"context_lengths": (400,), "depths": (30.0,), "n_needles": 1, "max_new_tokens": 30})
    assert scores.info["n_tests"] == 1 and scores.info["n_answered"] == 1
    assert scores.info["n_retrieval_heads"] == int((scores.scores > 0.1).sum())
    assert scores.details["per_test"].shape == (1, smollm2.n_layers, smollm2.n_heads)
    assert scores.info["tests"][0]["recall"] > 0.5
    # the top retrieval heads are among the induction-like copy heads of layers 17-23
    assert all(17 <= layer <= 23 for layer, _ in scores.top_heads(3))


def test_bad_needle_requests_are_clear_errors(smollm2, tmp_path):
    needle = default_needles()[0]
    with pytest.raises(InvalidInput, match="exceeds"):
        needle_test(smollm2, needle, context_length=smollm2.n_ctx + 1, depth=50)
    short = tmp_path / "short.txt"
    short.write_text("Only a few words here. Not a haystack.")
    with pytest.raises(InvalidInput, match="haystack has"):
        needle_test(smollm2, needle, 600, 50, haystack=load_haystack(short))
    with pytest.raises(InvalidInput, match="haystack has"):
        # the project's own haystack is long but not endless
        needle_test(smollm2, needle, 8000, 50, haystack=default_haystack())
    with pytest.raises(InvalidInput, match="verbatim"):
        Needle("The sky is green.", "What colour is the sky?", "blue")
    with pytest.raises(InvalidInput, match="percentage"):
        needle_test(smollm2, needle, 600, 120)
    with pytest.raises(InvalidInput, match="no haystack"):
        load_haystack(tmp_path / "missing")
    with pytest.raises(InvalidInput, match="needle tests"):
        get_detector("retrieval").scan(smollm2, prompts=["plain text"])


def test_default_haystack_supports_4096_token_tests(smollm2):
    test = needle_test(smollm2, default_needles()[2], context_length=4096, depth=100)
    assert 3900 < len(test.input_ids) <= 4096
    start, end = test.answer_span
    assert smollm2.tokenizer.decode(test.input_ids[start:end]).strip() == "Captain Biscuit"
