"""Circuits: discovery (path patching, EAP, EAP-IG, SAE methods), the Circuit type, evaluation.

    from circuits.discover import discover
    result = discover(model, "greater-than", "eap-ig")  # issue-13 JSON: edges, CPR, CMD, ...

    from circuits import discover_ioi_circuit, Circuit
    circuit, stages = discover_ioi_circuit(model)     # evaluated: faithfulness, random baseline, ...
    print(circuit.summary()); circuit.save(store)

`circuits.reference.IOI_CIRCUIT` is GPT-2 small's known IOI circuit (Wang et al. 2022).
"""

from interp.lazy import lazy_attributes

# name -> the module that defines it; imported on first use (PEP 562), so that importing
# one light module of the package (or checking an argument) does not import torch.
_LAZY = {
    "Circuit": "circuits.circuit",
    "CircuitEdge": "circuits.circuit",
    "CircuitHead": "circuits.circuit",
    "DiscoveryConfig": "circuits.ioi",
    "IOI_CIRCUIT": "circuits.reference",
    "ROLES": "circuits.circuit",
    "discover_ioi_circuit": "circuits.ioi",
    "Graph": "circuits.graph",
    "edge_scores": "circuits.eap",
    "evaluate_circuit": "circuits.evaluate",
    "faithfulness": "circuits.evaluate",
    "gpt2_ioi_circuit": "circuits.reference",
    "random_baseline": "circuits.evaluate",
    "template_means": "circuits.evaluate",
}

__all__ = [
    "IOI_CIRCUIT",
    "ROLES",
    "Circuit",
    "CircuitEdge",
    "CircuitHead",
    "DiscoveryConfig",
    "Graph",
    "discover_ioi_circuit",
    "edge_scores",
    "evaluate_circuit",
    "faithfulness",
    "gpt2_ioi_circuit",
    "random_baseline",
    "template_means",
]


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
