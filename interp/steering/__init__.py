"""Edit attention while the model runs: ACT sink calibration, PASTA highlighting, head scaling.

Every edit is a `kernels.AttentionEdit` (declarative data, saved with the run that used it); the
same object drives the fused Triton kernel on GPU and the blocked torch reference on CPU.

    from interp.steering import act_calibration, generate, pasta_highlight, scale_heads
    edit = pasta_highlight(model, prompt, "the answer must be in French", heads=[(12, 3)])
    generate(model, prompt, edit=edit).text

    build_edit(model, "pasta", prompt, "12.3", 0.01, "the answer must be in French")
    # any kind of `interp.edit_kinds.EDIT_KINDS` in one call: what the CLI and dashboard run

    calibration = search_heads(model, task, train, dev, shots=4)   # ACT's head search
    calibration.edit(model)                                        # -> the AttentionEdit
"""

from interp.forward import Continuation, Generation
from interp.steering.act import act_calibration, calibrated_sinks, find_sinks
from interp.steering.act_search import Calibration, search_heads
from interp.steering.edits import build_edit, pasta_highlight, scale_heads, token_spans
from interp.steering.generate import compare, generate

__all__ = ["Calibration", "Continuation", "Generation", "act_calibration", "build_edit",
           "calibrated_sinks", "compare", "find_sinks", "generate", "pasta_highlight", "scale_heads", "search_heads",
           "token_spans"]
