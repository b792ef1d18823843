"""Training-free baselines against PEFT: Arrow routing == PEFT create_arrow_model, and our merge
methods == PEFT's add_weighted_adapter applied directly."""

from __future__ import annotations

import pytest
import torch

from conftest import DEVICE
from loraocean.models import load
from loraocean.moe import get_method, load_adapter
from loraocean.moe.methods.arrow import prototype
from test_moe_layer import make_adapters

# `make test-min` runs this file at the lowest declared versions:
# Arrow and the merges against PEFT's own.
pytestmark = pytest.mark.min_versions

SPECS = [(4, 8, ["q_proj", "v_proj", "up_proj", "down_proj"], s) for s in (21, 22, 23, 24)]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    return make_adapters(tmp_path_factory.mktemp("arrow"), SPECS)


def ids():
    return torch.randint(0, 250, (2, 11), generator=torch.Generator().manual_seed(3)).to(DEVICE)


def test_prototype_is_top_right_singular_vector():
    torch.manual_seed(0)
    A, B = torch.randn(3, 10), torch.randn(7, 3)
    v = torch.linalg.svd(B @ A).Vh[0]
    got = prototype(A, B)
    assert abs(abs(float(got @ v)) - 1) < 1e-5


@pytest.mark.parametrize("top_k,temperature", [(2, 1.0), (3, 0.5)])
def test_arrow_equals_peft(adapters, top_k, temperature):
    from peft import ArrowConfig, create_arrow_model

    method = get_method("arrow")
    base, _ = load("tiny-llama")
    ours = method.build(base, [load_adapter(p) for p in adapters],
                        method.make_config({"top_k": top_k, "temperature": temperature}))
    ref = create_arrow_model(load("tiny-llama")[0], [str(p) for p in adapters],
                             ArrowConfig(top_k=top_k, router_temperature=temperature, rng_seed=0))
    with torch.no_grad():
        want = ref(input_ids=ids()).logits  # PEFT builds its prototypes on the first forward
        plain = load("tiny-llama")[0](input_ids=ids()).logits
    assert (want - plain).abs().max() > 1e-2
    # PEFT finds each prototype by 15 steps of power iteration, not always converged on random
    # adapters with close singular values; ours is the exact top right singular vector, so it
    # stretches ||B A v|| at least as much. Route with PEFT's prototypes to compare the routing.
    for name, layer in ours.layers().items():
        theirs = ref.base_model.model.get_submodule(name).lora_arrow["arrow_router"].prototypes
        for e in range(layer.n_experts):
            sl = layer.expert_slice(e)
            delta = layer.lora_B[:, sl] @ layer.lora_A[sl]
            assert (delta @ layer.router.prototypes[e]).norm() >= (delta @ theirs[e]).norm() - 1e-4
        layer.router.prototypes.copy_(theirs)
    with torch.no_grad():
        got = ours(input_ids=ids()).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("combination", ["linear", "ties", "svd"])
def test_merge_methods_equal_peft(adapters, combination):
    from peft import PeftModel

    method = get_method(f"merge_{combination}")
    cfg = method.make_config({"weights": [0.5, 0.3, 0.2, 0.4]})
    base, tok = load("tiny-llama")
    experts = method.prepare(base, tok, [load_adapter(p) for p in adapters], cfg, None)
    ours = method.build(base, experts, cfg)
    ref = PeftModel.from_pretrained(load("tiny-llama")[0], str(adapters[0]), adapter_name="a0")
    for i, p in enumerate(adapters[1:], 1):
        ref.load_adapter(str(p), adapter_name=f"a{i}")
    kwargs = {"density": 0.5} if combination == "ties" else {"svd_rank": 4} if combination == "svd" else {}
    ref.add_weighted_adapter([f"a{i}" for i in range(4)], [0.5, 0.3, 0.2, 0.4], "m",
                             combination_type=combination, **kwargs)
    ref.set_adapter("m")
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids()).logits, ref(input_ids=ids()).logits,
                                   atol=1e-5, rtol=0)
