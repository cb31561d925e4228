"""Faithfulness of edge circuits, as MIB reports it (Mueller et al., "MIB: A Mechanistic
Interpretability Benchmark", ICML 2025, circuit localization track).

Running a circuit C (a set of edges of `circuits.graph.Graph`): every edge NOT in C carries the
corrupted run's activation, every edge in C the activation of the current (patched) run:

    input_v = sum_{u -> v in C} a_u(current) + sum_{u -> v not in C} a_u(corrupted)

done in one forward by editing each input hook (`circuits.graph_hooks`):
    input_v := corrupted_input_v + sum_{u -> v in C} (a_u(current) - a_u(corrupted))
when C holds fewer than half of v's edges, else
    input_v := current_input_v - sum_{u -> v not in C} (a_u(current) - a_u(corrupted)),
the same value (the residual stream is the sum of what the upstream nodes wrote) summed over
the smaller set. The empty circuit is therefore the corrupted run and the full circuit the
model, by construction.

    f(k) = (m(C_k) - m(empty)) / (m(model) - m(empty))
at k in K_PERCENTS percent of the graph's edges (the top-|score| edges); CPR = area under f,
CMD = area under |1 - f|, over the circuit size as a fraction of all edges (0..1; trapezoids
through f(0) = 0); the same for random circuits of the same sizes. m is the task metric averaged
over the evaluation prompts, which must be disjoint from the discovery prompts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from circuits.graph import Graph
from circuits.graph_hooks import check_supported, input_groups
from circuits.tasks import Task
from interp.errors import InvalidInput
from interp.head_writes import head_writes
from interp.forward import run

K_PERCENTS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)


def curve_areas(curve: list[dict]) -> tuple[float, float]:
    """(CPR, CMD): areas under f and under |1 - f| over circuit size as a fraction of the
    whole (edges here, nodes for feature circuits); trapezoids through k = 0, where f = 0 by
    construction. curve: [{"k_percent", "faithfulness"}] in increasing k."""
    xs = [0.0] + [p["k_percent"] / 100 for p in curve]
    fs = [0.0] + [p["faithfulness"] for p in curve]
    cpr = sum((xs[i + 1] - xs[i]) * (fs[i + 1] + fs[i]) / 2 for i in range(len(xs) - 1))
    gaps = [abs(1 - f) for f in fs]
    cmd = sum((xs[i + 1] - xs[i]) * (gaps[i + 1] + gaps[i]) / 2 for i in range(len(xs) - 1))
    return cpr, cmd


class CircuitRunner:
    """Runs edge circuits on a task's prompts. The corrupted run's node outputs and residual
    streams are recorded once per batch ([n_upstream, b, pos, d_model] floats: keep batches
    small); each circuit then costs one forward per batch."""

    def __init__(self, model, task: Task, batch_size: int = 16):
        check_supported(model)
        from circuits.eap import node_outputs

        self.model, self.task, self.graph = model, task, Graph.from_model(model)
        self.batches = []
        n = len(task.prompts)
        for first in range(0, n, batch_size):
            rows = torch.arange(first, min(n, first + batch_size))
            clean = task.prompts.tokens[first:first + len(rows)]
            corrupted = task.prompts.corrupted[first:first + len(rows)]
            outputs, residuals, _ = node_outputs(model, self.graph, corrupted)
            # node first, so that the nodes a layer reads are one contiguous block
            self.batches.append((rows, clean, outputs.permute(2, 0, 1, 3).contiguous(), residuals))
            del outputs

    def metric(self, keep: torch.Tensor | None) -> float:
        """Mean metric over the prompts with the edges outside `keep` ([n_upstream, n_inputs]
        bool) corrupted; keep=None runs the model unchanged."""
        total, count = 0.0, 0
        for rows, clean, corrupt_out, corrupt_resid in self.batches:
            hooks = [] if keep is None else self._hooks(keep, corrupt_out, corrupt_resid)
            with torch.no_grad():
                logits = run(self.model, clean, hooks=hooks).float()
            total += float(self.task.metric(logits, rows).sum())
            count += len(rows)
        return total / count

    def _hooks(self, keep, corrupt_out, corrupt_resid) -> list:
        """Hooks recording diff[u] = a_u(current) - a_u(corrupted) [n_up, b, pos, d] as the
        forward goes, and editing each input group from it (module doc)."""
        graph, model = self.graph, self.model
        diff = torch.zeros_like(corrupt_out)
        n_up, b, pos, d = diff.shape

        def put(index, value):
            width = value.shape[-2]
            diff[index, :, :width] = value.detach() - corrupt_out[index, :, :width]

        hooks = [("blocks.0.hook_resid_pre", lambda x, hook=None: put(0, x))]
        for layer in range(graph.n_layers):
            first = graph.head_index(layer, 0)
            hooks.append((f"blocks.{layer}.attn.hook_z",
                          lambda z, hook=None, heads=head_writes(model, layer), first=first: put(
                              slice(first, first + graph.n_heads),
                              heads(z.detach()).permute(2, 0, 1, 3))))
            hooks.append((f"blocks.{layer}.hook_mlp_out",
                          lambda out, hook=None, i=graph.mlp_index(layer): put(i, out)))
        readable = graph.n_readable
        for name, indices, slot in input_groups(graph):
            n_read = int(readable[indices[0]])
            kept = keep[:n_read, indices]  # [n_read, group]
            if bool(kept.all()):
                continue  # every edge in: the input is the current run's
            from_corrupted = int(kept.sum()) * 2 < kept.numel()
            chosen = kept if from_corrupted else ~kept
            senders = chosen.any(1).nonzero().squeeze(1)
            sparse = len(senders) * 4 < n_read
            weights = (chosen[senders] if sparse else chosen).float().T.contiguous()  # [group, n]

            def edit(x, hook=None, senders=senders, sparse=sparse, weights=weights, slot=slot,
                     from_corrupted=from_corrupted, n_read=n_read):
                width = x.shape[1]
                if from_corrupted:
                    base = corrupt_resid[:, :width, slot]
                    base = base[:, :, None].expand_as(x) if x.ndim == 4 else base
                if len(senders) == 0:  # no edge of the circuit reaches this input
                    return base.to(x.dtype).clone()
                source = diff[senders] if sparse else diff[:n_read]  # [n, b, pos, d]
                change = (weights @ source.reshape(source.shape[0], -1)).view(-1, b, pos, d)
                change = change[:, :, :width].permute(1, 2, 0, 3)  # [b, width, group, d]
                if x.ndim == 3:
                    change = change[:, :, 0]
                if from_corrupted:
                    return (base + change).to(x.dtype)
                return (x - change).to(x.dtype)

            hooks.append((name, edit))
        return hooks


def faithfulness_curve(runner: CircuitRunner, scores: torch.Tensor, k_percents=K_PERCENTS,
                       n_random: int = 1, seed: int = 0,
                       progress: Callable[[float, str], None] | None = None) -> dict:
    """f(k) of the top-|score| edge circuits and of random edge circuits (module doc).

    Returns {"faithfulness_curve": [{"k_percent", "k", "faithfulness"}], "random_curve": [...],
    "cpr", "cmd", "random_cpr", "random_cmd", "m_model", "m_empty", "n_edges"}.
    """
    graph = runner.graph
    m_model = runner.metric(None)
    m_empty = runner.metric(torch.zeros_like(graph.allowed))
    gap = m_model - m_empty
    if abs(gap) < 1e-6:
        raise InvalidInput("the corrupted prompts give the same metric as the clean ones "
                           f"({m_model:.4g}); faithfulness is undefined: check the corruption "
                           "changes the answer")
    generator = torch.Generator().manual_seed(seed)
    curve, random_curve = [], []
    for number, p in enumerate(k_percents):
        k = max(1, round(p / 100 * graph.n_edges))
        value = (runner.metric(graph.top_edges(scores, k)) - m_empty) / gap
        curve.append({"k_percent": p, "k": k, "faithfulness": value})
        randoms = [(runner.metric(graph.random_edges(k, generator)) - m_empty) / gap
                   for _ in range(n_random)]
        if randoms:  # n_random = 0: no random baseline (e.g. computed once for several methods)
            random_curve.append({"k_percent": p, "k": k, "faithfulness": sum(randoms) / len(randoms)})
        if progress:
            progress((number + 1) / len(k_percents), f"faithfulness at {p}% of edges")
    cpr, cmd = curve_areas(curve)
    random_cpr, random_cmd = curve_areas(random_curve) if random_curve else (None, None)
    return {"faithfulness_curve": curve, "random_curve": random_curve, "cpr": cpr, "cmd": cmd,
            "random_cpr": random_cpr, "random_cmd": random_cmd, "m_model": m_model,
            "m_empty": m_empty, "n_edges": graph.n_edges, "n_random": n_random}
