"""Streamed detectors against references on real SmolLM2 weights: TransformerLens's
`detect_head` (previous/duplicate/induction) and the definitions computed on the full pattern
from `run_with_cache` (sink alpha, streaming mass)."""

import pytest
import torch
from transformer_lens.head_detector import detect_head

from interp.heads import get_detector
from interp.names import hook_name
from interp.tokens import TokenBatch
from interp.tasks.repeated_tokens import repeated_tokens

pytestmark = pytest.mark.slow

TEXT = ("The lock keeper walked the towpath every morning. He cleared the grates, checked the "
        "feeders and wrote in his notebook. The lock keeper walked back every evening, and the "
        "notebook grew thicker with every season.")


class SameTokens:
    """What `detect_head` needs of a model: cfg, to_tokens, run_with_cache, on our token ids,
    through the TransformerLens bridge's own cache (the reference path)."""

    def __init__(self, model, ids: torch.Tensor):
        self.cfg = model.bridge.cfg
        self.bridge = model.bridge
        self.ids = ids

    def to_tokens(self, seq):
        return self.ids

    def run_with_cache(self, *args, **kwargs):
        return self.bridge.run_with_cache(*args, **kwargs)


@pytest.fixture(scope="module")
def prompts(smollm2):
    repeated = repeated_tokens(smollm2, 1, half=24, seed=3).tokens
    natural = smollm2.tokenize([TEXT])
    return {"repeated": repeated, "natural": natural}


@pytest.fixture(scope="module")
def caches(smollm2, prompts):
    """The bridge's run_with_cache of each prompt (batch dim removed, as detect_head makes it)."""
    out = {}
    for key, batch in prompts.items():
        _, out[key] = smollm2.bridge.run_with_cache(
            batch.input_ids, names_filter=lambda n: n.endswith("hook_pattern"), remove_batch_dim=True)
    return out


@pytest.fixture(scope="module")
def patterns(smollm2, caches):
    """The full attention patterns of both prompts: [L, H, N, N]."""
    return {key: torch.stack([cache[hook_name("pattern", l)] for l in range(smollm2.n_layers)])
            for key, cache in caches.items()}


@pytest.mark.parametrize("detector, tl_name", [("previous_token", "previous_token_head"),
                                                ("duplicate_token", "duplicate_token_head"),
                                                ("induction", "induction_head")])
@pytest.mark.parametrize("exclude_bos, exclude_current", [(False, False), (True, False), (False, True), (True, True)])
def test_matches_transformer_lens_detect_head(smollm2, prompts, caches, detector, tl_name, exclude_bos, exclude_current):
    for key, batch in prompts.items():
        ours = get_detector(detector).scan(
            smollm2, prompts=batch,
            params={"exclude_bos": exclude_bos, "exclude_current_token": exclude_current})
        reference = detect_head(SameTokens(smollm2, batch.input_ids), "unused", tl_name, cache=caches[key],
                                exclude_bos=exclude_bos, exclude_current_token=exclude_current)
        assert (ours.scores - reference).abs().max() < 1e-4


def test_averages_per_prompt_scores_like_detect_head_on_a_list(smollm2, prompts):
    """detect_head on a list averages per-prompt scores; a padded batch of two must equal that."""
    batch = TokenBatch.from_lists([prompts["repeated"].token_lists()[0], prompts["natural"].token_lists()[0]],
                                  smollm2.pad_token_id)
    assert (batch.lengths[0] != batch.lengths[1]).item()     # so one of them is padded
    together = get_detector("induction").scan(smollm2, prompts=batch, params={"batch_size": 2})
    apart = [get_detector("induction").scan(smollm2, prompts=p).scores for p in prompts.values()]
    torch.testing.assert_close(together.scores, torch.stack(apart).mean(0), atol=1e-5, rtol=1e-4)
    assert together.details["per_prompt"].shape == (2, smollm2.n_layers, smollm2.n_heads)


def test_sink_alpha_matches_the_definition_on_the_full_pattern(smollm2, prompts, patterns):
    scores = get_detector("sink").scan(smollm2, prompts=prompts["natural"], params={"min_queries": 8})
    pattern = patterns["natural"]                                             # [L, H, N, N]
    alpha_first = pattern[:, :, :, 0].mean(-1)                                # queries i >= 0
    assert (scores.scores - alpha_first).abs().max() < 1e-4
    n = pattern.shape[-1]
    alpha = torch.stack([pattern[:, :, k:, k].mean(-1) for k in range(n)], dim=-1)
    eligible = torch.arange(n) >= 1
    eligible &= n - torch.arange(n) >= 8
    expected = int(((alpha > 0.1) & eligible).sum())
    assert scores.info["n_later_sinks"] == expected
    assert scores.info["sink_fraction"] == pytest.approx(float((alpha_first > 0.3).float().mean()), abs=1e-6)
    ids = prompts["natural"].input_ids[0]
    for entry in scores.info["later_sinks"][:10]:
        assert entry["token"] == smollm2.tokenizer.decode([int(ids[entry["position"]])])
        assert entry["alpha"] == pytest.approx(float(alpha[entry["layer"], entry["head"], entry["position"]]), abs=1e-3)


def test_streaming_mass_matches_the_definition_on_the_full_pattern(smollm2, prompts, patterns):
    sinks, windows = 2, (4, 8)
    scores = get_detector("streaming").scan(smollm2, prompts=prompts["natural"],
                                            params={"windows": windows, "sink_tokens": sinks})
    pattern = patterns["natural"]
    n = pattern.shape[-1]
    for w in windows:
        q = torch.arange(n)[:, None]
        k = torch.arange(n)[None, :]
        keep = ((k < sinks) | ((q - k >= 0) & (q - k < w))).float()
        mass = (pattern * keep).sum(-1)[:, :, sinks + w:].mean(-1)
        assert (scores.details[f"mass_w{w}"] - mass).abs().max() < 1e-4
        fraction = float((mass > 0.9).float().mean())
        assert scores.info["streaming_fraction"][str(w)] == pytest.approx(fraction, abs=1e-6)
    torch.testing.assert_close(scores.scores, scores.details[f"mass_w{windows[0]}"])
