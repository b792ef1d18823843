"""`moe export --to peft`: every single-LoRA method loads in plain PEFT with the logits of our
checkpoint, X-LoRA loads in PEFT's XLoraModel within 1e-4, routed methods are refused."""

from __future__ import annotations

import json

import pytest
import torch

from loraocean.errors import LoraOceanError
from loraocean.models import load
from loraocean.moe import get_method, load_adapter, load_checkpoint, save_checkpoint
from loraocean.moe.export import export_peft
from loraocean.moe.methods.lorahub import combine
from loraocean.moe.methods.merges import peft_merge
from test_moe_layer import make_adapters

# `make test-min` runs this file at the lowest declared versions:
# exports that PEFT must load with the same logits.
pytestmark = pytest.mark.min_versions

SAME_SHAPE = [(4, 8, ["q_proj", "v_proj", "up_proj", "down_proj"], s) for s in (31, 32)]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    return make_adapters(tmp_path_factory.mktemp("export"))  # uneven ranks, alphas


@pytest.fixture(scope="module")
def same_shape(tmp_path_factory):
    return make_adapters(tmp_path_factory.mktemp("export-same"), SAME_SHAPE)


def ids():
    return torch.randint(0, 250, (2, 9), generator=torch.Generator().manual_seed(5))


def experts_for(method, paths):
    """The experts a checkpoint of `method` holds (what its `prepare` step would give)."""
    experts = [load_adapter(p) for p in paths]
    if method == "uniform":
        return experts
    if method == "single":
        return experts[1:2]
    if method == "lorahub":
        return [combine(experts, [0.7, -0.4])]
    base, _ = load("tiny-llama")
    m = get_method(method)
    return [peft_merge(base, experts, method.removeprefix("merge_"), m.make_config({}))]


def checkpoint(tmp_path, method, experts, options=None):
    m = get_method(method)
    model = m.build(load("tiny-llama")[0], experts, m.make_config(options or {}))
    save_checkpoint(model, tmp_path / "ckpt")
    ours = load_checkpoint(tmp_path / "ckpt", load("tiny-llama")[0])
    with torch.no_grad():
        return ours(input_ids=ids()).logits


METHODS = ["uniform", "single", "lorahub", "merge_cat", "merge_linear", "merge_ties", "merge_dare_ties",
           "merge_svd"]


@pytest.mark.parametrize("method", METHODS)
def test_single_lora_methods_load_in_peft_with_the_same_logits(tmp_path, adapters, same_shape, method):
    from peft import PeftModel

    paths = adapters if method in ("uniform", "single", "merge_cat") else same_shape
    want = checkpoint(tmp_path, method, experts_for(method, paths))
    assert export_peft(tmp_path / "ckpt", tmp_path / "peft").name == "lora"
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] is None  # tiny: no hub id
    peft_model = PeftModel.from_pretrained(load("tiny-llama")[0], tmp_path / "peft").eval()
    with torch.no_grad():
        got = peft_model(input_ids=ids()).logits
        plain = load("tiny-llama")[0](input_ids=ids()).logits
    assert (want - plain).abs().max() > 1e-2  # the adapter really changes the logits
    torch.testing.assert_close(got, want, atol=2e-6, rtol=0)
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_uniform_of_uneven_experts_is_their_weighted_concatenation(tmp_path, adapters):
    """Three experts of ranks 2, 4, 8 and scalings 2, 4, 1: one LoRA of rank 14 whose B columns
    carry gate x scaling (1/3 x s_e), checked against the adapters' own tensors."""
    from safetensors.torch import load_file

    experts = [load_adapter(p) for p in adapters]
    checkpoint(tmp_path, "uniform", experts)
    export_peft(tmp_path / "ckpt", tmp_path / "peft")
    tensors = load_file(str(tmp_path / "peft" / "adapter_model.safetensors"))
    m = "model.layers.0.mlp.up_proj"
    A = tensors[f"base_model.model.{m}.lora_A.weight"]
    B = tensors[f"base_model.model.{m}.lora_B.weight"]
    assert A.shape[0] == 14
    torch.testing.assert_close(A, torch.cat([e.A[m] for e in experts]))
    torch.testing.assert_close(B, torch.cat([e.B[m] * e.scale[m] / 3 for e in experts], 1))
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (14, 14)  # scaling 1


@pytest.mark.parametrize("options", [dict(depth=1), dict(depth=2, hidden=16, layerwise=True, top_k=2,
                                                         softmax_topk=True, temperature=0.7)])
def test_xlora_loads_in_peft_xlora_model(tmp_path, adapters, options):
    from peft import PeftModel, XLoraConfig

    m = get_method("xlora")
    model = m.build(load("tiny-llama")[0], [load_adapter(p) for p in adapters], m.make_config(options))
    with torch.no_grad():  # a classifier with clearly non-uniform scalings
        for p in model.classifier.parameters():
            p.mul_(8)
    save_checkpoint(model, tmp_path / "ckpt")
    model = load_checkpoint(tmp_path / "ckpt", load("tiny-llama")[0])
    assert export_peft(tmp_path / "ckpt", tmp_path / "xlora").name == "xlora"
    out = tmp_path / "xlora"
    base, _ = load("tiny-llama")
    base.config.use_cache = False  # PEFT's X-LoRA requires it
    config = XLoraConfig.from_pretrained(out)  # the adapters are its subfolders (names relative to it)
    config.adapters = {name: str(out / name) for name in config.adapters}
    ref = PeftModel.from_pretrained(base, out, config=config).eval()
    with torch.no_grad():
        got = ref(input_ids=ids()).logits
        want = model(input_ids=ids()).logits
    assert model.last_scalings.std() > 1e-3
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ["loramoe", "base"])
def test_methods_without_an_export_are_refused(tmp_path, adapters, method):
    experts = [] if method == "base" else [load_adapter(p) for p in adapters]
    checkpoint(tmp_path, method, experts)
    with pytest.raises(LoraOceanError, match=f"method '{method}' has no export to PEFT .*uniform"):
        export_peft(tmp_path / "ckpt", tmp_path / "peft")
    assert not (tmp_path / "peft").exists()


def test_a_routed_checkpoint_of_an_exporting_method_leaves_nothing_behind(tmp_path, adapters):
    """The single-LoRA export checks every layer's gates are fixed; a routed layer (here: a
    uniform checkpoint whose gates were replaced by a router's tensors) is refused, and the
    temporary folder is removed."""
    from safetensors.torch import load_file, save_file

    from loraocean.library.card import write_card
    from loraocean.moe.checkpoint import CARD, FILES, WEIGHTS

    checkpoint(tmp_path, "uniform", [load_adapter(p) for p in adapters])
    state = load_file(str(tmp_path / "ckpt" / WEIGHTS))
    key = next(k for k in state if k.endswith("router.weights"))
    state[key.replace("router.weights", "router.weight")] = state.pop(key)
    save_file(state, str(tmp_path / "ckpt" / WEIGHTS))
    card = json.loads((tmp_path / "ckpt" / CARD).read_text())
    write_card(tmp_path / "ckpt", card, names=FILES)  # re-sealed: the export reads it as valid
    with pytest.raises(LoraOceanError, match="routes per token, so it is not one LoRA"):
        export_peft(tmp_path / "ckpt", tmp_path / "peft")
    assert not (tmp_path / "peft").exists() and not list(tmp_path.glob(".tmp-peft-*"))


def test_cli_exports_and_refuses_on_one_line(tmp_path, adapters, capsys):
    from test_moe_cli import run

    checkpoint(tmp_path, "uniform", [load_adapter(p) for p in adapters])
    code, out, err = run(["moe", "export", str(tmp_path / "ckpt"), "--to", "peft", str(tmp_path / "peft")], capsys)
    assert code == 0, err
    assert "PEFT LoRA adapter" in out and (tmp_path / "peft" / "adapter_model.safetensors").is_file()
    code, _, err = run(["moe", "export", str(tmp_path / "ckpt"), str(tmp_path / "peft")], capsys)
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1
    checkpoint(tmp_path / "r", "rocket", [load_adapter(p) for p in adapters])
    code, _, err = run(["moe", "export", str(tmp_path / "r" / "ckpt"), str(tmp_path / "out")], capsys)
    assert code == 2 and "docs/checkpoint-format.md" in err and len(err.strip().splitlines()) == 1
