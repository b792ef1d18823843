"""Trainable parameters are float32 on a bf16 base for every training method (library LoRA and
each MoE method that trains), the same parameters as on a float32 base, with exactly the gradients
the bf16 experts had (the products still run in the base's dtype); checkpoints and cards record
dtypes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from loraocean.library.train import fit_lora, write_adapter
from loraocean.models import load
from loraocean.moe import fit_model, get_method, load_adapter, save_checkpoint
from loraocean.moe.layer import MoELinear
from test_moe_methods import TASK, adapters  # noqa: F401  (module fixture)

METHODS = [("loramoe", {}), ("rocket", {}), ("xlora", {"depth": 2, "hidden": 16}), ("mole", {})]


def fitted(name: str, options: dict, dtype: torch.dtype, adapters):
    """(model, card) after a smoke fit on a `dtype` base."""
    base, tok = load("tiny-llama", dtype=dtype)
    if name == "lora":
        model, card = fit_lora(base, tok, TASK, "smoke")
        model.eval()
    else:
        model, card = fit_model(name, base, tok, [str(p) for p in adapters], TASK, preset="smoke",
                                options=options)
    return model, card


def initial(name: str, options: dict, dtype: torch.dtype, adapters) -> dict[str, torch.Tensor]:
    """The trainable parameters as `fit` builds them on a `dtype` base, before training."""
    from peft import get_peft_model

    from loraocean.library.presets import get_preset
    from loraocean.library.train import lora_config

    base, _ = load("tiny-llama", dtype=dtype)
    if name == "lora":
        torch.manual_seed(0)
        model = get_peft_model(base, lora_config(base, get_preset("smoke")))
    else:
        m = get_method(name)
        model = m.build(base, [load_adapter(p) for p in adapters], m.make_config(options))
        model.upcast_trainables()
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name,options", [("lora", {})] + METHODS)
def test_bf16_base_trains_the_same_float32_parameters(adapters, name, options):  # noqa: F811
    dtypes = (torch.float32, torch.bfloat16)
    init = {dtype: initial(name, options, dtype, adapters) for dtype in dtypes}
    runs = {dtype: fitted(name, options, dtype, adapters) for dtype in dtypes}
    want, got = trainable(runs[torch.float32][0]), trainable(runs[torch.bfloat16][0])
    assert set(got) == set(want) == set(init[torch.float32])
    for n, p in got.items():
        assert p.dtype == torch.float32 and p.shape == want[n].shape, n
    frozen = [p for p in runs[torch.bfloat16][0].parameters() if not p.requires_grad]
    assert any(p.dtype == torch.bfloat16 for p in frozen)
    assert all(p.dtype in (torch.bfloat16, torch.float32) for p in frozen)
    moved = [(got[n] - init[torch.bfloat16][n]).abs().max() for n in got]
    assert max(moved) > 0
    card = runs[torch.bfloat16][1]
    assert card["dtypes"]["base"] == "bfloat16" and card["dtypes"]["trainable"] == "float32"
    assert runs[torch.float32][1]["dtypes"] == {**card["dtypes"], "base": "float32",
                                                **({"saved": "float32"} if "saved" in card["dtypes"] else {})}


@pytest.mark.parametrize("name,options", [m for m in METHODS if m[0] != "xlora"])
def test_float32_storage_leaves_the_bf16_computation_unchanged(adapters, name, options):  # noqa: F811
    """On a bf16 base, the float32 experts get exactly the gradients the bf16 experts got before
    (the same bf16 products; only the stored weights and the optimizer's arithmetic are float32).
    X-LoRA's classifier is the exception by design: it runs in float32 (see xlora.py)."""
    from loraocean.batching import encode, pad_batch
    from loraocean.tasks import load_split
    from loraocean.trainer import answer_loss

    _, tok = load("tiny-llama")
    batch = pad_batch([encode(ex, tok, max_length=96) for ex in load_split(TASK, "train", limit=6)],
                      tok.pad_token_id)
    grads = []
    for upcast in (False, True):
        base, _ = load("tiny-llama", dtype=torch.bfloat16)
        m = get_method(name)
        model = m.build(base, [load_adapter(p) for p in adapters], m.make_config(options)).eval()
        if upcast:
            model.upcast_trainables()
        answer_loss(model, batch).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    if name != "mole":  # MoLE trains only its gates, which were float32 before too
        assert any(g.dtype == torch.bfloat16 for g in grads[0].values())  # before: bf16 experts
    assert all(g.dtype == torch.float32 for g in grads[1].values())
    for n, g in grads[1].items():
        assert torch.equal(g, grads[0][n].float()), n


@pytest.mark.parametrize("name,options", [("lora", {})] + METHODS)
def test_checkpoints_store_float32_trained_tensors_and_record_dtypes(adapters, tmp_path, name, options):  # noqa: F811
    model, card = fitted(name, options, torch.bfloat16, adapters)
    if name == "lora":
        folder = write_adapter(model, card, tmp_path / "adapter")
        weights = folder / "adapter_model.safetensors"
        trained_keys = None  # every tensor of a LoRA adapter is trained
    else:
        folder = save_checkpoint(model, tmp_path / "ckpt", card)
        weights = folder / "moe_model.safetensors"
        # MoEModel parameter `base.<layer>.<tensor>` is checkpoint tensor `layers.<layer>.<tensor>`
        trained_keys = {"layers." + n[len("base."):] if n.startswith("base.") else n
                        for n in trainable(model)}
        assert trained_keys <= set(model.moe_state_dict())
    with safe_open(str(weights), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    for key in trained_keys or dtypes:
        assert dtypes[key] == "F32", key
    saved = json.loads((folder / "card.json").read_text())
    assert saved["dtypes"]["base"] == "bfloat16" and saved["dtypes"]["trainable"] == "float32"


def test_experts_multiply_in_the_base_dtype():
    """float32 experts on a bf16 base give exactly the output of the same experts rounded to bf16:
    the products run in bf16, the float32 weights are cast on the way in."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(32, 24).to(torch.bfloat16)
    As, Bs = [torch.randn(4, 32), torch.randn(2, 32)], [torch.randn(24, 4), torch.randn(24, 2)]
    layers = []
    for dtype in (torch.float32, torch.bfloat16):
        layer = MoELinear(linear, As, Bs, [2.0, 0.5])
        layer.lora_A.data, layer.lora_B.data = layer.lora_A.data.to(dtype), layer.lora_B.data.to(dtype)
        layer.external_gates = torch.tensor([[0.3, 0.7]]).expand(5, 2)
        layers.append(layer)
    x = torch.randn(5, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        got, want = layers[0](x), layers[1](x)
    assert layers[0].lora_A.dtype == torch.float32 and got.dtype == torch.bfloat16
    assert torch.equal(got, want)
