"""interp.forward on real SmolLM2 weights: each saving equals the plain forward it replaces, the
two engines agree where both apply, and every combination that cannot work is refused first."""

from __future__ import annotations

import pytest
import torch

from interp.errors import InvalidInput
from interp.forward import (HeadAblation, StopForward, attention_owned_hooks, encode_prefix,
                            generate, hook_gate, run, run_batched)
from interp.names import hook_name
from interp.tokens import TokenBatch
from kernels import AttentionEdit, AttentionStatsRequest, HeadScale

PROMPTS = ["When Mary and John went to the store, John gave a drink to",
           "The capital of France is"]
HEADS = ((3, 2), (20, 5), (25, 0))


@pytest.fixture(scope="module")
def tokens(smollm2):
    return smollm2.tokenize(PROMPTS)


@pytest.fixture(scope="module")
def plain(smollm2, tokens):
    """The plain HF forward: logits [b, n, V] and final-norm hidden states [b, n, d]."""
    with torch.no_grad():
        out = smollm2.hf_model(tokens.input_ids, attention_mask=tokens.mask.long(),
                               output_hidden_states=True)
    return out.logits, out.hidden_states[-1]


def _final(values, tokens):
    return values[torch.arange(tokens.batch_size), tokens.final_positions]


@torch.no_grad()
def test_outputs_equal_the_plain_hf_forward(smollm2, tokens, plain):
    logits, hidden = plain
    real = tokens.mask[..., None]
    assert torch.allclose(run(smollm2, tokens), _final(logits, tokens), atol=1e-4)
    assert torch.allclose(run(smollm2, tokens, output="final_logprobs"),
                          _final(logits, tokens).log_softmax(-1), atol=1e-4)
    assert torch.allclose(run(smollm2, tokens, output="final_hidden"), _final(hidden, tokens),
                          atol=1e-5)
    assert torch.allclose(run(smollm2, tokens, output="hidden") * real, hidden * real, atol=1e-5)
    assert torch.allclose(run(smollm2, tokens, output="logits") * real, logits * real, atol=1e-4)
    assert run(smollm2, tokens, output=None) is None


@torch.no_grad()
def test_start_layer_equals_the_full_forward(smollm2, tokens, plain):
    layer = 12
    kept = {}

    def keep(resid, hook=None):
        kept["resid"] = resid.detach().clone()

    run(smollm2, tokens, output=None, hooks=[(hook_name("resid_pre", layer), keep)])
    resumed = run(smollm2, tokens, start_layer=layer, start_residual=kept["resid"])
    assert torch.allclose(resumed, _final(plain[0], tokens), atol=1e-4)
    assert all("forward" not in vars(block) for block in smollm2.bridge.blocks)  # restored
    # the kernel engine resumes the same way
    resumed = run(smollm2, tokens, start_layer=layer, start_residual=kept["resid"], engine="kernel")
    assert torch.allclose(resumed, _final(plain[0], tokens), atol=1e-3)


@torch.no_grad()
def test_zero_ablation_equals_head_scale_zero_on_the_kernel_engine(smollm2, tokens, plain):
    zero = run(smollm2, tokens, ablation=HeadAblation(HEADS, "zero"))
    scaled = run(smollm2, tokens, edit=AttentionEdit((HeadScale(HEADS, 0.0),)))
    assert torch.allclose(zero, scaled, atol=1e-4)
    assert (zero - _final(plain[0], tokens)).abs().max() > 0.1  # the heads mattered


@torch.no_grad()
@pytest.mark.parametrize("method", ["mean", "query_scale", "query_mean"])
def test_every_ablation_runs_the_same_on_both_engines(smollm2, tokens, method):
    """hook_q and hook_z sit on the q/o projections, which the kernel engine runs too."""
    means = torch.randn(smollm2.n_layers, smollm2.n_heads, smollm2.d_head, generator=torch.Generator().manual_seed(0))
    ablation = HeadAblation(HEADS, method, means=means if method == "mean" else None)
    bridge = run(smollm2, tokens, ablation=ablation)
    kernel = run(smollm2, tokens, ablation=ablation, engine="kernel")
    assert torch.allclose(bridge, kernel, atol=1e-3)
    assert (bridge - run(smollm2, tokens)).abs().max() > 0.01


@torch.no_grad()
def test_row_masks_ablate_per_row(smollm2, tokens):
    """Row r of a batch with row masks equals a forward of that prompt with its own heads."""
    layer = 20
    masks = torch.zeros(2, smollm2.n_heads, dtype=torch.bool)
    masks[0, 5] = masks[1, [1, 4]] = True
    both = run(smollm2, tokens, ablation=HeadAblation(((3, 2),), row_masks={layer: masks}))
    for row, heads in ((0, [(3, 2), (20, 5)]), (1, [(3, 2), (20, 1), (20, 4)])):
        alone = run(smollm2, tokens[row:row + 1], ablation=HeadAblation(tuple(heads)))
        assert torch.allclose(both[row], alone[0], atol=1e-4)


@torch.no_grad()
def test_kernel_engine_refuses_exactly_the_hooks_that_do_not_fire(smollm2, tokens):
    fired = {"bridge": set(), "kernel": set()}
    names = [n for n in smollm2.bridge.hook_dict if n.startswith("blocks.4.")]
    owned = attention_owned_hooks(smollm2)
    allowed = [n for n in names if id(smollm2.bridge.hook_dict[n]) not in owned]
    refused = [n for n in names if id(smollm2.bridge.hook_dict[n]) in owned]

    def record(engine):
        def hook(activation, hook=None):
            fired[engine].add(hook.name)
        return hook

    gated = {n for n in names if hook_gate(smollm2, n)}
    run(smollm2, tokens, output=None, hooks=[(n, record("bridge")) for n in names if n not in gated])
    run(smollm2, tokens, output=None, engine="kernel",
        hooks=[(n, record("kernel")) for n in allowed if n not in gated])
    canonical = lambda ns: {smollm2.bridge.hook_dict[n].name for n in ns}  # noqa: E731
    assert fired["bridge"] - fired["kernel"] <= canonical(refused)     # what is lost is refused
    assert canonical(allowed) - canonical(gated) <= fired["kernel"]     # what is allowed fires
    assert {hook_name(a, 4) for a in ("pattern", "attn_scores")} <= set(refused)
    assert smollm2.bridge.hook_dict[hook_name("attn_out", 4)].name in canonical(refused)
    for name in set(refused) - gated:
        with pytest.raises(InvalidInput, match="does not fire on the kernel engine"):
            run(smollm2, tokens, engine="kernel", hooks=[(name, record("kernel"))])


@torch.no_grad()
def test_shared_prefix_and_per_row_variants_equal_the_full_forward(smollm2):
    """Ships' batching: a prefix run once, then per row a variant of it recomputed from layer L
    under that row's ablation, equals running each whole prompt with the ablation."""
    prefix = smollm2.tokenize(["When Mary and John went to the store,"])
    full = smollm2.tokenize(["When Mary and John went to the store, John gave a drink to",
                             "When Mary and John went to the store, Mary said"])
    n = prefix.seq_len
    assert all(t[:n] == prefix.token_lists()[0] for t in full.token_lists())
    suffix = TokenBatch.from_lists([t[n:] for t in full.token_lists()], smollm2.pad_token_id)
    shared = encode_prefix(smollm2, prefix)
    assert torch.allclose(run(smollm2, suffix, prefix=shared), run(smollm2, full), atol=1e-4)

    layer = 18
    masks = torch.zeros(2, smollm2.n_heads, dtype=torch.bool)
    masks[0, 2] = masks[1, 7] = True
    ablation = HeadAblation(row_masks={layer: masks})
    kept = {}

    def keep(key):
        def hook(resid, hook=None):
            kept[key] = resid.detach().clone()
        return hook

    resid = hook_name("resid_pre", layer)
    run(smollm2, prefix, output=None, hooks=[(resid, keep("prefix"))])
    run(smollm2, suffix, output=None, prefix=shared, hooks=[(resid, keep("suffix"))])
    variants = encode_prefix(smollm2, TokenBatch.from_lists(prefix.token_lists() * 2),
                             ablation=ablation, start_layer=layer,
                             start_residual=kept["prefix"].expand(2, -1, -1), base=shared)
    batched = run(smollm2, suffix, prefix=variants.for_rows(torch.tensor([0, 1])),
                  ablation=ablation, start_layer=layer, start_residual=kept["suffix"])
    assert torch.allclose(batched, run(smollm2, full, ablation=ablation), atol=1e-4)
    with pytest.raises(InvalidInput, match="say which one each row continues"):
        run(smollm2, suffix, prefix=variants)
    with pytest.raises(InvalidInput, match="one of its 2 variants"):
        run(smollm2, suffix, prefix=variants.for_rows(torch.tensor([0, 2])))


@torch.no_grad()
def test_stop_forward_and_run_batched(smollm2, tokens):
    def stop(resid, hook=None):
        raise StopForward
    assert run(smollm2, tokens, hooks=[(hook_name("resid_pre", 2), stop)]) is None
    seen = []
    batched = run_batched(smollm2, tokens, batch_size=1, output="logits",
                          progress=lambda fraction, message: seen.append(fraction))
    assert batched.shape[:2] == tokens.input_ids.shape and seen == [0.5, 1.0]
    real = tokens.mask[..., None]
    assert torch.allclose(batched * real, run(smollm2, tokens, output="logits") * real, atol=1e-4)


def test_batched_generate_equals_one_prompt_at_a_time(smollm2):
    prompts = ["The capital of France is", "When Mary and John went to the store, John gave a drink to",
               "One, two, three,"]
    together = generate(smollm2, prompts, max_new_tokens=4, batch_size=3)
    for i, prompt in enumerate(prompts):
        alone = generate(smollm2, [prompt], max_new_tokens=4)
        assert together.token_ids[i] == alone.token_ids[0]
        assert torch.allclose(together.first_logprobs[i], alone.first_logprobs[0], atol=1e-4)
        assert together[i].text == alone.texts[0] and together[i].prompt == prompt
    # with an edit, prompts are batched by length; the edit still applies to each alike
    edit = AttentionEdit((HeadScale(tuple((l, h) for l in range(20, 30) for h in range(9)), 0.0),))
    edited = generate(smollm2, prompts[:2], max_new_tokens=2, edit=edit)
    for i, prompt in enumerate(prompts[:2]):
        assert edited.token_ids[i] == generate(smollm2, [prompt], max_new_tokens=2, edit=edit).token_ids[0]
    assert edited.token_ids != [ids[:2] for ids in together.token_ids[:2]]
    assert edited.edit == edit.to_dict()


@torch.no_grad()
def test_refused_combinations_are_clear_errors(smollm2, tokens):
    means = torch.zeros(smollm2.n_layers, smollm2.n_heads, smollm2.d_head)
    edit = AttentionEdit((HeadScale(((3, 2),), 0.0),))
    resid = torch.zeros(2, tokens.seq_len, smollm2.d_model)
    cases = [
        (dict(edit=edit, engine="bridge"), "engine='kernel'"),
        (dict(stats=AttentionStatsRequest(entropy=True), engine="bridge"), "engine='kernel'"),
        (dict(on_stats=lambda layer, stats: None), "stats="),
        (dict(edit=edit, hooks=[(hook_name("pattern", 3), lambda p, hook=None: None)]),
         "does not fire on the kernel engine"),
        (dict(stats=AttentionStatsRequest(entropy=True), bwd_hooks=[(hook_name("z", 3), lambda g, hook=None: None)]),
         "no backward"),
        (dict(ablation=HeadAblation(((3, 2),), "mean")), "needs `means`"),
        (dict(ablation=HeadAblation(((3, 2),), "mean", means=means[:2])), "must be \\[n_layers"),
        (dict(ablation=HeadAblation(((3, 9),))), "does not exist"),
        (dict(ablation=HeadAblation(method="erase")), "unknown ablation method"),
        (dict(ablation=HeadAblation(row_masks={3: torch.ones(5, smollm2.n_heads, dtype=torch.bool)})),
         "for 5 rows but the batch has 2"),
        (dict(start_layer=5), "needs start_residual"),
        (dict(start_layer=5, start_residual=resid[:, :3]), "must be \\[batch, seq, d_model\\]"),
        (dict(start_layer=30, start_residual=resid), "start_layer must lie"),
        (dict(start_layer=5, start_residual=resid, ablation=HeadAblation(((3, 2),))),
         "below start_layer=5"),
        (dict(output="probs"), "unknown output"),
        (dict(engine="triton"), "unknown engine"),
        (dict(hooks=[("blocks.3.attn.hook_zz", lambda z, hook=None: None)]), "unknown hook name"),
        (dict(output=None, hooks=[("hook_unembed", lambda x, hook=None: None)]), "output='logits'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InvalidInput, match=message):
            run(smollm2, tokens, **kwargs)
    with pytest.raises(InvalidInput, match="per-row ablation masks"):
        generate(smollm2, PROMPTS, ablation=HeadAblation(row_masks={3: torch.ones(2, 9, dtype=torch.bool)}))
    with pytest.raises(InvalidInput, match="token ids already"):
        generate(smollm2, tokens, chat=True)
    with pytest.raises(InvalidInput, match="max_new_tokens must be >= 1"):
        generate(smollm2, PROMPTS, max_new_tokens=0)
    with pytest.raises(InvalidInput, match="no prompts"):
        generate(smollm2, [])


@pytest.mark.slow
@torch.no_grad()
def test_gemma_sliding_window_layers_resume_and_refuse_prefixes(gemma):
    """Gemma-3 mixes sliding-window and full layers: resuming at a layer still equals the full
    forward (Hugging Face builds both masks); a shared-prefix cache is refused."""
    tokens = gemma.tokenize(PROMPTS)
    full = run(gemma, tokens)
    layer = 7
    kept = {}
    run(gemma, tokens, output=None,
        hooks=[(hook_name("resid_pre", layer), lambda r, hook=None: kept.setdefault("r", r.clone()))])
    assert torch.allclose(run(gemma, tokens, start_layer=layer, start_residual=kept["r"]), full, atol=1e-3)
    with pytest.raises(InvalidInput, match="sliding"):
        encode_prefix(gemma, gemma.tokenize(["Hello"]))
