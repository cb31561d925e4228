"""The known IOI circuit of GPT-2 small: a fixture to check discovery against.

Wang et al. 2022, "Interpretability in the Wild" (arXiv:2211.00593), figure 2 and section 3; as
listed in ACDC's `acdc/ioi/utils.py` (`IOI_CIRCUIT`, Conmy et al. 2023) and ARENA's IOI
exercises (`CIRCUIT`, with `SEQ_POS_TO_KEEP`). Heads are (layer, head); role names follow
`circuits.circuit.ROLES`. 26 heads of GPT-2 small's 144.

To use it you need GPT-2 small weights locally (no hub access here): a Hugging Face directory
in INTERP_GPT2_PATH, or "openai-community/gpt2" in the HF hub cache.
"""

from __future__ import annotations

from circuits.circuit import Circuit, CircuitHead

GPT2_SMALL_N_HEADS = 12 * 12

IOI_CIRCUIT: dict[str, list[tuple[int, int]]] = {
    "name_mover": [(9, 9), (10, 0), (9, 6)],
    "backup_name_mover": [(10, 10), (10, 6), (10, 2), (10, 1), (11, 2), (9, 7), (9, 0), (11, 9)],
    "negative_name_mover": [(10, 7), (11, 10)],
    "s_inhibition": [(7, 3), (7, 9), (8, 6), (8, 10)],
    "induction": [(5, 5), (5, 8), (5, 9), (6, 9)],
    "duplicate_token": [(0, 1), (0, 10), (3, 0)],
    "previous_token": [(2, 2), (4, 11)],
}


def gpt2_ioi_circuit(model_id: str = "gpt2") -> Circuit:
    """IOI_CIRCUIT as a Circuit (no evaluation attached)."""
    heads = [CircuitHead(layer, head, role) for role, pairs in IOI_CIRCUIT.items()
             for layer, head in pairs]
    return Circuit(model="gpt2", model_id=model_id, task="ioi", heads=heads,
                   n_heads_total=GPT2_SMALL_N_HEADS, params={"source": "Wang et al. 2022 / ACDC"})
