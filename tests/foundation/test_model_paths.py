"""interp.model_paths: what a user typed as a model is checked before anything loads it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from interp.errors import InvalidInput, UnknownModel
from interp.model_paths import check_model_name, check_model_path, peek_shape


def test_model_paths_are_checked(tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        check_model_path(str(tmp_path / "missing"))
    with pytest.raises(InvalidInput, match="without a config.json"):
        check_model_path(str(tmp_path))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InvalidInput, match="neither a model directory nor a .gguf"):
        check_model_path(str(tmp_path / "notes.txt"))
    with pytest.raises(InvalidInput, match="type a path"):
        check_model_path("   ")
    (tmp_path / "config.json").write_text("{}")
    assert check_model_path(f"  {tmp_path}  ") == str(tmp_path.resolve())
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert check_model_path(str(tmp_path / "m.gguf")) == str((tmp_path / "m.gguf").resolve())


def test_a_text_file_named_gguf_is_refused_by_its_own_name(tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_text("not a model\n")
    with pytest.raises(InvalidInput, match="is not a GGUF file") as error:
        check_model_path(str(fake))
    assert str(fake) in str(error.value)


def test_model_names_that_can_never_load_are_refused(tmp_path):
    check_model_name("smollm2-135m")
    check_model_name("openai-community/gpt2")  # a hub id: whether it exists is known at load
    with pytest.raises(UnknownModel, match="unknown model 'nope-model'.*smollm2-135m"):
        check_model_name("nope-model")
    with pytest.raises(InvalidInput, match="does not exist"):
        check_model_name(str(tmp_path / "missing-dir"))


def test_peek_shape_reads_the_config_without_loading(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 4,
                                                      "num_attention_heads": 6}))
    shape = peek_shape(str(tmp_path))
    assert (shape.name, shape.n_layers, shape.n_heads) == (tmp_path.name, 4, 6)
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"num_hidden_layers": 2,
                                                                      "num_attention_heads": 3}}))
    assert (peek_shape(str(tmp_path)).n_layers, peek_shape(str(tmp_path)).n_heads) == (2, 3)
    assert peek_shape("nope-model") is None and peek_shape("org/some-model") is None


def test_checking_a_model_name_imports_no_torch():
    code = ("import sys; from interp.model_paths import check_model_name, peek_shape; "
            "check_model_name('smollm2-135m'); peek_shape('smollm2-135m'); "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
