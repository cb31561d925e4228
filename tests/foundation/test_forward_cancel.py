"""Cooperative cancellation in the one forward seam (`interp.forward.stop_when`): a job is
stopped inside a forward, between blocks, not only at its next progress report."""

from __future__ import annotations

import threading

import pytest
import torch

from interp.forward import Cancelled, check_stop, generate, run, run_batched, stop_when
from interp.store import RunCancelled


def _block_counter(model):
    """A hook on every block's residual input that counts the blocks that ran."""
    ran = []
    hooks = [(f"blocks.{layer}.hook_resid_pre", lambda x, hook, layer=layer: ran.append(layer))
             for layer in range(model.n_layers)]
    return ran, hooks


def test_a_forward_stops_between_blocks(smollm2):
    torch.set_num_threads(1)
    tokens = smollm2.tokenize(["The cat sat on the mat because it was tired."])
    ran, hooks = _block_counter(smollm2)
    asked = []

    def should_stop():            # says stop from the fourth block on
        asked.append(1)
        return len(asked) > 3

    with stop_when(should_stop), pytest.raises(Cancelled):
        run(smollm2, tokens, hooks=hooks)
    assert 0 < len(ran) < smollm2.n_layers  # stopped inside the forward, blocks left unrun
    assert issubclass(Cancelled, RunCancelled)  # a store run records it as cancelled
    # Outside the block nothing polls: the same forward runs to the end, the hooks are gone.
    ran.clear()
    assert run(smollm2, tokens, hooks=hooks) is not None and len(ran) == smollm2.n_layers
    check_stop()  # no-op outside stop_when


def test_only_the_thread_that_asked_is_stopped(smollm2):
    """A context variable: the dashboard's job thread stops; a page's forward does not."""
    tokens = smollm2.tokenize(["Hello there"])
    results = {}

    def other_thread():
        results["other"] = run(smollm2, tokens)

    with stop_when(lambda: True):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        with pytest.raises(Cancelled):
            run_batched(smollm2, tokens, batch_size=1)
        with pytest.raises(Cancelled):
            generate(smollm2, "Hello", max_new_tokens=2)
    assert results["other"].shape[0] == 1 and results["other"].ndim == 2
