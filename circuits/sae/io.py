"""SAEs on disk in SAELens's layout, and in the results store.

A folder holds `cfg.json` + `sae_weights.safetensors` (W_enc, b_enc, W_dec, b_dec), as SAELens
6.x's `SAE.save_model` writes them, so `sae_lens.SAE.load_from_disk(folder)` reads ours and
`load_sae` reads theirs (architectures "standard" and "topk" without activation normalisation).
cfg.json's top level has SAELens's SAE fields; `metadata` has where it reads (hook_name,
hook_head_index, model_name, context_size, prepend_bos, dataset_path). SAELens reads a cfg.json
by its 6.x rules only when `metadata.sae_lens_version` is at least 6, so that key holds the
format version "6.0.0"; `metadata.trained_with` says which program trained it, and
`metadata.interp` keeps this workbench's own fields (model_id, quality report).

Folders are written under a temporary name and renamed last: a reader never sees half an SAE.
In a store, an SAE is a complete "sae" run whose result has the report and the folder, which
lies beside the store file: `<store dir>/saes/<run id>/`.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from circuits.sae.sae import SAEConfig, SparseAutoencoder
from interp.errors import InvalidInput

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
FORMAT_VERSION = "6.0.0"
PARAMETERS = ("W_enc", "b_enc", "W_dec", "b_dec")


def saelens_cfg(sae: SparseAutoencoder, report: dict | None = None) -> dict:
    """SAELens 6.x cfg.json contents for `sae`."""
    cfg = sae.cfg
    out = {
        "architecture": cfg.architecture,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "hook_z" if cfg.hook_name.endswith("hook_z") and cfg.hook_head_index is None else "none",
        "metadata": {
            "sae_lens_version": FORMAT_VERSION,
            "trained_with": "interp-workbench circuits.sae",
            "model_name": cfg.model_name,
            "hook_name": cfg.hook_name,
            "hook_head_index": cfg.hook_head_index,
            "context_size": cfg.context_size,
            "prepend_bos": cfg.prepend_bos,
            "dataset_path": cfg.dataset_path,
            "interp": {"model_id": cfg.model_id, "exclude_first_position": cfg.exclude_first_position,
                       "report": report or {}, **cfg.extra},
        },
    }
    if cfg.architecture == "topk":
        out["k"] = cfg.k
        out["rescale_acts_by_decoder_norm"] = False
    return out


def save_sae(sae: SparseAutoencoder, directory: str | Path, report: dict | None = None) -> Path:
    """Write `sae` to `directory` (SAELens layout), atomically: temp folder, then rename."""
    directory = Path(directory)
    if directory.exists():
        raise InvalidInput(f"{directory} already exists; choose a new folder for the SAE")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        tensors = {name: getattr(sae, name).detach().cpu().contiguous() for name in PARAMETERS}
        save_file(tensors, str(tmp / WEIGHTS_FILENAME))
        (tmp / CFG_FILENAME).write_text(json.dumps(saelens_cfg(sae, report), indent=2))
        tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _config_from(cfg: dict, where: Path) -> SAEConfig:
    """SAEConfig from a SAELens cfg.json (6.x layout, or the flat pre-6 one)."""
    meta = cfg.get("metadata") or cfg  # pre-6 cfg.json files are flat
    architecture = cfg.get("architecture", "standard")
    if architecture not in ("standard", "topk"):
        raise InvalidInput(f"{where}: SAE architecture {architecture!r} is not supported here "
                           "(standard and topk are)")
    if cfg.get("normalize_activations", "none") not in ("none", None, False):
        raise InvalidInput(f"{where}: normalize_activations={cfg['normalize_activations']!r} is not "
                           "supported; fold the normalisation into the weights first")
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise InvalidInput(f"{where}: rescale_acts_by_decoder_norm=true is not supported; fold "
                           "the decoder norms into the encoder first (SAELens fold_W_dec_norm)")
    if cfg.get("apply_b_dec_to_input", True) is False:
        raise InvalidInput(f"{where}: apply_b_dec_to_input=false is not supported")
    ours = meta.get("interp") or {}
    extra = {k: v for k, v in ours.items() if k not in ("model_id", "exclude_first_position", "report")}
    return SAEConfig(
        d_in=int(cfg["d_in"]), d_sae=int(cfg["d_sae"]), architecture=architecture,
        k=int(cfg["k"]) if architecture == "topk" else None,
        hook_name=meta.get("hook_name") or meta.get("hook_point") or "",
        hook_head_index=meta.get("hook_head_index", meta.get("hook_point_head_index")),
        model_name=meta.get("model_name") or "", model_id=ours.get("model_id", ""),
        context_size=int(meta.get("context_size") or 128),
        prepend_bos=bool(meta.get("prepend_bos", False)),
        # SAEs trained elsewhere read every position unless they say otherwise.
        exclude_first_position=bool(ours.get("exclude_first_position", False)),
        dataset_path=meta.get("dataset_path") or "", extra=extra,
    )


def load_sae(directory: str | Path) -> tuple[SparseAutoencoder, dict]:
    """(SAE, its stored report) from a SAELens-layout folder; clear errors for what is missing."""
    directory = Path(directory)
    cfg_path, weights_path = directory / CFG_FILENAME, directory / WEIGHTS_FILENAME
    if not cfg_path.is_file() or not weights_path.is_file():
        raise InvalidInput(f"{directory} is not an SAE folder: it needs {CFG_FILENAME} and "
                           f"{WEIGHTS_FILENAME} (SAELens's layout)")
    cfg = json.loads(cfg_path.read_text())
    sae = SparseAutoencoder(_config_from(cfg, directory))
    tensors = load_file(str(weights_path))
    missing = [name for name in PARAMETERS if name not in tensors]
    if missing:
        raise InvalidInput(f"{weights_path} lacks {missing}; an SAE needs {list(PARAMETERS)}")
    with torch.no_grad():
        for name in PARAMETERS:
            param = getattr(sae, name)
            if tensors[name].shape != param.shape:
                raise InvalidInput(f"{weights_path}: {name} has shape {tuple(tensors[name].shape)}, "
                                   f"cfg.json says {tuple(param.shape)}")
            param.copy_(tensors[name].float())
    report = ((cfg.get("metadata") or {}).get("interp") or {}).get("report", {})
    return sae, report


def sae_dir(store) -> Path:
    """The folder beside the store file that holds its SAEs."""
    return Path(store.path).parent / "saes"


def store_sae(store, trained) -> str:
    """Save a `TrainedSAE` as a complete "sae" run; sets trained.run_id / .path; returns the id."""
    sae, report = trained.sae, trained.report
    params = {"hook": sae.cfg.hook_name, "head": sae.cfg.hook_head_index,
              "architecture": sae.cfg.architecture, "k": sae.cfg.k, "features": sae.d_sae,
              "corpus": sae.cfg.dataset_path, "tokens": report.get("tokens_trained")}
    folder = None
    try:
        with store.run("sae", sae.cfg.model_id, params) as run:
            folder = save_sae(sae, sae_dir(store) / run.id, report)
            run.set_result({"path": str(folder), "folder": f"saes/{run.id}", "report": report,
                            "cfg": saelens_cfg(sae)})
    except BaseException:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    trained.run_id, trained.path = run.id, folder
    return run.id


def load_stored_sae(store, run_id: str) -> tuple[SparseAutoencoder, dict]:
    """(SAE, report) of a complete "sae" run."""
    record = store.get_run(run_id)
    if record.kind != "sae" or record.status != "complete" or not record.result:
        raise InvalidInput(f"run {run_id!r} is not a complete SAE run (kind {record.kind!r}, "
                           f"status {record.status!r}); `interp runs` lists them")
    return load_sae(sae_dir(store) / run_id)


def list_stored_saes(store, model_id: str | None = None) -> list[dict]:
    """Complete SAE runs, newest first: {"run_id", "model_id", "hook", "head", ..., "report"}."""
    return [{"run_id": r.id, "model_id": r.model_id, **r.params, "report": r.result.get("report", {})}
            for r in store.list_runs(model_id=model_id, kind="sae", status="complete") if r.result]


def latest_stored_saes(store, model_id: str) -> list[SparseAutoencoder]:
    """The newest complete SAE of `model_id` at each (hook, head) in `store` (for
    `sae_features`); a clear error, with the command that trains one, when there is none."""
    seen, out = set(), []
    for entry in list_stored_saes(store, model_id):
        key = (entry.get("hook"), entry.get("head"))
        if key not in seen:
            seen.add(key)
            out.append(load_stored_sae(store, entry["run_id"])[0])
    if not out:
        raise InvalidInput(f"no SAE of {model_id} in {store.path}; train one first, e.g. "
                           "`interp sae train MODEL --hook blocks.12.hook_resid_pre`")
    return out
