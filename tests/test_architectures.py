"""The 17-family table: each tiny model trains a LoRA (loss goes down), saves, reloads with PEFT
and gives identical logits; unknown families fall back to every Linear except the head."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from conftest import DEVICE, bigbench_task
from loraocean.library.presets import PRESETS
from loraocean.library.train import WEIGHTS, fit_lora, write_adapter
from loraocean.models import load, targets
from loraocean.models.architectures import FAMILIES, matches

# Same 8 examples every step at a high learning rate: the loss must fall within 8 steps.
OVERFIT = replace(PRESETS["smoke"].with_train(lr=1e-2, max_steps=8, epochs=8, batch_size=8),
                  name="overfit", train_limit=8, max_length=64)


def test_seventeen_families():
    assert len(FAMILIES) == 17
    assert {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi", "phi3",
            "gpt2", "gpt_neox", "opt", "falcon", "bloom", "stablelm", "olmo2",
            "starcoder2"} == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.min_versions
def test_family_trains_saves_and_reloads(family, tmp_path):
    from peft import PeftModel

    model, tok = load(f"tiny-{family}")
    # every target name matches at least one module, in both parts
    names = [n for n, _ in model.named_modules()]
    for target in targets(model):
        assert any(matches(n, [target]) for n in names), target
    # attention and MLP parts are disjoint and together give every adapted module
    attn = {n for n in names if matches(n, targets(model, "attention"))}
    mlp = {n for n in names if matches(n, targets(model, "mlp"))}
    assert attn and mlp and not attn & mlp
    assert attn | mlp == {n for n in names if matches(n, targets(model))}
    peft_model, card = fit_lora(model, tok, bigbench_task("intent_recognition"), OVERFIT, seed=0)
    curve = card["train"]["loss_curve"]
    assert len(curve) == 8 and curve[-1] < curve[0] - 0.05, curve
    write_adapter(peft_model, card, tmp_path / "a")
    ids = torch.tensor([tok("Hello world, how are you?").input_ids], device=DEVICE)
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits
    peft_model.unload()
    fresh, _ = load(f"tiny-{family}")
    with torch.no_grad():
        base_logits = fresh(input_ids=ids).logits
        got = PeftModel.from_pretrained(fresh, tmp_path / "a").eval()(input_ids=ids).logits
    assert torch.equal(want, got)
    assert not torch.allclose(base_logits, got)  # the adapter changes the output
    assert (tmp_path / "a" / WEIGHTS).stat().st_size > 0


@pytest.mark.min_versions
def test_unknown_family_falls_back_to_every_linear_but_the_head():
    from transformers import AutoConfig, AutoModelForCausalLM

    # biogpt is a real transformers family missing from our table.
    config = AutoConfig.for_model("biogpt", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=2, vocab_size=100)
    model = AutoModelForCausalLM.from_config(config)
    with pytest.warns(UserWarning, match="unknown model family 'biogpt'"):
        found = targets(model)
    linear = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert "output_projection" in linear and "output_projection" not in found
    assert set(found) == linear - {"output_projection"}
    assert {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"} <= set(found)
