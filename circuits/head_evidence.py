"""Per-head evidence the IOI discovery classifies heads with (Wang et al. 2022, section 3).

- `attention_to_positions`: mean attention probability between named positions, e.g.
  end -> IO (name movers), end -> S2 (S-inhibition), S2 -> S1+1 (induction), S2 -> S1
  (duplicate token), S1+1 -> S1 (previous token).
- `direct_logit_attribution`: each head's direct contribution at the last position to
  logit(IO) - logit(S), with every normalization scale frozen (the standard DLA: the head's
  output passed straight through the final norm and the unembedding; on models with a norm
  after attention, e.g. Gemma 3, that norm's scale is frozen too).
- `copying_scores`: the paper's copying score: a name token's representation after the first
  block, passed through one head's OV circuit, the final norm and the unembedding; the
  fraction of names whose own token is in the top 5 logits (negated OV for negative copying).
  Deviation: the paper feeds the embedding through MLP0 only; here the representation is the
  residual after block 0 of the model run on the name alone (attention on a one-token context
  included), which needs no architecture-specific code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.forward import StopForward, run
from interp.models import Model
from interp.names import hook_name
from interp.patching.components import position_table
from interp.tasks.base import PromptSet
from interp.tokens import TokenBatch

RELATIONS = (("end", "IO"), ("end", "S1"), ("end", "S2"), ("S2", "S1"), ("S2", "S1+1"),
             ("S1+1", "S1"))


@torch.no_grad()
def attention_to_positions(model: Model, prompts: PromptSet, relations=RELATIONS,
                           batch_size: int = 32) -> dict[str, torch.Tensor]:
    """{"end->IO": [L, H], ...}: mean over prompts of the attention from one named position to
    another (on the clean prompts)."""
    names, table = position_table(prompts, "named")
    column = {name: i for i, name in enumerate(names)}
    sums = {f"{q}->{k}": torch.zeros(model.n_layers, model.n_heads) for q, k in relations}
    offset = 0
    for sub in prompts.tokens.chunks(batch_size):
        rows = torch.arange(offset, offset + sub.batch_size)
        offset += sub.batch_size
        batch = torch.arange(sub.batch_size)

        def reduce(layer):
            def hook(pattern, hook=None):
                pattern = pattern.detach().float().cpu()  # [b, H, q, k]
                for q, k in relations:
                    qi, ki = table[rows, column[q]], table[rows, column[k]]
                    sums[f"{q}->{k}"][layer] += pattern[batch, :, qi, ki].sum(0)
            return hook

        run(model, sub, output=None,
            hooks=[(hook_name("pattern", l), reduce(l)) for l in range(model.n_layers)])
    return {key: value / len(prompts) for key, value in sums.items()}


def _freeze_scale(scale, hook=None):
    return scale.detach()


def _detach(x, hook=None):
    return x.detach()


def direct_logit_attribution(model: Model, prompts: PromptSet, batch_size: int = 16) -> torch.Tensor:
    """[L, H]: mean direct effect of each head's output at the last token on
    logit(answer) - logit(wrong answer), norm scales frozen (see module doc)."""
    total = torch.zeros(model.n_layers, model.n_heads)
    offset = 0
    for sub in prompts.tokens.chunks(batch_size):
        rows = torch.arange(offset, offset + sub.batch_size)
        offset += sub.batch_size
        leaves = {}

        def leaf(layer):
            def hook(z, hook=None):
                leaves[layer] = z.detach().requires_grad_(True)
                return leaves[layer]
            return hook

        hooks = []
        for layer in range(model.n_layers):
            hooks.append((hook_name("z", layer), leaf(layer)))
            # Cut every path through later attention and MLP inputs: only the residual
            # stream's skip connections remain between a head and the unembedding.
            hooks += [(hook_name("in", layer, "ln1"), _detach), (hook_name("in", layer, "ln2"), _detach)]
            for post in ("ln1_post", "ln2_post"):
                if hook_name("scale", layer, post) in model.bridge.hook_dict:
                    hooks.append((hook_name("scale", layer, post), _freeze_scale))
        hooks.append(("ln_final.hook_scale", _freeze_scale))
        with torch.enable_grad():
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the bridge warns that edited scales leave HF's kernel
                logits = run(model, sub, hooks=hooks).float()
            batch = torch.arange(sub.batch_size)
            diff = logits[batch, prompts.answers[rows]] - logits[batch, prompts.wrong_answers[rows]]
            layers = sorted(leaves)
            grads = torch.autograd.grad(diff.sum(), [leaves[l] for l in layers], allow_unused=True)
        end = sub.final_positions
        for layer, grad in zip(layers, grads):
            if grad is None:
                continue
            z = leaves[layer].detach()
            # Linear path from z to the logit difference: grad . z is the exact contribution.
            total[layer] += (grad[batch, end] * z[batch, end]).sum(dim=(0, 2)).float().cpu()
    return total / len(prompts)


@torch.no_grad()
def copying_scores(model: Model, words: Sequence[str], heads: Sequence[tuple[int, int]] | None = None,
                   k: int = 5, negative: bool = False) -> torch.Tensor:
    """[L, H] fraction of `words` (e.g. " Mary") whose own token is in the top-k logits of the
    head's OV circuit (negated if `negative`); NaN for heads not in `heads`."""
    ids = [model.single_token_id(w) for w in words]
    prompts = [([model.bos_token_id] if model.prepend_bos else []) + [i] for i in ids]
    kept = {}

    def keep(x, hook=None):
        kept["resid"] = x.detach()
        raise StopForward  # nothing later is needed

    run(model, TokenBatch.from_lists(prompts, model.pad_token_id), output=None,
        hooks=[(hook_name("resid_pre", 1), keep)])
    resid = kept["resid"][:, -1:, :]  # [n, 1, d]: each name after block 0
    heads = heads or [(l, h) for l in range(model.n_layers) for h in range(model.n_heads)]
    group = model.n_heads // model.n_kv_heads
    d = model.d_head
    scores = torch.full((model.n_layers, model.n_heads), float("nan"))
    target = torch.tensor(ids)[:, None]
    for layer, head in heads:
        block = model.bridge.blocks[layer]
        values = block.attn.v(block.ln1(resid))  # [n, 1, n_kv * d]
        g = head // group
        v = values[..., g * d:(g + 1) * d]
        out = v @ block.attn.W_O[head]  # TransformerLens layout [d_head, d_model], any HF layout
        if negative:
            out = -out
        if hasattr(block, "ln1_post"):
            out = block.ln1_post(out)
        logits = model.bridge.unembed(model.bridge.ln_final(out))[:, 0]  # [n, vocab]
        top = logits.topk(k, dim=-1).indices
        scores[layer, head] = (top == target).any(-1).float().mean()
    return scores
