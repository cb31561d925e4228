"""Results as files a researcher takes elsewhere: head scores as CSV / JSON, attention patterns
as .npy, and the Python that reproduces a view with library calls. The dashboard's download
buttons and "copy as Python" call these; so can a script.

    head_scores_csv(scores)          # "layer,head,score\\n0,0,0.0312\\n..."
    head_scores_json(scores, run)    # {"detector", "model_id", "run_id", "params", "scores": [[..]]}
    array_npy(pattern.pattern)       # bytes of a .npy file (numpy.load reads it back)
    heads_snippet(model_name, detector, run_id, store_path)   # a runnable script, as text
"""

from __future__ import annotations

import io
import json
import math


def head_scores_rows(scores) -> list[dict]:
    """[{"layer", "head", "score"}] of every head, layer-major (nan kept as None)."""
    values = scores.scores.tolist()
    return [{"layer": layer, "head": head,
             "score": None if value is None or (isinstance(value, float) and math.isnan(value)) else value}
            for layer, row in enumerate(values) for head, value in enumerate(row)]


def head_scores_csv(scores) -> str:
    """`HeadScores` as CSV: a header `layer,head,score`, one line per head (repr floats: the
    stored values exactly)."""
    lines = ["layer,head,score"]
    for row in head_scores_rows(scores):
        lines.append(f"{row['layer']},{row['head']},{'' if row['score'] is None else repr(row['score'])}")
    return "\n".join(lines) + "\n"


def head_scores_json(scores, run=None) -> dict:
    """`HeadScores` (and the store run it came from, when given) as JSON-able data:
    {"detector", "model_id", "run_id", "created_at", "params", "prompt_hash", "verify", "info",
    "n_layers", "n_heads", "scores": [[...] * n_heads] * n_layers, "top": [...]}."""
    data = {"detector": scores.detector, "model_id": scores.model_id,
            "run_id": getattr(run, "id", None), "created_at": getattr(run, "created_at", None),
            "n_layers": scores.n_layers, "n_heads": scores.n_heads, **scores.to_json()}
    return json.loads(json.dumps(data, default=str))  # nan -> NaN is kept by json; fail here


def array_npy(tensor) -> bytes:
    """A tensor (or array) as the bytes of a .npy file."""
    import numpy as np

    buffer = io.BytesIO()
    array = tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else np.asarray(tensor)
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def heads_snippet(detector: str, run_id: str | None, store_path, model_name: str | None = None) -> str:
    """Python that reads the scores a Heads view shows from the store and draws its heatmap
    (and, when `model_name` is given, how to rerun the scan)."""
    lines = ["from interp.store import Store",
             "from interp.plots import head_heatmap", "",
             f"store = Store({str(store_path)!r}, read_only=True)"]
    if run_id:
        lines.append(f"scores = store.head_scores({run_id!r}, {detector!r})")
    else:
        lines.append(f"scores = store.latest_scores(MODEL_ID, {detector!r})")
    lines += ["print(scores.top(10))", f"head_heatmap(scores.scores, {detector!r}).show()"]
    if model_name:
        lines += ["", "# to rerun the scan with the same parameters:",
                  "# import interp; from interp.heads.scan import run_scan",
                  f"# model = interp.load_model({model_name!r})",
                  f"# run_scan(model, [{detector!r}], params={{{detector!r}: scores.params}})"]
    return "\n".join(lines) + "\n"


def pattern_snippet(model_name: str, text: str, layer: int, head: int) -> str:
    """Python that computes and draws the attention pattern a Head view shows."""
    return "\n".join([
        "import interp",
        "from interp.patterns import attention_pattern, sink_positions",
        "from interp.plots import attention_pattern_figure", "",
        f"model = interp.load_model({model_name!r})",
        f"pattern = attention_pattern(model, {text!r}, layer={layer})",
        f"head = pattern.head({head})  # [N, N] (query, key)",
        f"attention_pattern_figure(pattern.tokens, head, sink_positions(head), "
        f"'L{layer}.H{head}').show()",
    ]) + "\n"


def patch_result_csv(result) -> str:
    """A `PatchResult` as CSV: one column per axis (its labels), then `value` (normalized) and
    `raw` (the metric itself, when kept); one line per cell, in the tensor's order."""
    import itertools

    axes = list(result.axes)
    values = result.values.flatten().tolist()
    raw = result.raw.flatten().tolist() if result.raw is not None else None
    lines = [",".join(axes + ["value"] + (["raw"] if raw is not None else []))]
    cells = itertools.product(*[range(n) for n in result.values.shape])
    for index, coordinate in enumerate(cells):
        labels = [_csv_field(result.labels[axis][c]) for axis, c in zip(axes, coordinate)]
        fields = labels + [repr(values[index])] + ([repr(raw[index])] if raw is not None else [])
        lines.append(",".join(fields))
    return "\n".join(lines) + "\n"


def _csv_field(value) -> str:
    text = str(value)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


# ---- generations (the steering playground) -------------------------------------------------------
GENERATION_COLUMNS = ("condition", "model", "prompt", "chat", "max_new_tokens", "continuation",
                      "token_ids", "edit")


def generations_json(model: str, prompt: str, plain, edited, edit, chat: bool = False,
                     max_new_tokens: int | None = None) -> dict:
    """The two greedy continuations of one prompt, without and with an edit, as JSON-able data:
    {"model", "prompt", "chat", "max_new_tokens", "edit": the edit's JSON (its `to_dict()`,
    which `kernels.AttentionEdit.from_dict` reads back), "plain": {"text", "token_ids"},
    "edited": {"text", "token_ids"}}.

    plain, edited: `interp.forward.Continuation`s or dicts with "text" and "token_ids".
    edit: an `AttentionEdit` or its dict.
    """
    def side(continuation) -> dict:
        data = continuation if isinstance(continuation, dict) else continuation.to_json()
        return {"text": data["text"], "token_ids": [int(i) for i in data["token_ids"]]}

    edit_dict = edit.to_dict() if hasattr(edit, "to_dict") else edit
    data = {"model": model, "prompt": prompt, "chat": bool(chat),
            "max_new_tokens": max_new_tokens, "edit": edit_dict,
            "plain": side(plain), "edited": side(edited)}
    return json.loads(json.dumps(data))  # JSON-able now, or fail here


def generations_csv(data: dict) -> str:
    """`generations_json`'s data as CSV: a header (GENERATION_COLUMNS), one line for the plain
    continuation and one for the edited one; token ids space-separated, the edit as compact
    JSON on the edited line (empty on the plain one)."""
    lines = [",".join(GENERATION_COLUMNS)]
    for condition in ("plain", "edited"):
        side = data[condition]
        edit = json.dumps(data["edit"], separators=(",", ":")) if condition == "edited" else ""
        fields = [condition, data["model"], data["prompt"], str(data["chat"]).lower(),
                  "" if data["max_new_tokens"] is None else str(data["max_new_tokens"]),
                  side["text"], " ".join(map(str, side["token_ids"])), edit]
        lines.append(",".join(_csv_field(f) for f in fields))
    return "\n".join(lines) + "\n"
