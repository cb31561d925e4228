"""What the steering playground shows about one edit on one prompt, as library calls.

The dashboard's Steering page (and a notebook) asks, for a prompt and an `AttentionEdit`:

- the next-token distribution with and without the edit, the top tokens and the change in their
  probability, and the logit difference of a target pair (`inspect_edit` -> `EditView`);
- one edited head's attention pattern before and after the edit (the same two forwards);
- for ACT, the sinks each calibrated head calibrated on this prompt (the same edited forward);
- the edit's strength (scale, PASTA alpha, ACT beta) against a metric, all values in ONE batched
  forward (`sweep_strength`);
- a calibration search as a store run with progress (`calibration_search`, which calls
  `act_eval.calibrate_task`: exactly what `interp calibrate` runs), the stored calibrations
  (`stored_calibrations`).

    view = inspect_edit(model, prompt, edit, head=(3, 1), targets=(" Mary", " John"))
    view.top_tokens(10)      # [{"token", "p_plain", "p_edited", "change"}, ...]
    view.logit_diff()        # (plain, edited) logit(" Mary") - logit(" John")
    sweep_strength(model, prompt, edit, [0.0, 0.4, 1.0]).metric

Every forward runs on the kernel engine of `interp.forward` (edited or not), as `compare` does,
so the two sides differ by the edit alone. Patterns and sinks come from the kernel's own
statistics (`gathered`: the edited probabilities at every key; `sinks`: the ACT sinks it found),
not from a second implementation of the edit.

ACT: Yu et al., ICML 2024 (GATECH-EIC/ACT). PASTA: Zhang et al., ICLR 2024. Head scaling:
the output of a head times a factor (0 ablates it; Olsson et al. 2022).
"""

from __future__ import annotations

import base64
import math
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from interp.edit_kinds import EDIT_KINDS, check_strength
from interp.errors import InvalidInput
from interp.forward import run
from interp.models import Model
from interp.names import Head, hook_name
from interp.tokens import TokenBatch
from kernels import AttentionEdit, AttentionStatsRequest, HeadScale, KeyBias, SinkCalibration

# Patterns are N x N per head and drawn in the browser: the playground is for short prompts.
MAX_PROMPT_TOKENS = 512
MAX_SWEEP_VALUES = 12
TOP_K = 10


# ---- the prompt and the targets ----------------------------------------------------------------
def prompt_ids(model: Model, prompt: str, chat: bool = False) -> list[int]:
    """The prompt's token ids as the edit sees them (after the chat template when `chat`)."""
    if not (prompt or "").strip():
        raise InvalidInput("the prompt is empty: type the text to continue")
    ids = model.encode(model.apply_chat_template(prompt) if chat else prompt)
    if len(ids) > min(MAX_PROMPT_TOKENS, model.n_ctx):
        raise InvalidInput(f"the prompt is {len(ids)} tokens; the playground shows patterns for "
                           f"at most {MAX_PROMPT_TOKENS}: shorten it")
    return ids


def target_ids(model: Model, targets) -> tuple[int, int] | None:
    """(id of target a, id of target b) of a target pair as typed (" Mary", " John"), or None
    when neither is given. Each must be one token of the model's vocabulary."""
    a, b = (list(targets or ()) + [None, None])[:2]
    a, b = (t if t and t.strip() else None for t in (a, b))  # blank means not given
    if a is None and b is None:
        return None
    if a is None or b is None:
        raise InvalidInput("a logit difference needs two target tokens: type both (e.g. ' Mary' "
                           "and ' John', with their leading space) or neither")
    return model.single_token_id(a), model.single_token_id(b)


# ---- which edit, which heads, which strength -----------------------------------------------------
def edit_kind(edit: AttentionEdit) -> str:
    """"scale" | "pasta" | "act": the kind of a one-part edit (what the playground builds)."""
    if len(edit.parts) != 1:
        raise InvalidInput(f"the playground varies one edit's strength; this edit has "
                           f"{len(edit.parts)} parts: build one (scale, PASTA or ACT)")
    part = edit.parts[0]
    if isinstance(part, HeadScale):
        return "scale"
    if isinstance(part, KeyBias) and part.outside and not part.per_prompt:
        return "pasta"
    if isinstance(part, SinkCalibration) and part.in_forward and part.rows is None:
        return "act"
    raise InvalidInput(f"the playground knows head scaling, PASTA and ACT edits, not {part!r}")


def edit_strength(edit: AttentionEdit) -> float:
    """The edit's one number: the scale, PASTA's alpha (exp of its bias) or ACT's beta."""
    part, kind = edit.parts[0], edit_kind(edit)
    return {"scale": lambda: part.scale, "pasta": lambda: math.exp(part.bias),
            "act": lambda: part.beta}[kind]()


def edited_heads(edit: AttentionEdit) -> list[Head]:
    """Every (layer, head) the edit touches, sorted."""
    return sorted({tuple(h) for part in edit.parts for h in part.heads})


def _act_layers(edit: AttentionEdit | None) -> set[int]:
    if edit is None:
        return set()
    return {layer for p in edit.parts if isinstance(p, SinkCalibration) for layer, _ in p.heads}


# ---- distribution, patterns, sinks ---------------------------------------------------------------
@dataclass
class EditView:
    """One prompt with and without an edit (what `inspect_edit` returns).

    token_ids / tokens: the prompt's N tokens (after the chat template, if any).
    plain / edited:     [vocab] float32 next-token probabilities at the last position.
    head:               the head whose pattern is kept (None: the edit has no head).
    pattern_plain / pattern_edited: [N, N] that head's attention (query, key), rows sum to 1.
    sinks:              ACT only: {head: [key positions]} the calibrated forward calibrated
                        (the first sink is left alone, so it is not listed); {} otherwise.
    target_ids:         the target pair's token ids, or None.
    """

    token_ids: list[int]
    tokens: list[str]
    plain: torch.Tensor
    edited: torch.Tensor
    head: Head | None = None
    pattern_plain: torch.Tensor | None = None
    pattern_edited: torch.Tensor | None = None
    sinks: dict = field(default_factory=dict)
    target_ids: tuple[int, int] | None = None
    decode: object = field(default=str, repr=False)   # token id -> text (the tokenizer's)

    @property
    def change(self) -> torch.Tensor:
        """[vocab] edited minus plain probability."""
        return self.edited - self.plain

    def top_tokens(self, k: int = TOP_K) -> list[dict]:
        """The k tokens with the largest probability with or without the edit (a token the edit
        pushed out of the top stays visible), largest first:
        [{"token_id", "token", "p_plain", "p_edited", "change"}, ...]."""
        k = max(1, min(int(k), self.plain.numel()))
        values, ids = torch.topk(torch.maximum(self.plain, self.edited), k)
        return [{"token_id": int(i), "token": self.decode(int(i)), "p_plain": float(self.plain[i]),
                 "p_edited": float(self.edited[i]), "change": float(self.change[i])}
                for i in ids.tolist()]

    def logit_diff(self) -> tuple[float, float] | None:
        """(plain, edited) logit(a) - logit(b) of the target pair (None without targets). The
        normalizer cancels, so it is the log-probability difference."""
        if self.target_ids is None:
            return None
        a, b = self.target_ids
        return tuple(float(torch.log(p[a]) - torch.log(p[b])) for p in (self.plain, self.edited))


def inspect_edit(model: Model, prompt: str, edit: AttentionEdit, head: Head | None = None,
                 targets=None, chat: bool = False) -> EditView:
    """Two forwards of `prompt` (without, then with `edit`) that return the next-token
    distributions, `head`'s pattern (default: the edit's first head) and, for ACT, the sinks
    each calibrated head calibrated. See `EditView`."""
    ids = prompt_ids(model, prompt, chat)
    pair = target_ids(model, targets)
    heads = edited_heads(edit)
    if head is None and heads:
        head = heads[0]
    if head is not None:
        head = (int(head[0]), int(head[1]))
        if not (0 <= head[0] < model.n_layers and 0 <= head[1] < model.n_heads):
            raise InvalidInput(f"head {head[0]}.{head[1]} does not exist in {model.name}")
    batch = TokenBatch.from_lists([ids], model.pad_token_id)
    n = len(ids)
    sink_layers = _act_layers(edit)

    def forward(with_edit: AttentionEdit | None):
        kept: dict[str, object] = {"sinks": {}}

        def request(layer, *_shape):
            want_pattern = head is not None and layer == head[0]
            want_sinks = with_edit is not None and layer in sink_layers
            if not (want_pattern or want_sinks):
                return None
            keys = torch.arange(n, device=model.device).expand(1, n, n) if want_pattern else None
            return AttentionStatsRequest(gather_keys=keys, sinks=want_sinks)

        def on_stats(layer, stats):
            if "gathered" in stats:
                kept["pattern"] = stats["gathered"][0, head[1]].float().cpu()     # [N, N]
            if "sinks" in stats:
                kept["sinks"][layer] = stats["sinks"][0].cpu()                    # [H, N]
        with torch.no_grad():
            logprobs = run(model, batch.to(model.device), output="final_logprobs",
                           edit=with_edit, stats=request, on_stats=on_stats, engine="kernel")
        return logprobs[0].float().cpu().exp(), kept

    plain, kept_plain = forward(None)
    edited, kept_edited = forward(edit)
    sinks = {}
    for layer, h in heads:
        if layer in kept_edited["sinks"]:
            sinks[(layer, h)] = kept_edited["sinks"][layer][h].nonzero().flatten().tolist()
    return EditView(ids, model.to_str_tokens(ids), plain, edited, head,
                    kept_plain.get("pattern"), kept_edited.get("pattern"), sinks, pair,
                    lambda i: model.tokenizer.decode([i]))


def sink_rows(view: EditView) -> list[dict]:
    """The ACT sinks of an `EditView` for a table: [{"head": "L.H", "positions": [...],
    "tokens": [...]}] of every calibrated head, in head order (empty lists: the head has no
    hidden sink on this prompt, so its calibration changes nothing here)."""
    return [{"head": f"{layer}.{h}", "positions": list(positions),
             "tokens": [view.tokens[p] for p in positions]}
            for (layer, h), positions in sorted(view.sinks.items())]


# ---- the strength sweep ------------------------------------------------------------------------
@dataclass
class Sweep:
    """The edit's strength against a metric on one prompt.

    strength: "scale" | "alpha" | "beta"; values: the strengths, ascending.
    metric_name: what `metric` measures; metric: [len(values)] its value at each strength.
    plain: the metric without any edit; current: the strength of the edit as given.
    """

    strength: str
    values: list[float]
    metric_name: str
    metric: list[float]
    plain: float
    current: float


DEFAULT_VALUES = {
    "scale": [0.0, 0.25, 0.5, 1.0, 1.5, 2.0],
    "pasta": [0.001, 0.01, 0.05, 0.2, 0.5, 1.0],      # 1.0: no steering
    "act": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],            # 1.0: no calibration
}


def sweep_values(edit: AttentionEdit, values=None) -> list[float]:
    """The strengths to sweep: `values` (checked), or the kind's defaults plus the edit's own."""
    kind = edit_kind(edit)
    values = list(values) if values is not None else DEFAULT_VALUES[kind] + [edit_strength(edit)]
    values = sorted({round(float(v), 6) for v in values})
    if not values or len(values) > MAX_SWEEP_VALUES:
        raise InvalidInput(f"sweep 1 to {MAX_SWEEP_VALUES} values, got {len(values)}")
    bad, reason = [], ""
    for value in values:  # the bounds a single edit of this kind has (`check_strength`)
        try:
            check_strength(kind, value)
        except InvalidInput as exc:
            bad, reason = bad + [value], str(exc)
    if bad:
        raise InvalidInput(f"{EDIT_KINDS[kind].strength} values {bad} are out of range: {reason}")
    return values


def _rows_edit(edit: AttentionEdit, values: list[float], n_keys: int):
    """(per-row edit, hooks) for a batch whose row 0 is unedited and row i + 1 has the edit at
    strength values[i]. ACT: one per-row `SinkCalibration` per value (a per-row beta); PASTA:
    one `KeyBias` per value whose spans cover every key on the other rows (no bias there);
    scale: the head outputs (`hook_z`, which the kernel's head scale multiplies) scaled per row."""
    kind, part = edit_kind(edit), edit.parts[0]
    rows = len(values) + 1
    if kind == "act":
        parts = tuple(SinkCalibration.per_row(
            [part.heads if r == i + 1 else () for r in range(rows)], beta=v, tau=part.tau,
            exclude_first=part.exclude_first) for i, v in enumerate(values))
        return AttentionEdit(parts), []
    if kind == "pasta":
        everything = ((0, n_keys),)
        parts = tuple(KeyBias(part.heads, tuple(part.spans if r == i + 1 else everything
                                                for r in range(rows)), math.log(v), outside=True)
                      for i, v in enumerate(values))
        return AttentionEdit(parts), []
    factors = torch.tensor([1.0] + list(values))
    by_layer: dict[int, list[int]] = {}
    for layer, h in part.heads:
        by_layer.setdefault(layer, []).append(h)

    def scaler(heads: list[int]):
        def hook(z, hook=None):                       # [rows, pos, n_heads, d_head]
            z = z.clone()
            z[:, :, heads] = z[:, :, heads] * factors.to(z.device, z.dtype)[:, None, None, None]
            return z
        return hook
    return None, [(hook_name("z", layer), scaler(hs)) for layer, hs in by_layer.items()]


def sweep_strength(model: Model, prompt: str, edit: AttentionEdit, values=None, targets=None,
                   chat: bool = False) -> Sweep:
    """The metric at each strength of `edit` (kind and heads kept, strength varied), in one
    batched forward whose row 0 is the unedited prompt.

    metric: logit(a) - logit(b) of the target pair when given, else the probability of the
    unedited model's top next token.
    """
    values = sweep_values(edit, values)
    ids = prompt_ids(model, prompt, chat)
    pair = target_ids(model, targets)
    batch = TokenBatch.from_lists([ids] * (len(values) + 1), model.pad_token_id)
    rows_edit, hooks = _rows_edit(edit, values, len(ids))
    with torch.no_grad():
        logprobs = run(model, batch.to(model.device), output="final_logprobs", edit=rows_edit,
                       hooks=hooks, engine="kernel").float().cpu()              # [rows, vocab]
    if pair is not None:
        a, b = pair
        metric = logprobs[:, a] - logprobs[:, b]
        name = (f"logit diff {model.tokenizer.decode([a])!r} - {model.tokenizer.decode([b])!r}")
    else:
        top = int(logprobs[0].argmax())
        metric = logprobs[:, top].exp()
        name = f"p({model.tokenizer.decode([top])!r}), the unedited top token"
    kind = edit_kind(edit)
    return Sweep(EDIT_KINDS[kind].strength, values, name, metric[1:].tolist(), float(metric[0]),
                 edit_strength(edit))


# ---- calibration searches from a front end ------------------------------------------------------
def load_search_files(train, dev, eval, fmt: str | None = None, shots: int = 0,
                      n_eval: int | None = None, seed: int = 0):
    """The files of a search, loaded and checked before any model is used (`TaskFiles.load`:
    formats, labels, train and dev distinct from eval). Blank paths are refused by name."""
    from interp.steering.act_eval import TaskFiles

    for name, path in (("train", train), ("dev", dev), ("eval", eval)):
        if not path or not str(path).strip():
            raise InvalidInput(f"the {name} file is missing: give its path (or upload it); "
                               "the search draws prompts from train, stops on dev and scores "
                               "on eval")
    return TaskFiles.load(str(eval).strip(), train=str(train).strip(), dev=str(dev).strip(),
                          fmt=fmt or None, shots=shots, need_dev=True, limit=n_eval, seed=seed)


def calibration_search(model: Model, files, store, seed: int = 0, n_calibration: int = 32,
                       n_dev: int = 32, screen: int | None = 16, batch_size: int = 8,
                       progress=None) -> str:
    """ACT's head search and its evaluation (`act_eval.calibrate_task`, what `interp calibrate`
    runs) as one `calibration` run of `store`, with progress recorded as it goes (a cancel
    requested through the store stops it at the next report). The run's result is the
    `Calibration`'s JSON (so `Calibration.from_store` reads it) plus "report": the JSON of
    `interp calibrate`. Returns the run id."""
    from interp.steering.act_eval import calibrate_task, public

    params = {"tau": 0.1, "beta": 0.4, **files.paths, "shots": files.shots, "seed": seed,
              "n_calibration": n_calibration, "n_dev": n_dev, "n_eval": len(files.eval),
              "screen": screen}
    with store.run("calibration", model.model_id, params) as writer:
        def report(fraction: float, message: str) -> None:
            writer.progress(fraction, message)
            if progress is not None:
                progress(fraction, message)
        writer.progress(0.0, "starting")
        result, calibration = calibrate_task(model, files, seed=seed, n_calibration=n_calibration,
                                             n_dev=n_dev, batch_size=batch_size, progress=report,
                                             screen=screen or None)
        writer.set_result({**calibration.to_json(), "report": public(result)})
    return writer.id


def stored_calibrations(store, model_id: str | None = None, limit: int = 25) -> list[dict]:
    """Complete calibration runs of the store (of `model_id` when given), newest first:
    [{"run_id", "model_id", "created_at", "heads", "tau", "beta", "shots", "dev_accuracy",
    "baseline_dev_accuracy", "eval": {"baseline", "calibrated"} accuracies or None}]. Written
    by `interp calibrate` or by `calibration_search`."""
    rows = []
    for run_record in store.list_runs(model_id=model_id, kind="calibration", status="complete",
                                      limit=limit):
        result = run_record.result or {}
        if result.get("kind") != "act_calibration":
            continue
        report = result.get("report") or {}
        rows.append({"run_id": run_record.id, "model_id": run_record.model_id,
                     "created_at": run_record.created_at,
                     "heads": [list(h) for h in result.get("heads", [])],
                     "tau": result.get("tau"), "beta": result.get("beta"),
                     "shots": (result.get("data") or {}).get("shots"),
                     "dev_accuracy": result.get("dev_accuracy"),
                     "baseline_dev_accuracy": result.get("baseline_dev_accuracy"),
                     "eval": {k: (report.get(k) or {}).get("accuracy")
                              for k in ("baseline", "calibrated")} if report else None})
    return rows


_UPLOAD_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def save_upload(folder: str | Path, filename: str, contents: str) -> Path:
    """Write a browser upload (a data URL, "data:...;base64,XXXX", as Dash's Upload gives it)
    to folder/<random>/<filename> atomically and return the path. The file keeps its name, so
    its format is read off it as for any path (stsa.binary.* = SST-2, .jsonl, .csv, .tsv)."""
    if not contents or "," not in contents:
        raise InvalidInput("the upload is empty or not a file: upload a data file again")
    name = _UPLOAD_NAME.sub("_", Path(filename or "upload").name).strip("._") or "upload"
    try:
        data = base64.b64decode(contents.split(",", 1)[1], validate=True)
    except ValueError:
        raise InvalidInput(f"{filename}: the upload is not valid base64; upload it again") from None
    if not data:
        raise InvalidInput(f"{filename} is empty: it needs at least one labelled example")
    target = Path(folder) / uuid.uuid4().hex[:8] / name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


__all__ = ["EditView", "Sweep", "calibration_search", "edit_kind",
           "edit_strength", "edited_heads", "inspect_edit", "load_search_files", "prompt_ids",
           "save_upload", "sink_rows", "stored_calibrations", "sweep_strength", "sweep_values",
           "target_ids"]
