"""MoLA against its reference's equations, written out here: the per-layer expert counts (groups of
decoder layers, bottom to top), one Linear's output W0 x + sum_j w_j s B_j A_j x with (w, j) the
renormalised top-k of softmax(W_r x) over that layer's experts, and the per-decoder-layer balance
loss E_l sum_i f_i P_i on hand-made router outputs."""

from __future__ import annotations

import pytest
import torch

from conftest import DEVICE
from loraocean.models import load
from loraocean.moe import get_method
from loraocean.moe.methods.mola import MolaRouter, counts, layer_balance
from loraocean.testing import Kit
from loraocean.testing.conformance import perturb


def fitted(options: dict, experts=None, family: str = "llama"):
    m = get_method("mola")
    base, tok = load(f"tiny-{family}")
    cfg = m.make_config(options)
    moe = m.build(base, m.prepare(base, tok, experts or [], cfg, None), cfg)
    perturb(moe, 5)
    return moe.eval(), cfg


def test_counts_follow_groups_of_decoder_layers_bottom_to_top():
    modules = [f"model.layers.{i}.mlp.up_proj" for i in range(32)]
    got = counts(modules, [2, 4, 6, 8])
    assert [got[m] for m in modules] == [2] * 8 + [4] * 8 + [6] * 8 + [8] * 8  # the reference's 2468 on 32 layers
    thirty = counts([f"model.layers.{i}.q_proj" for i in range(30)], [2, 4, 6, 8])
    assert [thirty[f"model.layers.{i}.q_proj"] for i in (0, 7, 8, 14, 15, 22, 23, 29)] == [2, 2, 4, 4, 6, 6, 8, 8]
    assert set(counts(modules, [2, 4, 6, 8], cap=3).values()) == {2, 3}


def test_fresh_experts_live_only_where_the_count_exceeds_their_number():
    moe, cfg = fitted({"init": "fresh", "layer_experts": [2, 5]})  # tiny-llama: 2 decoder layers
    assert len(moe.expert_info) == 5
    for name, layer in moe.layers().items():
        n = 2 if ".layers.0." in name else 5
        assert layer.ranks == [8] * n + [0] * (5 - n), name
        assert layer.router.weight.shape == (n, layer.d_in)
    assert len(moe.layers()) == 14  # every attention and MLP projection


def test_from_the_library_a_layer_holds_the_best_ranked_loras(tmp_path):
    kit = Kit(root=tmp_path)
    base, _ = load("tiny-llama")
    library = kit.experts(base)
    moe, _ = fitted({"layer_experts": [2, 8]}, library)
    assert [e["name"] for e in moe.expert_info] == [e.name for e in library]
    q0, q1 = moe.layers()["model.layers.0.self_attn.q_proj"], moe.layers()["model.layers.1.self_attn.q_proj"]
    assert q0.ranks == [4, 4, 0] and q1.ranks == [4, 4, 4]  # 2 in the bottom group; 8 capped at the 3 selected


def test_a_linear_is_the_renormalised_top_k_mix_of_its_experts():
    moe, cfg = fitted({"init": "fresh", "layer_experts": [3, 6], "dropout": 0.0})
    layer = moe.layers()["model.layers.1.mlp.down_proj"]
    assert isinstance(layer.router, MolaRouter) and layer.router.top_k == 2
    x = torch.randn(4, layer.d_in, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    with torch.no_grad():
        got = layer(x)
        W = layer.router.weight.double()
        want = layer.base(x).double()
        for t in range(4):
            logits = W @ x[t].double()
            p = torch.softmax(logits, 0)
            order = sorted(range(6), key=lambda i: -float(p[i]))[:2]
            for i in order:
                sl = layer.expert_slice(i)
                delta = layer.scales[i] * layer.lora_B[:, sl].double() @ (layer.lora_A[sl].double() @ x[t].double())
                want[t] += float(p[i]) / sum(float(p[j]) for j in order) * delta
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


def reference_layer_loss(probs: list[torch.Tensor], k: int, keep: list[int]) -> float:
    """The reference's per-decoder-layer loss, written with loops: f_i = share of all top-k picks
    (over the layer's Linears and kept tokens) that went to expert i, P_i = mean probability."""
    rows = [p for q in probs for p, m in zip(q.reshape(-1, q.shape[-1]).tolist(), keep) if m]
    n_experts = len(rows[0])
    picks = [i for p in rows for i in sorted(range(n_experts), key=lambda i: -p[i])[:k]]
    f = [picks.count(i) / len(picks) for i in range(n_experts)]
    P = [sum(p[i] for p in rows) / len(rows) for i in range(n_experts)]
    return n_experts * sum(fi * Pi for fi, Pi in zip(f, P))


def test_balance_loss_of_one_decoder_layer_on_a_hand_made_batch():
    torch.manual_seed(0)
    probs = [torch.rand(2, 3, 4).softmax(-1) for _ in range(3)]  # 3 Linears of one decoder layer
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    got = float(layer_balance(probs, 2, mask))
    assert got == pytest.approx(reference_layer_loss(probs, 2, mask.flatten().tolist()), rel=1e-6)
    assert float(layer_balance(probs, 2, None)) == pytest.approx(reference_layer_loss(probs, 2, [1] * 6), rel=1e-6)
    # hand values: uniform probabilities, every expert picked equally often -> E (1/E)(1/E) E = 1;
    # all the probability on expert 0, top-2 always experts 0 and 1 -> E x 1/2 x 1
    uniform = [torch.full((1, 4, 4), 0.25) + torch.tensor([[[1e-3, 1e-3, 0, 0], [0, 1e-3, 1e-3, 0],
                                                            [0, 0, 1e-3, 1e-3], [1e-3, 0, 0, 1e-3]]])]
    assert float(layer_balance(uniform, 2, None)) == pytest.approx(1.0, abs=1e-2)
    collapsed = [torch.tensor([[[1.0, 0.001, 0, 0]] * 5])]
    assert float(layer_balance(collapsed, 2, None)) == pytest.approx(4 * 0.5 * 1.0, rel=1e-2)


def test_aux_loss_sums_decoder_layers_times_the_coefficient():
    moe, cfg = fitted({"init": "fresh", "layer_experts": [2, 4]})
    ids = torch.randint(0, 250, (2, 5), generator=torch.Generator().manual_seed(3)).to(DEVICE)
    mask = torch.tensor([[1] * 5, [1, 1, 1, 0, 0]]).to(DEVICE)
    moe(input_ids=ids, attention_mask=mask)
    keep = mask.flatten().tolist()
    want = 0.0
    for i in range(2):
        probs = [layer.router.last_probs.detach() for name, layer in moe.layers().items() if f".layers.{i}." in name]
        assert len(probs) == 7 and probs[0].shape[-1] == (2, 4)[i]
        want += reference_layer_loss(probs, 2, keep)
    assert float(get_method("mola").aux_loss(moe, cfg).detach()) == pytest.approx(0.001 * want, rel=1e-5)
