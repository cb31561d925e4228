"""ACT: calibrate the hidden attention sinks of chosen heads, as the paper's authors run it.

Yu et al., "Unveiling and Harnessing Hidden Attention Sinks: Enhancing Large Language Models
without Training through Attention Calibration" (ICML 2024); released code GATECH-EIC/ACT
(`models/llama_modelling_aug.py`, `scripts/calibration.sh`: tau = 0.1, beta = 0.4). In every
forward, on each chosen head and for each input:

- the head's sinks are the keys whose mean attention, over the queries that see them, exceeds
  tau, a fraction of attention mass (not a multiple of the uniform share 1/N);
- the first sink (the initial token, in practice) is left alone: the model needs it;
- the other sinks' attention is scaled by beta and the removed mass is given back to the
  remaining keys in proportion to their attention (`kernels.SinkCalibration`).

The sinks are found inside the calibrated forward, from the head's own attention in that layer,
so they follow each input (and the calibration of earlier layers). Which heads: the paper keeps
the heads whose calibration helps on a calibration set (a search), or the user names them; there
is no "every head that has a sink" default.

    edit = act_calibration(model, heads=[(3, 1), (7, 4)])          # beta 0.4, tau 0.1
    generate(model, prompt, edit).text
    calibrated_sinks(model, prompt, edit)                          # {(3, 1): [5, 12], ...}
"""

from __future__ import annotations

import torch

from interp.attention_stats import stream_attention_stats
from interp.errors import InvalidInput
from interp.models import Model
from interp.names import Head, check_heads
from kernels import AttentionEdit, AttentionStatsRequest, SinkCalibration, queries_seeing, sink_rule

TAU = 0.1    # the released code's THRES: mean received attention above which a key is a sink
BETA = 0.4   # the released code's BETA: what is left of a sink's attention


def _check_tau(tau: float) -> None:
    if not 0 < tau < 1:
        raise InvalidInput(f"tau is a fraction of attention mass: it must be in (0, 1) "
                           f"(ACT uses {TAU}), got {tau}")


def act_calibration(model: Model, text: str | None = None, heads=None, beta: float = BETA,
                    tau: float = TAU, chat: bool = False) -> AttentionEdit:
    """The ACT edit on `heads`: each input's sinks found per head inside the forward.

    heads: the heads to calibrate, [(layer, head), ...], from a head search or named by the
        user (required: calibrating every head that has a sink hurts; see the module docstring).
    text, chat: not used by the edit, which finds the sinks of whatever it runs on; accepted so
        that callers passing the prompt keep working.
    Returns an `AttentionEdit` with one `SinkCalibration(heads, beta=beta, tau=tau,
    exclude_first=True)`: declarative data, saved as JSON with the run.
    """
    if not 0 <= beta <= 1:
        raise InvalidInput(f"beta must be in [0, 1] (ACT uses {BETA}), got {beta}")
    _check_tau(tau)
    if heads is None:
        raise InvalidInput("ACT calibrates chosen heads: name them (e.g. heads=[(3, 1), (7, 4)], "
                           "--heads 3.1,7.4) or use the heads a calibration search kept")
    chosen = check_heads(model, heads, allow_empty=False)
    return AttentionEdit((SinkCalibration(heads=tuple(chosen), beta=beta, tau=tau,
                                          exclude_first=True),))


def find_sinks(model: Model, text: str, tau: float = TAU, exclude_first: bool = True,
               chat: bool = False) -> dict[Head, list[int]]:
    """{(layer, head): [sink positions]} of one prompt's unedited forward, by ACT's rule (the
    same tau as `act_calibration`), for display; heads without a sink are left out.

    exclude_first: leave out each head's first sink, as ACT does (False: list it too).
    """
    _check_tau(tau)
    batch = model.tokenize(model.apply_chat_template(text) if chat else text)

    def sinks_of(layer, stats, sub_batch):
        received = stats["received"].float()                                  # [1, H, N]
        seen = queries_seeing(received.shape[-1], received.shape[-1], True,
                              _sliding_window(model, layer), sub_batch.mask,
                              received.device)                                 # [1, N]
        return sink_rule(received, seen[:, None], tau, exclude_first)

    found = stream_attention_stats(model, batch, AttentionStatsRequest(received=True), sinks_of,
                                   batch_size=1)[:, 0]                         # [L, H, N]
    return _positions(found)


def calibrated_sinks(model: Model, text: str, edit: AttentionEdit,
                     chat: bool = False) -> dict[Head, list[int]]:
    """{(layer, head): [positions]}: the sinks `edit` calibrates on this prompt, as found inside
    the calibrated forward itself (what the dashboard shows); heads without one are left out."""
    batch = model.tokenize(model.apply_chat_template(text) if chat else text)
    found = stream_attention_stats(model, batch, AttentionStatsRequest(sinks=True),
                                   lambda layer, stats, sub_batch: stats["sinks"],
                                   batch_size=1, edit=edit)[:, 0]              # [L, H, N]
    return _positions(found)


def _sliding_window(model: Model, layer: int) -> int | None:
    """The layer's attention window (Gemma-3's local layers), None for full attention."""
    config = model.hf_model.config.get_text_config()
    types = getattr(config, "layer_types", None)
    return config.sliding_window if types and types[layer] == "sliding_attention" else None


def _positions(sinks: torch.Tensor) -> dict[Head, list[int]]:
    """[L, H, N] bool -> {(layer, head): [positions]} for the heads with any sink."""
    return {(int(layer), int(head)): sinks[layer, head].nonzero().flatten().tolist()
            for layer, head in sinks.any(-1).nonzero().tolist()}
