"""The one LoRA reader (`library.adapter.read_lora`) against PEFT itself: adapters built and saved
by PEFT with rank and alpha patterns (rsLoRA on and off) must read back with the rank and scaling
PEFT's own LoRA layers use, in every place that reads a LoRA (MoE experts, selection's factors)."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from loraocean.library.adapter import check_fits, read_lora
from loraocean.library.card import write_card
from loraocean.models import load
from loraocean.moe import load_adapter
from loraocean.selection.diversity import lora_factors

PREFIX = "base_model.model."
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"]
CASES = {
    # PEFT matches a pattern key as a regex on the end of the module name at a dot boundary; an
    # alternation applies to the whole key (the bug: `(.*\.)?q_proj|v_proj` matched any v_proj only
    # as the whole name).
    "alternation": dict(r=4, lora_alpha=8, rank_pattern={"q_proj|v_proj": 8},
                        alpha_pattern={"q_proj|v_proj": 32}),
    "full_names": dict(r=4, lora_alpha=8, rank_pattern={"layers.0.self_attn.q_proj": 2},
                       alpha_pattern={"layers.0.self_attn.q_proj": 3, "layers.1.mlp.up_proj": 20}),
    # several keys match one module: PEFT takes the first in the file's order (it saves the keys
    # sorted, so these are in that order: the last match would give 6 and 5)
    "first_match": dict(r=4, lora_alpha=8, rank_pattern={"k_proj": 2, "self_attn.k_proj": 6},
                        alpha_pattern={"layers.1.self_attn.o_proj": 7, "o_proj": 5}),
}


def save_peft_adapter(folder, rslora: bool, **patterns):
    """A LoRA made and saved by PEFT on a fresh tiny llama (B randomised so that the weights are
    not zero), with a sealed card naming no model (MoE experts need a card)."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    model, _ = load("tiny-llama")
    config = LoraConfig(target_modules=TARGETS, use_rslora=rslora, **patterns)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT warns that rsLoRA and patterns together are unusual
        peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for module in peft_model.modules():
            if isinstance(module, LoraLayer):
                module.lora_B["default"].weight.normal_()
    peft_model.save_pretrained(folder)
    write_card(folder, {})


def peft_adapter(tmp_path, case: str, rslora: bool):
    """(folder, {module: (r, scaling, A, B)}): the adapter of CASES[case] as PEFT's own layers
    hold it once PEFT has loaded the folder (`PeftModel.from_pretrained`)."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    folder = tmp_path / f"{case}-{rslora}"
    save_peft_adapter(folder, rslora, **CASES[case])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = PeftModel.from_pretrained(load("tiny-llama")[0], str(folder))
    layers = {}
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer):
            layers[name.removeprefix(PREFIX)] = (module.r["default"], module.scaling["default"],
                                                 module.lora_A["default"].weight.detach().cpu(),
                                                 module.lora_B["default"].weight.detach().cpu())
    return folder, layers


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_reader_matches_peft_scaling(tmp_path, case, rslora):
    folder, layers = peft_adapter(tmp_path, case, rslora)
    lora = read_lora(folder)
    assert sorted(lora.A) == sorted(layers)
    for module, (r, scaling, a, b) in layers.items():
        assert lora.A[module].shape[0] == r, module
        assert lora.scale[module] == pytest.approx(scaling, rel=1e-12), module
        assert torch.equal(lora.A[module].float(), a.float()) and torch.equal(lora.B[module].float(), b.float())
    ranks = {r for r, *_ in layers.values()}
    assert len(ranks) > 1  # the patterns did change something, so the check means something
    # every reader of a LoRA gives the same ranks and scales
    expert = load_adapter(folder)
    factors = lora_factors(folder)
    for module, (r, scaling, _, _) in layers.items():
        assert expert.rank(module) == r and expert.scale[module] == lora.scale[module]
        assert factors[module][0].shape[0] == r and factors[module][2] == lora.scale[module]


def test_reader_pattern_values_independently(tmp_path):
    """The alternation case computed by hand: q_proj and v_proj get r 8, alpha 32; the rest r 4,
    alpha 8; rsLoRA divides by sqrt(r)."""
    for rslora in (False, True):
        folder, _ = peft_adapter(tmp_path, "alternation", rslora)
        lora = read_lora(folder)
        for module in lora.A:
            patterned = module.endswith(("q_proj", "v_proj"))
            r, alpha = (8, 32) if patterned else (4, 8)
            want = alpha / math.sqrt(r) if rslora else alpha / r
            assert lora.A[module].shape[0] == r and lora.scale[module] == want, module


def test_one_fit_check(tmp_path):
    """`check_fits` (used by import and by MoE experts) names the misfit, whoever asks."""
    from loraocean.errors import AdapterMismatchError

    folder, layers = peft_adapter(tmp_path, "alternation", False)
    model, _ = load("tiny-llama")
    assert check_fits(folder, model) == sorted(layers)
    other, _ = load("tiny-gpt2")
    with pytest.raises(AdapterMismatchError, match="'tiny-gpt2' does not have"):
        check_fits(folder, other)
    with pytest.raises(AdapterMismatchError, match="'tiny-gpt2' does not have"):
        load_adapter(folder, model=other)


def test_pattern_order_that_peft_cannot_load_is_refused(tmp_path):
    """A rank_pattern whose keys are in an order where another key matches first on loading (PEFT
    releases before 0.22 saved the keys sorted, which turned {"self_attn.k_proj": 6, "k_proj": 2}
    into this order; the file is written here in that order whatever PEFT is installed): the ranks
    in the file then contradict the config, and the reader says so instead of mis-scaling."""
    from loraocean.errors import DataError

    folder = tmp_path / "contradicting"
    save_peft_adapter(folder, False, r=4, lora_alpha=8, rank_pattern={"self_attn.k_proj": 6, "k_proj": 2})
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["rank_pattern"] = {"k_proj": 2, "self_attn.k_proj": 6}
    config_file.write_text(json.dumps(config))
    write_card(folder, {})  # re-seal: the card's integrity record covers the config
    with pytest.raises(DataError, match="declares rank 2 for model.layers.0.self_attn.k_proj, but its "
                                        "tensors have rank 6"):
        read_lora(folder)
