"""The stacked multi-expert layer against PEFT: one-hot gates == that adapter alone, uniform gates
== PEFT's exact "cat" merge with weights 1/E; uneven ranks and alphas; loop-free maths."""

from __future__ import annotations


import pytest
import torch

from conftest import DEVICE, tol
from loraocean.models import load
from loraocean.moe import inject, load_adapter, moe_layers
from loraocean.moe.layer import FixedGates, MoELinear, top_k_renormalise
from loraocean.library.card import write_card

# `make test-min` runs this file at the lowest declared versions:
# the MoE layer against PEFT's LoRA layers (GPT-2's Conv1D too).
pytestmark = pytest.mark.min_versions

# (rank, alpha, target modules, seed): uneven ranks, scalings and module sets on purpose
SPECS = [(2, 4, ["q_proj", "v_proj", "up_proj", "down_proj"], 1),
         (4, 16, ["q_proj", "v_proj", "up_proj", "down_proj"], 2),
         (8, 8, ["q_proj", "v_proj", "up_proj", "down_proj"], 3)]


# With LORAOCEAN_TEST_DTYPE=bfloat16 only: tiny-model logits (size ~0.5) computed by us and by PEFT
# in bf16 are a few roundings of 2**-9 relative apart per layer (an estimate, see tests/conftest.py).
BF16_LOGITS = 3e-2


def make_adapters(root, specs=SPECS, model_name="tiny-llama"):
    """PEFT LoRA folders with random (non-zero) A and B on a tiny model; returns their paths."""
    from peft import LoraConfig, get_peft_model

    paths = []
    for i, (r, alpha, targets, seed) in enumerate(specs):
        base, _ = load(model_name)
        torch.manual_seed(seed)
        peft_model = get_peft_model(base, LoraConfig(r=r, lora_alpha=alpha, target_modules=targets,
                                                     init_lora_weights=False))
        with torch.no_grad():  # larger B so experts change the logits clearly
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.mul_(20)
        path = root / f"adapter{i}"
        peft_model.save_pretrained(path)
        write_card(path, {"model": model_name, "task": f"task{i}"})
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    return make_adapters(tmp_path_factory.mktemp("adapters"))


def ids():
    torch.manual_seed(0)
    return torch.randint(0, 250, (2, 12)).to(DEVICE)


def peft_logits(paths, weights=None, combination=None):
    from peft import PeftModel

    base, _ = load("tiny-llama")
    model = PeftModel.from_pretrained(base, str(paths[0]), adapter_name="a0")
    for i, p in enumerate(paths[1:], 1):
        model.load_adapter(str(p), adapter_name=f"a{i}")
    if combination:
        model.add_weighted_adapter([f"a{i}" for i in range(len(paths))], weights, "m",
                                   combination_type=combination)
        model.set_adapter("m")
    with torch.no_grad():
        return model(input_ids=ids()).logits


def ours(paths, gates):
    base, _ = load("tiny-llama")
    experts = [load_adapter(p, model=base) for p in paths]
    inject(base, experts, router=lambda layer: FixedGates(gates).to(DEVICE))
    with torch.no_grad():
        return base(input_ids=ids()).logits


@pytest.mark.parametrize("i", [0, 1, 2])
def test_one_hot_gates_equal_peft_single_adapter(adapters, i):
    from peft import PeftModel

    base, _ = load("tiny-llama")
    with torch.no_grad():
        plain = base(input_ids=ids()).logits
    ref_model = PeftModel.from_pretrained(load("tiny-llama")[0], str(adapters[i]))
    with torch.no_grad():
        ref = ref_model(input_ids=ids()).logits
    got = ours(adapters, [1.0 if j == i else 0.0 for j in range(3)])
    assert (ref - plain).abs().max() > 1e-2  # the adapter matters
    torch.testing.assert_close(got, ref, atol=tol(1e-5, BF16_LOGITS), rtol=0)


def test_uniform_gates_equal_peft_cat_merge(adapters):
    ref = peft_logits(adapters, [1 / 3] * 3, "cat")
    torch.testing.assert_close(ours(adapters, [1 / 3] * 3), ref, atol=tol(1e-5, BF16_LOGITS), rtol=0)


def test_uneven_module_sets_and_ranks(tmp_path):
    specs = [(2, 4, ["q_proj", "up_proj"], 5), (6, 3, ["v_proj", "up_proj"], 6)]
    paths = make_adapters(tmp_path, specs)
    base, _ = load("tiny-llama")
    layers = inject(base, [load_adapter(p) for p in paths], router=lambda layer: FixedGates([0.3, 0.7]).to(DEVICE))
    q, up = layers["model.layers.0.self_attn.q_proj"], layers["model.layers.0.mlp.up_proj"]
    assert q.ranks == [2, 0] and up.ranks == [2, 6]
    assert "model.layers.0.mlp.down_proj" not in layers
    # reference: explicit per-expert sum on one layer
    x = torch.randn(3, 5, up.base.in_features).to(DEVICE, up.base.weight.dtype)
    e0, e1 = load_adapter(paths[0]), load_adapter(paths[1])
    m = "model.layers.0.mlp.up_proj"
    A0, B0, A1, B1 = (t.to(x) for t in (e0.A[m], e0.B[m], e1.A[m], e1.B[m]))
    want = up.base(x) + 0.3 * (4 / 2) * x @ A0.T @ B0.T + 0.7 * (3 / 6) * x @ A1.T @ B1.T
    with torch.no_grad():  # bf16: outputs of size ~1 rounded at 2**-8 in different orders
        torch.testing.assert_close(up(x), want, atol=tol(1e-5, 0.05), rtol=tol(1e-5, 0.02))


def test_per_token_gates_match_explicit_sum():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5).to(DEVICE)
    As = [torch.randn(r, 6).to(DEVICE) for r in (1, 3, 2)]
    Bs = [torch.randn(5, r).to(DEVICE) for r in (1, 3, 2)]
    scales = [2.0, 0.5, 1.0]
    layer = MoELinear(base, As, Bs, scales)
    x = torch.randn(2, 4, 6).to(DEVICE)
    gates = torch.rand(2, 4, 3).softmax(-1).to(DEVICE)
    layer.external_gates = gates
    want = base(x) + sum(gates[..., e:e + 1] * scales[e] * (x @ As[e].T @ Bs[e].T) for e in range(3))
    torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)
    assert not base.weight.requires_grad and layer.lora_A.requires_grad


def _loop_reference(base, As, Bs, scales, x, gates, dropout_mask=None):
    """The layer's maths written out per expert (no stacking, no in-place update)."""
    x_in = x if dropout_mask is None else x * dropout_mask
    return base(x) + sum(gates[..., e:e + 1] * scales[e] * (x_in @ As[e].T @ Bs[e].T) for e in range(len(As)))


def test_gradients_through_router_and_experts_match_explicit_sum():
    """Backward through the stacked layer (its base output updated in place) gives the same
    gradients for the input, every expert's A and B and the router as the per-expert sum."""
    from loraocean.moe.layer import SoftmaxRouter

    torch.manual_seed(0)
    ranks, scales = (1, 3, 2), [2.0, 0.5, 1.0]
    base = torch.nn.Linear(6, 5).to(DEVICE)
    As = [torch.randn(r, 6).to(DEVICE) for r in ranks]
    Bs = [torch.randn(5, r).to(DEVICE) for r in ranks]
    layer = MoELinear(base, As, Bs, scales)
    layer.router = SoftmaxRouter(6, 3).to(DEVICE)
    x = torch.randn(2, 4, 6).to(DEVICE).requires_grad_()
    upstream = torch.randn(2, 4, 5).to(DEVICE)
    (layer(x) * upstream).sum().backward()

    ref_A = [a.clone().requires_grad_() for a in As]
    ref_B = [b.clone().requires_grad_() for b in Bs]
    ref_w = layer.router.weight.detach().clone().requires_grad_()
    ref_x = x.detach().clone().requires_grad_()
    gates = (ref_x @ ref_w.T).softmax(-1)
    (_loop_reference(base, ref_A, ref_B, scales, ref_x, gates) * upstream).sum().backward()

    torch.testing.assert_close(x.grad, ref_x.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.router.weight.grad, ref_w.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.lora_A.grad, torch.cat([a.grad for a in ref_A]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.lora_B.grad, torch.cat([b.grad for b in ref_B], 1), atol=1e-5, rtol=1e-5)
    assert base.weight.grad is None


def test_dropout_applies_to_the_experts_input_in_training_only():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5).to(DEVICE)
    As, Bs, scales = [torch.randn(2, 6), torch.randn(3, 6)], [torch.randn(5, 2), torch.randn(5, 3)], [1.5, 0.5]
    As, Bs = [a.to(DEVICE) for a in As], [b.to(DEVICE) for b in Bs]
    layer = MoELinear(base, As, Bs, scales, dropout=0.5)
    x, gates = torch.randn(3, 6).to(DEVICE), torch.rand(3, 2).softmax(-1).to(DEVICE)
    layer.external_gates = gates
    torch.manual_seed(7)
    got = layer(x)
    torch.manual_seed(7)  # the same mask, drawn the way the layer draws it
    mask = torch.nn.functional.dropout(torch.ones_like(x), 0.5, training=True)
    assert 0 < int((mask == 0).sum()) < mask.numel()
    with torch.no_grad():
        torch.testing.assert_close(got, _loop_reference(base, As, Bs, scales, x, gates, mask), atol=1e-5, rtol=1e-5)
        layer.eval()
        torch.testing.assert_close(layer(x), _loop_reference(base, As, Bs, scales, x, gates), atol=1e-5, rtol=1e-5)


def test_bfloat16_layer_follows_the_float32_maths():
    torch.manual_seed(0)
    base = torch.nn.Linear(16, 8).to(DEVICE)
    As, Bs, scales = [torch.randn(2, 16), torch.randn(4, 16)], [torch.randn(8, 2), torch.randn(8, 4)], [2.0, 0.25]
    As, Bs = [a.to(DEVICE) for a in As], [b.to(DEVICE) for b in Bs]
    x, gates = torch.randn(3, 16).to(DEVICE), torch.rand(3, 2).softmax(-1).to(DEVICE)
    with torch.no_grad():
        want = _loop_reference(base, As, Bs, scales, x, gates)
        layer = MoELinear(base.to(torch.bfloat16), As, Bs, scales)
        layer.external_gates = gates  # float32 gates, as a float32 router gives them
        got = layer(x.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16 and layer.lora_A.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=0.1, rtol=0.02)


def test_top_k_renormalise_by_hand():
    p = torch.tensor([[0.1, 0.5, 0.15, 0.25]])
    torch.testing.assert_close(top_k_renormalise(p, 2), torch.tensor([[0, 0.5 / 0.75, 0, 0.25 / 0.75]]))
    assert top_k_renormalise(p, None) is p


def test_load_adapter_reads_peft_scaling_and_rejects_others(adapters, tmp_path):
    from loraocean.errors import LoraOceanError

    e = load_adapter(adapters[1])
    assert set(e.scale.values()) == {16 / 4}
    assert len(e.modules) == 2 * 4 and e.rank("model.layers.1.mlp.up_proj") == 4
    with pytest.raises(LoraOceanError, match="not a PEFT adapter folder"):
        load_adapter(tmp_path)
    assert moe_layers(load("tiny-llama")[0]) == {}


def test_gpt2_conv1d_and_dotted_targets_equal_peft(tmp_path):
    """GPT-2 keeps its projections in Conv1D (weight stored d_in x d_out) and tells attention and
    MLP `c_proj` apart only by path (`mlp.c_proj`): one-hot gates still equal PEFT's adapter, and
    LoRAMoE's FFN-only experts land on exactly the MLP's two layers."""
    from peft import PeftModel

    from loraocean.models import targets
    from loraocean.moe import get_method

    base, _ = load("tiny-gpt2")
    specs = [(4, 8, targets(base, "all"), 11), (2, 2, targets(base, "all"), 12)]
    paths = make_adapters(tmp_path, specs, model_name="tiny-gpt2")
    ref_model = PeftModel.from_pretrained(load("tiny-gpt2")[0], str(paths[1]))
    with torch.no_grad():
        ref = ref_model(input_ids=ids()).logits
        plain = load("tiny-gpt2")[0](input_ids=ids()).logits
    model, _ = load("tiny-gpt2")
    inject(model, [load_adapter(p, model=model) for p in paths], router=lambda layer: FixedGates([0.0, 1.0]))
    with torch.no_grad():
        got = model(input_ids=ids()).logits
    assert (ref - plain).abs().max() > 1e-2
    torch.testing.assert_close(got, ref, atol=tol(1e-5, BF16_LOGITS), rtol=0)

    method = get_method("loramoe")
    moe = method.build(load("tiny-gpt2")[0], [load_adapter(p) for p in paths], method.make_config({}))
    adapted = sorted({n.split(".h.0.", 1)[1] for n in moe.layers() if ".h.0." in n})
    assert adapted == ["mlp.c_fc", "mlp.c_proj"]


def test_router_on_bfloat16_activations_is_mixtrals_and_trains_a_float32_weight():
    """On a bf16 model the router multiplies in bf16 (its float32 weight cast on the way in) and
    takes the softmax in float32, as transformers' Mixtral router does; checked against the same
    maths in float64 from the bf16-rounded operands, and the weight's gradient stays float32."""
    from loraocean.moe.layer import SoftmaxRouter

    torch.manual_seed(0)
    router = SoftmaxRouter(32, 4).to(DEVICE)
    x = torch.randn(5, 32).to(DEVICE, torch.bfloat16)
    gates = router(x, None, None)
    assert gates.dtype == torch.float32 and router.weight.dtype == torch.float32
    logits = x.double() @ router.weight.detach().to(torch.bfloat16).double().T
    # bf16 output rounding of logits of size ~1: a few 2**-8 relative, far below a gate's size
    torch.testing.assert_close(gates.double(), logits.softmax(-1), atol=2e-2, rtol=0)
    gates[:, 0].sum().backward()
    assert router.weight.grad.dtype == torch.float32 and router.weight.grad.abs().sum() > 0
    x32 = x.float()  # on float32 activations: the float32 product, exactly
    torch.testing.assert_close(router(x32, None, None), (x32 @ router.weight.T).softmax(-1))
