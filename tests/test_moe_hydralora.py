"""HydraLoRA against its reference's equations, written out here: one Linear's output
W0 x + sum_i softmax(W_r x)_i s B_i A x with one shared A, the reference initialisation (B heads
zero, A and W_r like nn.Linear), the coefficient-of-variation loss on hand-made gates, and the
library initialisation (head i computes exactly LoRA i)."""

from __future__ import annotations

import statistics

import pytest
import torch

from conftest import DEVICE
from loraocean.models import load
from loraocean.moe import get_method
from loraocean.moe.methods.hydralora import SharedALinear, balance_loss
from loraocean.testing import Kit
from loraocean.testing.conformance import perturb


def built(options: dict, experts=None, move: bool = True):
    m = get_method("hydralora")
    base, tok = load("tiny-llama")
    cfg = m.make_config(options)
    moe = m.build(base, m.prepare(base, tok, experts or [], cfg, None), cfg)
    if move:
        perturb(moe, 7)
    return moe.eval(), cfg


def test_reference_initialisation_shares_one_a_and_zero_heads():
    moe, cfg = built({"init": "fresh"}, move=False)
    layers = moe.layers()
    assert sorted({n.rsplit(".", 1)[-1] for n in layers}) == ["down_proj", "gate_proj", "up_proj"]
    layer = layers["model.layers.0.mlp.up_proj"]
    assert isinstance(layer, SharedALinear) and layer.n_experts == 4
    assert layer.lora_A.shape == (4, 64) and layer.lora_B.shape == (128, 4 * 4)  # r x d_in; d_out x N r
    assert not layer.lora_B.any() and layer.scales.tolist() == [8.0] * 4  # alpha 32 / r 4
    bound = 1 / 64 ** 0.5  # kaiming-uniform, a = sqrt(5): U(-1/sqrt(d_in), 1/sqrt(d_in))
    for w in (layer.lora_A.detach(), layer.router.weight.detach()):
        assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.8 * bound
    trainable = sum(p.numel() for p in moe.trainable_parameters())
    assert trainable == sum(l.lora_A.numel() + l.lora_B.numel() + l.router.weight.numel() for l in layers.values())


def test_a_linear_is_the_softmax_mix_of_heads_over_one_shared_a():
    moe, cfg = built({"init": "fresh", "n_heads": 3, "dropout": 0.0})
    layer = moe.layers()["model.layers.1.mlp.down_proj"]
    x = torch.randn(5, layer.d_in, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    with torch.no_grad():
        got = layer(x)
        A, B, s = layer.lora_A.double(), layer.lora_B.double(), 32.0 / 4
        want = layer.base(x).double()
        for t in range(5):
            g = torch.softmax(layer.router.weight.double() @ x[t].double(), 0)
            h = A @ x[t].double()
            for i in range(3):
                want[t] += g[i] * s * B[:, 4 * i:4 * (i + 1)] @ h
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


def test_every_head_trains_the_one_shared_a():
    moe, _ = built({"init": "fresh"})
    moe.train()
    ids = torch.randint(0, 250, (2, 6)).to(DEVICE)
    moe(input_ids=ids, labels=ids).loss.backward()
    layer = moe.layers()["model.layers.0.mlp.gate_proj"]
    assert layer.lora_A.grad is not None and layer.lora_A.grad.abs().sum() > 0
    assert all(layer.lora_B.grad[:, 4 * i:4 * (i + 1)].abs().sum() > 0 for i in range(4))


def test_cv_squared_loss_on_hand_made_gates():
    gates = torch.tensor([[[0.7, 0.2, 0.1], [0.5, 0.25, 0.25], [0.1, 0.1, 0.8]],
                          [[0.3, 0.3, 0.4], [0.6, 0.2, 0.2], [0.9, 0.05, 0.05]]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    sums = [[sum(gates[b, t, i].item() for t in range(3) if mask[b, t]) for i in range(3)] for b in range(2)]
    z = [v for row in sums for v in row]
    want = statistics.variance(z) / (statistics.fmean(z) ** 2 + 1e-10)
    assert float(balance_loss(gates, mask)) == pytest.approx(want, rel=1e-6)
    assert float(balance_loss(torch.full((2, 3, 3), 1 / 3), None)) == pytest.approx(0.0, abs=1e-12)  # balanced
    assert float(balance_loss(gates[:1, :, :1], None)) == 0.0  # one entry: 0, as the reference


def test_aux_loss_is_off_by_default_and_sums_layers_when_on():
    moe, cfg = built({"init": "fresh", "balance_coef": 0.5})
    ids = torch.randint(0, 250, (2, 5), generator=torch.Generator().manual_seed(6)).to(DEVICE)
    moe(input_ids=ids)
    m = get_method("hydralora")
    want = sum(float(balance_loss(layer.last_gates.detach(), None)) for layer in moe.layers().values())
    assert float(m.aux_loss(moe, cfg).detach()) == pytest.approx(0.5 * want, rel=1e-5)
    assert m.aux_loss(moe, m.make_config({})) is None


def test_from_the_library_head_i_is_lora_i(tmp_path):
    kit = Kit(root=tmp_path)
    base, _ = load("tiny-llama")
    library = kit.experts(base)
    moe, _ = built({}, library, move=False)
    name = "model.layers.0.mlp.down_proj"
    layer = moe.layers()[name]
    assert layer.lora_A.shape[0] == sum(e.rank(name) for e in library)  # the A's stacked
    x = torch.randn(3, layer.d_in, generator=torch.Generator().manual_seed(8)).to(DEVICE)
    with torch.no_grad():
        for i, lora in enumerate(library):
            layer.external_gates = torch.nn.functional.one_hot(torch.tensor(i), 3).float().expand(3, -1).to(DEVICE)
            want = layer.base(x) + lora.scale[name] * (x @ lora.A[name].T.to(DEVICE)) @ lora.B[name].T.to(DEVICE)
            torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)
    layer.external_gates = None
