"""MixLoRA against its reference's equations, written out here independently of our layers:
an MLP block's output is sum_j w_j MLP_{e_j}(x) with MLP_e the family's own MLP module whose
Linears carry W0 + s_e B_e A_e merged into their weights, (w, e) the top-k of softmax(W_g x)
(float32, renormalised); the attention LoRA is one plain LoRA; the Mixtral balance loss on
hand-made router outputs; the frozen MLP runs once per token; the library initialisation."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import DEVICE
from loraocean.models import load
from loraocean.moe import get_method
from loraocean.moe.methods.mixlora import ATTENTION, BlockRouter, balance_loss
from loraocean.testing import Kit
from loraocean.testing.conformance import perturb

# (family, the MLP block of decoder layer 0, its Linears in the order the family table lists them)
BLOCKS = {"llama": "model.layers.0.mlp", "gpt2": "transformer.h.0.mlp", "phi3": "model.layers.0.mlp"}


def fitted(family: str, options: dict, experts=None):
    """A MixLoRA model as `fit` builds it, with every trainable tensor moved off its start."""
    m = get_method("mixlora")
    base, tok = load(f"tiny-{family}")
    cfg = m.make_config(options)
    held = m.prepare(base, tok, experts or [], cfg, None)
    moe = m.build(base, held, cfg)
    perturb(moe, 3)
    return moe.eval(), cfg


def expert_mlp(block, moe, parent: str, e: int):
    """The family's MLP module with expert e's LoRA merged into each of its Linears' weights."""
    merged = copy.deepcopy(block)
    for leaf, child in block.named_children():
        layer = moe.layers().get(f"{parent}.{leaf}")
        if layer is None:
            continue
        sl = layer.expert_slice(e)
        delta = layer.scales[e] * layer.lora_B[:, sl].detach() @ layer.lora_A[sl].detach()  # (d_out, d_in)
        base = copy.deepcopy(layer.base)
        with torch.no_grad():
            base.weight += delta if isinstance(base, torch.nn.Linear) else delta.T  # Conv1D stores (d_in, d_out)
        setattr(merged, leaf, base)
    return merged


@pytest.mark.parametrize("family", BLOCKS)
def test_a_block_is_the_renormalised_top_k_sum_of_whole_experts(family):
    moe, cfg = fitted(family, {"init": "fresh", "n_experts": 4, "top_k": 2, "dropout": 0.0})
    parent = BLOCKS[family]
    block = moe.base.get_submodule(parent)
    router = next(layer.block for name, layer in moe.layers().items() if name.startswith(parent + "."))
    x = torch.randn(2, 5, moe.config.hidden_size, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    with torch.no_grad():
        got = block(x)
        experts = [expert_mlp(block, moe, parent, e + 1) for e in range(cfg.n_experts)]  # e + 1: after the attention LoRA
        want = torch.zeros_like(got)
        W = router.weight.detach().double()
        for b in range(2):
            for t in range(5):
                logits = W @ x[b, t].double()
                p = torch.exp(logits - logits.max())
                p = p / p.sum()
                order = sorted(range(cfg.n_experts), key=lambda i: -float(p[i]))[:2]
                w = [float(p[i]) / sum(float(p[j]) for j in order) for i in order]
                for wi, i in zip(w, order):
                    want[b, t] += wi * experts[i](x[b, t][None, None])[0, 0]
        assert (experts[0](x) - experts[1](x)).abs().max() > 1e-3  # the experts really differ
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_the_attention_lora_is_one_plain_lora_outside_the_experts():
    moe, _ = fitted("llama", {"init": "fresh", "n_experts": 3})
    assert moe.expert_info[0]["name"] == ATTENTION and len(moe.expert_info) == 4
    layer = moe.layers()["model.layers.1.self_attn.q_proj"]
    assert layer.ranks == [8, 0, 0, 0] and layer.scales[0] == 16 / 8
    x = torch.randn(3, 64).to(DEVICE)
    with torch.no_grad():
        want = layer.base(x) + 2.0 * (x @ layer.lora_A.T) @ layer.lora_B.T
        torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)


def test_routers_start_normal_with_std_0_02_and_are_seeded():
    moe, _ = fitted("llama", {"init": "fresh", "n_experts": 8})
    again, _ = fitted("llama", {"init": "fresh", "n_experts": 8})
    weights = torch.cat([r.weight.detach().flatten() for r in moe.routers])
    assert weights.numel() == 2 * 8 * 64  # one router per block: 2 blocks, E=8, d=64
    # moved by `perturb`; the init itself, before it:
    m = get_method("mixlora")
    base, tok = load("tiny-llama")
    cfg = m.make_config({"init": "fresh"})
    fresh = m.build(base, m.prepare(base, tok, [], cfg, None), cfg)
    init = torch.cat([r.weight.detach().flatten() for r in fresh.routers])
    assert abs(float(init.std()) - 0.02) < 0.002 and abs(float(init.mean())) < 0.002
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(moe.routers, again.routers))


def mixtral_loss(probs, chosen, mask, n_experts, top_k):
    """The Mixtral/MoE-PEFT load-balancing loss written out with loops: over every (block, token)
    kept by the mask, f[j][i] = share whose j-th choice is i, P[i] = mean probability of i."""
    rows = [(p, c) for block_p, block_c in zip(probs, chosen)
            for p, c, keep in zip(block_p.tolist(), block_c.tolist(), mask) if keep]
    n = len(rows)
    f = [[sum(1 for _, c in rows if c[j] == i) / n for i in range(n_experts)] for j in range(top_k)]
    P = [sum(p[i] for p, _ in rows) / n for i in range(n_experts)]
    return n_experts * sum(f[j][i] * P[i] for j in range(top_k) for i in range(n_experts))


def test_balance_loss_on_a_hand_made_batch():
    torch.manual_seed(0)
    probs = [torch.rand(6, 4).softmax(-1) for _ in range(2)]  # 2 blocks, batch 2 x 3 tokens, E=4
    chosen = [p.topk(2, -1).indices for p in probs]
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    want = mixtral_loss(probs, chosen, mask.flatten().tolist(), 4, 2)
    assert float(balance_loss(probs, chosen, mask)) == pytest.approx(want, rel=1e-6)
    assert float(balance_loss(probs, chosen, None)) == pytest.approx(mixtral_loss(probs, chosen, [1] * 6, 4, 2), rel=1e-6)
    # hand values: uniform probabilities with balanced choices give k; all tokens on experts 0, 1
    # with all the probability on expert 0 give E x f[0][0] x 1 = E
    uniform = [torch.full((4, 4), 0.25)]
    balanced = [torch.tensor([[0, 1], [1, 2], [2, 3], [3, 0]])]
    assert float(balance_loss(uniform, balanced, None)) == pytest.approx(2.0)
    collapsed = [torch.tensor([[1.0, 0, 0, 0]] * 4)]
    assert float(balance_loss(collapsed, [torch.tensor([[0, 1]] * 4)], None)) == pytest.approx(4.0)


def test_aux_loss_is_0_01_times_the_loss_over_all_blocks_of_the_forward():
    moe, cfg = fitted("llama", {"init": "fresh", "n_experts": 4})
    ids = torch.randint(0, 250, (2, 6), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2]).to(DEVICE)
    moe(input_ids=ids, attention_mask=mask)
    probs = [r.probs.detach() for r in moe.routers]
    chosen = [r.chosen - 1 for r in moe.routers]  # numbered among the MLP experts
    for p, c in zip(probs, chosen):  # the choices are the top 2 of the probabilities
        assert torch.equal(c.sort(-1).values, p.topk(2, -1).indices.sort(-1).values)
    want = 0.01 * mixtral_loss(probs, chosen, mask.flatten().tolist(), 4, 2)
    assert float(get_method("mixlora").aux_loss(moe, cfg).detach()) == pytest.approx(want, rel=1e-5)
    assert get_method("mixlora").aux_loss(moe, get_method("mixlora").make_config({"balance_coef": 0.0})) is None


def test_the_frozen_mlp_runs_once_per_token_not_per_expert():
    """Every frozen Linear of the MLP sees each token once (k = 2 of E = 8): the input-side
    products are shared by the chosen experts, the output product runs on their weighted sum."""
    moe, _ = fitted("llama", {"init": "fresh"})
    rows = {}
    for name, layer in moe.layers().items():
        if ".mlp." in name:
            layer.base.register_forward_hook(lambda mod, args, out, name=name: rows.__setitem__(name, args[0].shape[0]))
    with torch.no_grad():
        moe(input_ids=torch.randint(0, 250, (2, 7)).to(DEVICE))
    assert len(rows) == 6 and set(rows.values()) == {14}


def test_from_the_library_experts_are_the_mlp_parts_and_attention_their_average(tmp_path):
    kit = Kit(root=tmp_path)
    base, tok = load("tiny-llama")
    library = kit.experts(base)
    m = get_method("mixlora")
    held = m.prepare(base, tok, library, m.make_config({}), None)
    assert [e.name for e in held] == [ATTENTION] + [e.name for e in library]
    for e, lib in zip(held[1:], library):
        assert set(e.modules) == {n for n in lib.modules if n.rsplit(".", 1)[-1] in ("gate_proj", "up_proj", "down_proj")}
        assert all(torch.equal(e.A[n], lib.A[n]) and torch.equal(e.B[n], lib.B[n]) for n in e.modules)
    q = "model.layers.0.self_attn.q_proj"
    average = sum(lib.scale[q] * lib.B[q] @ lib.A[q] for lib in library) / len(library)
    torch.testing.assert_close(held[0].scale[q] * held[0].B[q] @ held[0].A[q], average, atol=1e-6, rtol=1e-5)
    assert held[0].rank(q) == sum(lib.rank(q) for lib in library)
    assert not any(n.endswith(("gate_proj", "up_proj", "down_proj")) for n in held[0].modules)
    assert math.isclose(m.make_config({}).balance_coef, 0.01)
