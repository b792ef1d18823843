"""The conformance kit (`loraocean.testing`): every built-in method passes every check, on the test
device and dtype and in bf16; and each check fails, naming the method and what it did, on a method
written to break exactly that rule (so that no check passes vacuously)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from conftest import DEVICE
from loraocean.moe import all_methods, register_method
from loraocean.moe.experts import fresh_expert
from loraocean.moe.layer import FixedGates, SoftmaxRouter, inject
from loraocean.moe.model import MoEModel, freeze_base
from loraocean.moe.registry import METHODS
from loraocean.testing import CHECKS, ConformanceError, Kit, check_method

BUILTIN = sorted(name for name in all_methods()  # methods of other packages: tested by their own suites
                 if METHODS.sources[name].startswith("loraocean.moe.methods."))
FAST = [c for c in CHECKS if c != "builds"]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return Kit(root=tmp_path_factory.mktemp("conformance"))  # the test device and dtype (conftest)


def test_the_new_methods_are_built_in():
    assert {"mixlora", "mola", "hydralora", "loramoe", "xlora", "uniform", "merge_ties"} <= set(BUILTIN)


@pytest.mark.parametrize("check", FAST)
@pytest.mark.parametrize("method", BUILTIN)
def test_every_built_in_method_conforms(kit, method, check):
    assert check_method(method, kit, [check]) == [check]


@pytest.mark.slow
@pytest.mark.parametrize("method", BUILTIN)
def test_every_built_in_method_builds_on_every_family(kit, method):
    assert len(kit.families) == 17
    assert check_method(method, kit, ["builds"]) == ["builds"]


@pytest.mark.parametrize("method", BUILTIN)
def test_every_built_in_method_runs_in_bf16(tmp_path_factory, method):
    kit = Kit(device=str(DEVICE), dtype=torch.bfloat16, root=tmp_path_factory.mktemp("bf16"))
    assert check_method(method, kit, ["device_dtype", "save_load"]) == ["device_dtype", "save_load"]


# --- methods that each break one rule --------------------------------------------------------------

@dataclass
class Plain:
    seed: int = 0


def _fresh(base, n: int, seed: int, generator=None):
    gen = generator or torch.Generator().manual_seed(seed)
    return [fresh_expert(base, f"e{i}", ["q_proj", "v_proj"], 2, 4.0, gen) for i in range(n)]


def unsaved(base, experts, cfg):
    """Trains a scale that lives on the base model, where no checkpoint looks."""
    experts = _fresh(base, 2, cfg.seed)
    freeze_base(base)
    inject(base, experts, router=lambda layer: FixedGates([0.5, 0.5]))
    base.model.norm.extra = nn.Parameter(torch.ones(()))
    return MoEModel(base, cfg, experts)


def unseeded(base, experts, cfg):
    """Initialises its routers from the global random state."""
    experts = _fresh(base, 2, cfg.seed)
    freeze_base(base)
    inject(base, experts, router=lambda layer: SoftmaxRouter(layer.d_in, 2))
    return MoEModel(base, cfg, experts)


def not_base(base, experts, cfg):
    """Claims to be the base model without experts, but its fresh B is not zero."""
    experts = _fresh(base, 2, cfg.seed)
    for e in experts:
        for m in e.B:
            e.B[m] = torch.full_like(e.B[m], 0.05)
    freeze_base(base)
    inject(base, experts, router=lambda layer: FixedGates([0.5, 0.5]))
    return MoEModel(base, cfg, experts)


class Counting(FixedGates):
    """Fixed gates that also count the tokens they saw in a buffer (a hidden side effect)."""

    def __init__(self, weights):
        super().__init__(weights)
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x, h, layer):
        self.seen += x.shape[0]
        return super().forward(x, h, layer)


def side_effect(base, experts, cfg):
    experts = _fresh(base, 2, cfg.seed)
    freeze_base(base)
    inject(base, experts, router=lambda layer: Counting([0.5, 0.5]))
    return MoEModel(base, cfg, experts)


class Forgetful(nn.Module):
    """Gates computed at build time from the experts' values and kept in a plain attribute, not a
    buffer: a checkpoint does not carry them, and the experts a checkpoint is rebuilt on are zeros."""

    def __init__(self, layer):
        super().__init__()
        norms = torch.stack([layer.lora_B.detach()[:, layer.expert_slice(e)].norm() for e in range(layer.n_experts)])
        self.weights = (10 * norms).softmax(-1)

    def forward(self, x, h, layer):
        return self.weights.to(x.device).expand(*x.shape[:-1], -1)


def forgetful(base, experts, cfg):
    """Built on the kit's LoRAs (and, from a checkpoint, on zero tensors of their shapes)."""
    freeze_base(base)
    inject(base, experts, router=lambda layer: Forgetful(layer))
    return MoEModel(base, cfg, experts)


BROKEN = {  # name: (build, trains, degenerates, the check it fails, what the kit says)
    "broken_unsaved": (unsaved, True, (), "trains_declared", "checkpoint does not save them"),
    "broken_unseeded": (unseeded, True, (), "deterministic", "differs between two builds with the same seed"),
    "broken_not_base": (not_base, False, ("base",), "degenerates", "built without experts vs the base model"),
    "broken_side_effect": (side_effect, True, (), "trains_declared", "which it does not train"),
    "broken_forgetful": (forgetful, False, (), "save_load", "the loaded checkpoint"),
}


@pytest.fixture
def broken():
    for name, (build, trains, degenerates, _, _) in BROKEN.items():
        register_method(name, Plain, trains=trains, degenerates=degenerates)(build)
    yield
    for name in BROKEN:
        METHODS.forget(name)


@pytest.mark.parametrize("name", BROKEN)
def test_each_check_catches_the_method_that_breaks_it(kit, broken, name):
    *_, check, message = BROKEN[name]
    with pytest.raises(ConformanceError, match=f"{name} fails {check}: .*{message}"):
        check_method(name, kit, [check])
    check_method(name, kit, [c for c in FAST if c != check])  # it breaks that rule only


def test_an_export_that_is_not_the_same_model_is_caught(kit, broken, monkeypatch):
    """A method whose declared export writes a folder that loads as another model fails `export`."""
    from loraocean.moe.export import LORA
    from loraocean.moe.registry import Export

    wrong = Export("lora", "PEFT LoRA adapter", LORA.write, lambda base, folder: base.eval())  # drops the LoRA
    monkeypatch.setattr(METHODS["uniform"], "export", wrong)
    with pytest.raises(ConformanceError, match="uniform fails export: the exported PEFT LoRA adapter vs the checkpoint"):
        check_method("uniform", kit, ["export"])


def test_a_crash_is_reported_as_a_failure_of_its_check(kit, broken, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(METHODS["broken_unsaved"], "build", crash)
    with pytest.raises(ConformanceError, match="broken_unsaved fails save_load: RuntimeError: boom"):
        check_method("broken_unsaved", kit, ["save_load"])
