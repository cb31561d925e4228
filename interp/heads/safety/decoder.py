"""The decoder run layer by layer from any layer on, with a shared prompt prefix cached once.

What makes the Ships scan fast (interp.heads.safety.ships): the prompts' shared chat-template
prefix (system prompt, "<|im_start|>user\\n"...) is computed once per ablation and reused through
a key/value cache (`PrefixCache`); the residual stream entering layer L is computed once, so
ablating a head in layer L reruns only layers L..end (`LayerDecoder.run(hidden, start=L, ...)`).
TransformerBridge hooks fire inside the layers, so the ablation hooks apply.
"""

from __future__ import annotations

import torch

from interp.errors import UnsupportedArchitecture
from interp.models import Model
from interp.tokens import TokenBatch


class PrefixCache:
    """A duck-typed HF cache for the bridge's attention (`update(k, v, layer_idx)` only).

    Recording mode keeps each layer's new keys/values (the shared prefix's). Replay mode
    prepends the recorded prefix keys/values, row `rows[i]` of them for batch row i.
    """

    def __init__(self, prefix: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
                 rows: torch.Tensor | None = None):
        self.prefix, self.rows = prefix, rows
        self.recorded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, keys, values, layer_idx, *args, **kwargs):
        if self.prefix is None:
            self.recorded[layer_idx] = (keys, values)
            return keys, values
        past_keys, past_values = self.prefix[layer_idx]
        return (torch.cat([past_keys.index_select(0, self.rows), keys], dim=2),
                torch.cat([past_values.index_select(0, self.rows), values], dim=2))


class LayerDecoder:
    """Runs a standard decoder (embed, layers, one rotary embedding, final norm, lm_head) from
    any layer on, with TransformerBridge hooks firing inside the layers."""

    def __init__(self, model: Model):
        core = getattr(model.hf_model, "model", None)
        parts = ("embed_tokens", "layers", "rotary_emb", "norm")
        layer_types = set(getattr(model.hf_model.config.get_text_config(), "layer_types", None)
                          or ["full_attention"])
        if core is None or any(not hasattr(core, p) for p in parts) or \
                not hasattr(model.hf_model, "lm_head") or layer_types != {"full_attention"}:
            raise UnsupportedArchitecture(
                f"the batched safety-head scan runs {model.name} "
                f"({type(model.hf_model).__name__}) layer by layer and needs a decoder with one "
                "rotary embedding and full attention in every layer (Llama, Qwen2, Mistral, ...); "
                "sliding-window or multimodal stacks are not supported")
        self.model, self.core = model, core

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.core.embed_tokens(ids.to(self.model.device))

    def run(self, hidden: torch.Tensor, start: int, offset: int, hooks: list,
            cache: PrefixCache | None, record: list | None = None) -> torch.Tensor:
        """hidden [rows, pos, d_model] entering layer `start`, at positions offset.. -> the last
        layer's output [rows, pos, d_model]. `record` collects the input of every layer run."""
        positions = torch.arange(offset, offset + hidden.shape[1], device=hidden.device)[None]
        rotary = self.core.rotary_emb(hidden, positions)
        with self.model.bridge.hooks(fwd_hooks=hooks):
            for layer in self.core.layers[start:]:
                if record is not None:
                    record.append(hidden)
                # attention_mask=None: the bridge applies its own causal mask (offset by the
                # cached prefix); right padding means real tokens never see pads.
                out = layer(hidden, attention_mask=None, position_embeddings=rotary,
                            position_ids=positions, past_key_values=cache)
                hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def final(self, hidden: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """[rows, pos, d] -> final-norm hidden state at positions `last` [rows]: [rows, d]."""
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]
        return self.core.norm(picked[:, None])[:, 0].float()

    def logprobs(self, final_hidden: torch.Tensor) -> torch.Tensor:
        logits = self.model.hf_model.lm_head(final_hidden.to(self.model.dtype)[:, None])[:, 0]
        return torch.log_softmax(logits.float(), dim=-1)


def split_shared_prefix(batch: TokenBatch) -> tuple[list[int], TokenBatch]:
    """The tokens every prompt starts with (at most all but each prompt's last) and the rest."""
    lists = batch.token_lists()
    shortest = min(len(t) for t in lists)
    n = 0
    while n < shortest - 1 and all(t[n] == lists[0][n] for t in lists):
        n += 1
    return lists[0][:n], TokenBatch.from_lists([t[n:] for t in lists], batch.pad_id)

