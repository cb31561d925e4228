"""Attention that edits attention and returns attention statistics, without the N x N pattern.

    from kernels import attention, AttentionEdit, SinkCalibration, AttentionStatsRequest
    edit = AttentionEdit((SinkCalibration(heads=((3, 1),), beta=0.4, tau=0.1),))   # ACT
    out, stats = attention(q, k, v, edit=edit.layer_edit(3, B, Nk, H, q.device),
                           stats=AttentionStatsRequest(entropy=True, key_mask=is_bos))

Backends: the Triton kernel (`triton_attention`, CUDA) and the torch reference
(`reference_attention`, any device, computed in query blocks); `naive_attention` is the
full-matrix definition for tests. `kernels.hf` plugs all of it into transformers models.
This package imports nothing else of the workbench.
"""
from .act import sink_rule
from .api import attention
from .edits import AttentionEdit, HeadScale, KeyBias, LayerEdit, SinkCalibration, pasta
from .hf import attention_session, register_interp_attention
from .masking import queries_seeing
from .naive import naive_attention
from .reference import reference_attention
from .stats import AttentionStatsRequest

__all__ = [
    "attention", "reference_attention", "naive_attention",
    "AttentionEdit", "HeadScale", "KeyBias", "SinkCalibration", "LayerEdit", "pasta",
    "AttentionStatsRequest", "register_interp_attention", "attention_session",
    "sink_rule", "queries_seeing",
]
