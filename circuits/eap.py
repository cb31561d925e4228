"""Edge attribution patching: EAP (Syed et al. 2023) and EAP-IG (Hanna et al. 2024).

For an edge u -> v of `circuits.graph.Graph`, patching u's output into v's input from the
corrupted run changes the metric M by approximately

    score(u -> v) = (a_u(clean) - a_u(corrupted)) . dM/d(input_v)          (EAP)

summed over positions and averaged over prompts: the first-order drop of M when the edge is
corrupted (positive = the edge carries what the clean prompt needs). One clean forward and
backward gives dM/d(input_v) for every input at once (the bridge's split q/k/v input hooks give
each head's input its own gradient), so every edge is scored from 2 forwards + 1 backward.

EAP-IG ("Have Faith in Faithfulness", the "inputs" variant MIB runs) replaces the single
gradient by its mean along the straight path from the corrupted to the clean token embeddings:
gradients at embeddings e(corrupted) + (k / m)(e(clean) - e(corrupted)), k = 1..m (m = 5 as in
the paper), which makes the scores sum to the total effect of the input change (the
completeness of integrated gradients) instead of a local slope.

Read: hannamw/EAP-IG (`attribute.py`) and the MIB circuit track for the procedure; nothing is
copied. Everything runs through `interp.forward.run` with forward and backward hooks.

Cost for SmolLM2-135M: per batch of prompts, 2 recording forwards, then 1 (EAP) or m (EAP-IG)
forward + backward passes, and one [upstream x (batch pos d)] @ [(batch pos d) x inputs] product
per gradient pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from circuits.graph import Graph
from circuits.graph_hooks import check_supported, input_groups, recorder_hooks
from circuits.tasks import Task
from interp.errors import InvalidInput
from interp.forward import run

METHODS = ("eap", "eap-ig")


@dataclass
class EdgeScores:
    """scores: [n_upstream, n_inputs] float (0 outside graph.allowed), in metric units per
    prompt; head_scores: [n_layers, n_heads] (`Graph.head_scores`)."""

    graph: Graph
    scores: torch.Tensor
    method: str
    n_prompts: int
    seconds: float

    @property
    def head_scores(self) -> torch.Tensor:
        return self.graph.head_scores(self.scores)


def node_outputs(model, graph: Graph, tokens, hooks=()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(outputs [b, pos, n_upstream, d_model], residuals [b, pos, 2 n_layers + 1, d_model],
    final logits [b, vocab]) of one forward of `tokens` (a TokenBatch)."""
    b, pos = tokens.batch_size, tokens.seq_len
    outputs = torch.zeros(b, pos, graph.n_upstream, model.d_model)
    residuals = torch.zeros(b, pos, 2 * graph.n_layers + 1, model.d_model)
    with torch.no_grad():
        logits = run(model, tokens, hooks=[*recorder_hooks(model, graph, outputs, residuals), *hooks])
    return outputs, residuals, logits.float()


def _input_gradients(model, graph: Graph, tokens, metric_of_logits: Callable, embed_hook=None) -> torch.Tensor:
    """[b, pos, n_inputs, d_model]: dM/d(input_v), M = the summed metric, for one forward."""
    b, pos = tokens.batch_size, tokens.seq_len
    grads = torch.zeros(b, pos, graph.n_inputs, model.d_model)
    bwd_hooks = []
    for name, indices, _ in input_groups(graph):
        index = torch.tensor(indices)

        def keep(gradient, hook=None, index=index):
            g = gradient.detach().float()
            grads[:, : g.shape[1], index] = g if g.ndim == 4 else g[:, :, None]

        bwd_hooks.append((name, keep))
    # The q/k/v input hooks only exist (and carry gradients) when named in a forward hook too.
    fwd_hooks = [(name, _identity) for name, _, _ in input_groups(graph)]
    if embed_hook is not None:
        fwd_hooks.append(("blocks.0.hook_resid_pre", embed_hook))
    with torch.enable_grad():
        logits = run(model, tokens, hooks=fwd_hooks, bwd_hooks=bwd_hooks)
        metric_of_logits(logits.float()).sum().backward()
    model.bridge.zero_grad(set_to_none=True)
    return grads


def _identity(x, hook=None):
    return x


def edge_scores(model, task: Task, method: str = "eap-ig", steps: int = 5, batch_size: int = 8,
                progress: Callable[[float, str], None] | None = None) -> EdgeScores:
    """Score every edge of the model's graph on `task` (its prompts with their corruption).

    method: "eap" (gradient at the clean run) or "eap-ig" (mean gradient over `steps` points
    between the corrupted and clean embeddings). Returns EdgeScores (module doc for the sign).
    """
    if method not in METHODS:
        raise InvalidInput(f"unknown edge attribution method {method!r}; use one of {METHODS}")
    if steps < 1:
        raise InvalidInput(f"steps must be at least 1, got {steps}")
    check_supported(model)
    start = time.perf_counter()
    graph = Graph.from_model(model)
    prompts = task.prompts
    n = len(prompts)
    scores = torch.zeros(graph.n_upstream, graph.n_inputs)
    alphas = [1.0] if method == "eap" else [k / steps for k in range(1, steps + 1)]
    chunks = list(range(0, n, batch_size))
    for number, first in enumerate(chunks):
        rows = torch.arange(first, min(n, first + batch_size))
        clean, corrupted = prompts.tokens[first:first + len(rows)], prompts.corrupted[first:first + len(rows)]
        clean_out, _, _ = node_outputs(model, graph, clean)
        corrupt_out, _, _ = node_outputs(model, graph, corrupted)
        delta = clean_out - corrupt_out  # [b, pos, n_up, d]
        del clean_out
        clean_embed, corrupt_embed = delta[:, :, 0] + corrupt_out[:, :, 0], corrupt_out[:, :, 0]
        del corrupt_out
        mean_grad = None
        for alpha in alphas:
            hook = None
            if method == "eap-ig":
                mixed = corrupt_embed + alpha * (clean_embed - corrupt_embed)

                def hook(x, hook=None, mixed=mixed):
                    return mixed[:, : x.shape[1]].to(x.dtype)
            grads = _input_gradients(model, graph, clean, lambda logits: task.metric(logits, rows), hook)
            mean_grad = grads if mean_grad is None else mean_grad.add_(grads)
        mean_grad /= len(alphas)
        # sum over prompts, positions and d_model: [n_up, (b pos d)] @ [(b pos d), n_in]
        flat_delta = delta.permute(2, 0, 1, 3).reshape(graph.n_upstream, -1)
        flat_grad = mean_grad.permute(0, 1, 3, 2).reshape(-1, graph.n_inputs)
        scores += flat_delta @ flat_grad
        if progress:
            progress((number + 1) / len(chunks), f"{method}: {first + len(rows)}/{n} prompts")
    scores = torch.where(graph.allowed, scores / n, torch.zeros(()))
    return EdgeScores(graph, scores, method, n, time.perf_counter() - start)
