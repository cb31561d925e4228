"""Logit lens and direct logit attribution (DLA): where in the residual stream the model's answer
appears, and which heads write it there.

    lens = logit_lens_and_dla(model, "When Mary and John went to the store, John gave a drink to",
                              target=" Mary", wrong=" John")
    lens.lens_logprob      # [n_layers + 1] log p(target) read off the residual after each layer
    lens.lens_rank         # [n_layers + 1] the target's rank there (1 = top)
    lens.dla_heads         # [n_layers, n_heads] each head's direct effect on logit(target) - logit(wrong)
    lens.components()      # every term of the decomposition, which sums to lens.final_metric

## Logit lens (nostalgebraist, "interpreting GPT: the logit lens", 2020)
The residual stream at the prediction position after block L (`hook_resid_post`; "embed" is the
residual entering block 0), put through the model's own final norm and unembedding as if it were
the last layer: log-softmax -> the target's log-probability and rank per layer. After the last
block this is exactly the model's output.

## Direct logit attribution (Elhage et al., "A Mathematical Framework for Transformer Circuits",
2021; TransformerLens `ActivationCache.apply_ln_to_stack` / `logit_attrs`)
The final residual at the prediction position is a sum of what each component wrote:
    resid_final = embed + sum_L (attn_L + mlp_L),   attn_L = sum_h z_h W_O[h] (+ bias)
The final norm is RMSNorm, x -> x / s(x) * g, non-linear only through the scale s(x). Freezing s
at its value on this forward (cached at `ln_final.hook_scale`, as `apply_ln_to_stack` does) makes
the norm linear, so the logit of the target (minus the wrong token's) splits into one term per
component:  (c / s) . (g * (W_U[:, target] - W_U[:, wrong])).
The terms sum to the model's own final logit (difference) exactly; the approximation is in
reading a term as "this head's effect", since removing a head would also change s.

Models with a norm after attention (Gemma-3's post_attention_layernorm) get the same treatment
inside each block: the layer's attention output is (sum_h z_h W_O[h]) / s_post * g_post, linear in
each head once s_post is frozen (`interp.head_writes`). What the heads do not explain
of a layer's attention output (an output bias) is reported as that layer's "attention rest".
Models with final logit soft-capping (Gemma-2) are attributed before the cap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.errors import InvalidInput
from interp.forward import run, unembed
from interp.head_writes import head_writes, norm_gain
from interp.models import Model
from interp.names import hook_name
from interp.tokens import TokenBatch

# Long prompts make the lens no more informative (it reads one position) and the forward slower.
MAX_LENS_TOKENS = 2048


@dataclass
class LensResult:
    """The logit lens and the DLA of one prompt, at its last position (the next-token prediction).

    tokens:            N decoded prompt tokens.
    target, wrong:     the tokens explained (wrong None: the target's logit alone), and their ids.
    lens_layers:       ["embed", "L0", ..., "L{n-1}"]: where the lens reads the residual.
    lens_logprob:      [n_layers + 1] log p(target) through the final norm and unembedding.
    lens_rank:         [n_layers + 1] the target's rank among the vocabulary (1 = top).
    lens_metric:       [n_layers + 1] logit(target) - logit(wrong) (or logit(target)) per layer.
    dla_heads:         [n_layers, n_heads] each head's direct contribution to the metric.
    dla_attn_rest:     [n_layers] what a layer's attention adds beyond its heads (biases).
    dla_mlps:          [n_layers] each MLP's direct contribution.
    dla_embed:         the embeddings' contribution (the residual entering block 0).
    dla_unembed_bias:  b_U[target] - b_U[wrong] (0 for models without an unembedding bias).
    final_metric:      the model's own logit(target) - logit(wrong) from the forward.
    top_next:          [{"token", "id", "prob"}] the model's top 5 next tokens.
    """

    text: str
    tokens: list[str]
    target: str
    target_id: int
    wrong: str | None
    wrong_id: int | None
    lens_layers: list[str]
    lens_logprob: torch.Tensor
    lens_rank: torch.Tensor
    lens_metric: torch.Tensor
    dla_heads: torch.Tensor
    dla_attn_rest: torch.Tensor
    dla_mlps: torch.Tensor
    dla_embed: float
    dla_unembed_bias: float
    final_metric: float
    top_next: list[dict]

    @property
    def metric_name(self) -> str:
        return (f"logit({self.target!r}) - logit({self.wrong!r})" if self.wrong is not None
                else f"logit({self.target!r})")

    def components(self) -> dict[str, float]:
        """{"embed", "L{l}.H{h}", "L{l}.attn_rest", "L{l}.mlp", "unembed_bias"}: every term of the
        decomposition; their sum is `final_metric` (up to float rounding)."""
        terms = {"embed": self.dla_embed}
        for layer in range(self.dla_heads.shape[0]):
            for head in range(self.dla_heads.shape[1]):
                terms[f"L{layer}.H{head}"] = float(self.dla_heads[layer, head])
            terms[f"L{layer}.attn_rest"] = float(self.dla_attn_rest[layer])
            terms[f"L{layer}.mlp"] = float(self.dla_mlps[layer])
        terms["unembed_bias"] = self.dla_unembed_bias
        return terms

    def top_heads(self, k: int = 10) -> list[dict]:
        """The k heads with the largest |direct contribution|: [{"layer", "head", "dla"}]."""
        flat = self.dla_heads.flatten()
        order = flat.abs().argsort(descending=True)[:k]
        n_heads = self.dla_heads.shape[1]
        return [{"layer": int(i) // n_heads, "head": int(i) % n_heads, "dla": float(flat[i])}
                for i in order]


def token_id(model: Model, token: str | int, role: str) -> int:
    """The id of a one-token string (" Mary") or an id, or an InvalidInput naming the fix."""
    if isinstance(token, int):
        vocab = model.bridge.W_U.shape[-1]
        if not 0 <= token < vocab:
            raise InvalidInput(f"{role} token id {token} is outside the vocabulary 0..{vocab - 1}")
        return token
    if not token:
        raise InvalidInput(f"the {role} token is empty: type one token, e.g. ' Mary' "
                           "(most tokenizers put the space in front of a word)")
    try:
        return model.single_token_id(token)
    except InvalidInput as exc:
        raise InvalidInput(f"{role} token: {exc}") from None


def norm_module_dtype(module) -> torch.dtype:
    return next(module.parameters()).dtype


def logit_lens_and_dla(model: Model, text: str, target: str | int | None = None,
                       wrong: str | int | None = None) -> LensResult:
    """The logit lens and the direct logit attribution of every head for `text`'s next token.

    target: the token to explain, one token (" Mary") or an id; None: the model's top prediction.
    wrong:  optional second token; the metric is then logit(target) - logit(wrong).
    One forward; reads the residual stream, each head's z, the post-attention norms' scales (where
    the model has them) and the final norm's scale at the last position only.
    Raises InvalidInput for an empty prompt, a too-long prompt, or a target/wrong that is not one
    token (checked before the forward).
    """
    if not text or not text.strip():
        raise InvalidInput("the prompt is empty: type some text whose next token to explain")
    target_id = None if target is None or target == "" else token_id(model, target, "target")
    wrong_id = None if wrong is None or wrong == "" else token_id(model, wrong, "wrong")
    ids = model.encode(text)
    limit = min(MAX_LENS_TOKENS, model.n_ctx)
    if len(ids) > limit:
        raise InvalidInput(f"the prompt is {len(ids)} tokens; the lens reads at most {limit}: "
                           "shorten the text")
    if target_id is not None and target_id == wrong_id:
        raise InvalidInput("target and wrong are the same token: pick two different tokens")

    captured = _capture_last_position(model, ids)
    logits = captured.pop("logits")[0].float()          # [vocab], the model's own output
    if target_id is None:
        target_id = int(logits.argmax())
        if target_id == wrong_id:
            raise InvalidInput("the model's top prediction is the wrong token: name a target")
    probs = logits.softmax(-1)
    top = torch.topk(probs, 5)
    top_next = [{"token": model.tokenizer.decode([int(i)]), "id": int(i), "prob": float(p)}
                for p, i in zip(top.values, top.indices)]

    lens_logprob, lens_rank, lens_metric = _logit_lens(model, captured, target_id, wrong_id)
    dla = _direct_logit_attribution(model, captured, target_id, wrong_id)
    final_metric = float(logits[target_id] - (logits[wrong_id] if wrong_id is not None else 0.0))
    decode = model.tokenizer.decode
    return LensResult(
        text=text, tokens=model.to_str_tokens(ids), target=decode([target_id]), target_id=target_id,
        wrong=decode([wrong_id]) if wrong_id is not None else None, wrong_id=wrong_id,
        lens_layers=["embed"] + [f"L{layer}" for layer in range(model.n_layers)],
        lens_logprob=lens_logprob, lens_rank=lens_rank, lens_metric=lens_metric,
        final_metric=final_metric, top_next=top_next, **dla)


def _capture_last_position(model: Model, ids: list[int]) -> dict[str, torch.Tensor]:
    """One forward; the activations the lens and the DLA need, at the last position, float32:
    resid_pre_0 [d], resid_mid_L / resid_post_L [d], z_L [n_heads, d_head], final_scale [1];
    and "logits" [1, vocab]."""
    captured: dict[str, torch.Tensor] = {}

    def keep(key: str):
        def hook(activation, hook=None):
            captured[key] = activation.detach()[0, -1].float()
        return hook

    hooks = [(hook_name("resid_pre", 0), keep("resid_pre_0")), ("ln_final.hook_scale", keep("final_scale"))]
    for layer in range(model.n_layers):
        hooks += [(hook_name("resid_mid", layer), keep(f"resid_mid_{layer}")),
                  (hook_name("resid_post", layer), keep(f"resid_post_{layer}")),
                  (hook_name("z", layer), keep(f"z_{layer}"))]
    with torch.no_grad():
        captured["logits"] = run(model, TokenBatch.from_lists([ids], model.pad_token_id),
                                 hooks=hooks).detach()
    return captured


def _unembedding_columns(model: Model, target_id: int, wrong_id: int | None):
    """([d_model] W_U[:, target] - W_U[:, wrong], b_U difference as a float)."""
    w_u = model.bridge.W_U                           # [d_model, vocab]
    direction = w_u[:, target_id].float()
    b_u = getattr(model.bridge, "b_U", None)
    bias = float(b_u[target_id]) if b_u is not None else 0.0
    if wrong_id is not None:
        direction = direction - w_u[:, wrong_id].float()
        bias -= float(b_u[wrong_id]) if b_u is not None else 0.0
    return direction.detach(), bias


@torch.no_grad()
def _logit_lens(model: Model, captured: dict, target_id: int, wrong_id: int | None):
    """([L + 1] log p(target), [L + 1] rank, [L + 1] metric) of the residual after each layer.

    The model ran once, in `interp.forward.run`; here only its final norm module and its
    unembedding (`interp.forward.unembed`) are applied to the cached residuals, a [L + 1, d] batch.
    """
    residuals = torch.stack([captured["resid_pre_0"]]
                            + [captured[f"resid_post_{layer}"] for layer in range(model.n_layers)])
    norm = model.bridge.ln_final
    normed = norm(residuals[:, None].to(norm_module_dtype(norm)))[:, 0]   # [L + 1, d_model]
    logits = unembed(model, normed).float()                               # [L + 1, vocab]
    logprobs = logits.log_softmax(-1)
    target_logit = logits[:, target_id]
    rank = (logits > target_logit[:, None]).sum(-1) + 1
    metric = target_logit - (logits[:, wrong_id] if wrong_id is not None else 0.0)
    return logprobs[:, target_id].cpu(), rank.cpu(), metric.cpu()


@torch.no_grad()
def _direct_logit_attribution(model: Model, captured: dict, target_id: int,
                              wrong_id: int | None) -> dict:
    direction, bias = _unembedding_columns(model, target_id, wrong_id)
    final_gain = norm_gain(model.bridge.ln_final, model.d_model).to(direction.device)
    # (c / s) . (g * u): the frozen final norm folded into one read-out vector.
    readout = final_gain * direction / captured["final_scale"].to(direction.device)

    def read(vector: torch.Tensor) -> torch.Tensor:
        return vector.to(readout.device) @ readout

    heads = torch.zeros(model.n_layers, model.n_heads)
    attn_rest = torch.zeros(model.n_layers)
    mlps = torch.zeros(model.n_layers)
    previous = captured["resid_pre_0"]
    for layer in range(model.n_layers):
        per_head = head_writes(model, layer)(captured[f"z_{layer}"])      # [H, d_model]
        attn_out = captured[f"resid_mid_{layer}"] - previous                 # exactly what it wrote
        heads[layer] = read(per_head).cpu()
        attn_rest[layer] = float(read(attn_out) - heads[layer].sum())
        mlps[layer] = float(read(captured[f"resid_post_{layer}"] - captured[f"resid_mid_{layer}"]))
        previous = captured[f"resid_post_{layer}"]
    return {"dla_heads": heads, "dla_attn_rest": attn_rest, "dla_mlps": mlps,
            "dla_embed": float(read(captured["resid_pre_0"])), "dla_unembed_bias": bias}


def lens_snippet(model_name: str, text: str, target: str | None, wrong: str | None) -> str:
    """Python that computes and draws what the dashboard's Lens page shows."""
    return "\n".join([
        "import interp",
        "from interp.lens import logit_lens_and_dla",
        "from interp.plots import dla_heatmap, logit_lens_figure", "",
        f"model = interp.load_model({model_name!r})",
        f"lens = logit_lens_and_dla(model, {text!r}, target={target or None!r}, wrong={wrong or None!r})",
        "print(lens.metric_name, lens.final_metric, lens.top_heads(8))",
        "dla_heatmap(lens.dla_heads, lens.metric_name).show()",
        "logit_lens_figure(lens.lens_layers, lens.lens_logprob, lens.lens_rank, lens.target,",
        "                  lens.lens_metric if lens.wrong else None, lens.metric_name).show()",
    ]) + "\n"
