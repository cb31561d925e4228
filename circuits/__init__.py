"""Circuits: discovery by path patching, the Circuit type, and its evaluation.

    from circuits import discover_ioi_circuit, Circuit
    circuit, stages = discover_ioi_circuit(model)     # evaluated: faithfulness, random baseline, ...
    print(circuit.summary()); circuit.save(store)

`circuits.reference.IOI_CIRCUIT` is GPT-2 small's known IOI circuit (Wang et al. 2022).
"""

from circuits.circuit import ROLES, Circuit, CircuitEdge, CircuitHead
from circuits.evaluate import evaluate_circuit, faithfulness, random_baseline, template_means
from circuits.ioi import DiscoveryConfig, discover_ioi_circuit
from circuits.reference import IOI_CIRCUIT, gpt2_ioi_circuit

__all__ = [
    "IOI_CIRCUIT",
    "ROLES",
    "Circuit",
    "CircuitEdge",
    "CircuitHead",
    "DiscoveryConfig",
    "discover_ioi_circuit",
    "evaluate_circuit",
    "faithfulness",
    "gpt2_ioi_circuit",
    "random_baseline",
    "template_means",
]
