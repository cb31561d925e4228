"""The hooks an SAE can read, by name, without a model or torch: front ends check a user's
`--hook` with this before the slow model load (`circuits.sae.points` resolves it against the
model: layer range, head, width)."""

from __future__ import annotations

from interp.errors import InvalidInput

# Hook suffix (after blocks.L.) -> the kind of vector an SAE there reads.
KINDS = {
    "hook_resid_pre": "resid", "hook_resid_mid": "resid", "hook_resid_post": "resid",
    "hook_attn_out": "attn_out", "hook_mlp_out": "mlp_out",
    "attn.hook_z": "z", "attn.hook_result": "result",
}


def check_hook_syntax(hook: str) -> None:
    """Refuse, without a model, a hook name no SAE here can read (its layer range is checked by
    `activation_point` once the model is loaded): front ends call this before the slow load."""
    parts = hook.split(".", 2)
    if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit() or parts[2] not in KINDS:
        raise InvalidInput(f"{hook!r} is not a hook an SAE can read here; use blocks.L.<name> with "
                           f"<name> one of {sorted(KINDS)}, e.g. blocks.6.hook_resid_pre")
