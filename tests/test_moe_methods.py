"""Every method: training lowers the target task's training loss; save -> load gives identical
logits; the LBC equals its formula by hand; routing statistics; fit() writes a checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import DEVICE, bigbench_task, on_device
from loraocean.batching import encode, pad_batch
from loraocean.models import load
from loraocean.moe import (all_methods, fit, fit_model, get_method, load_adapter, load_checkpoint,
                           routing_stats, save_checkpoint, write_routing)
from loraocean.moe.methods.loramoe import lbc_loss
from loraocean.tasks import load_split
from loraocean.trainer import TrainConfig, train
from test_moe_layer import make_adapters

TARGETS = ["q_proj", "v_proj", "up_proj", "down_proj", "gate_proj"]
SAME = [(4, 8, TARGETS, s) for s in (11, 12, 13)]  # same shapes: LoraHub and Arrow need them
TASK = bigbench_task("sports_understanding")


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    return make_adapters(tmp_path_factory.mktemp("lib"), SAME)


@pytest.fixture(scope="module")
def data():
    _, tok = load("tiny-llama")
    examples = load_split(TASK, "train", limit=16)
    return examples, [encode(ex, tok, max_length=96) for ex in examples], tok


def mean_loss(model, encoded, pad_id) -> float:
    with torch.no_grad():
        losses = [model(**on_device(pad_batch(encoded[i:i + 8], pad_id))).loss.item() for i in range(0, len(encoded), 8)]
    return sum(losses) / len(losses)


TRAINED = [("loramoe", {}, True), ("loramoe", {"n_experts": 4}, False), ("rocket", {}, True),
           ("rocket", {"router_only": True}, True), ("xlora", {"depth": 2, "hidden": 16}, True),
           ("mole", {}, True)]


@pytest.mark.parametrize("name,options,library", TRAINED)
def test_training_lowers_target_loss(adapters, data, name, options, library):
    _, encoded, tok = data
    method = get_method(name)
    cfg = method.make_config(options)
    base, _ = load("tiny-llama")
    moe = method.build(base, [load_adapter(p) for p in adapters] if library else [], cfg)
    before = mean_loss(moe, encoded, tok.pad_token_id)
    moe.task_type = None
    aux = (lambda: method.aux_loss(moe, cfg)) if method.aux_loss else None
    log = train(moe, encoded, TrainConfig(lr=1e-3, epochs=3, max_steps=6, batch_size=8, warmup_ratio=0), tok.pad_token_id,
                aux_loss=aux)
    after = mean_loss(moe, encoded, tok.pad_token_id)
    assert log.steps == 6
    assert after < before - 1e-3, (before, after)
    if name == "xlora":  # only the classifier moved
        assert all(not p.requires_grad for p in moe.base.parameters())


@pytest.mark.parametrize("name,options", [("loramoe", {}), ("xlora", {"depth": 2, "hidden": 16, "dropout": 0.0})])
@pytest.mark.min_versions
def test_answer_only_head_equals_full_loss_and_gradients(adapters, data, name, options):
    """MoE models pass `logits_to_keep` on to the transformers model (as PEFT's do), so the
    trainer's answer-only loss applies to them: same loss and gradients as the full-logits loss."""
    from loraocean.models.calling import takes_logits_to_keep
    from loraocean.trainer import answer_loss

    _, encoded, tok = data
    method = get_method(name)
    moe = method.build(load("tiny-llama")[0], [load_adapter(p) for p in adapters], method.make_config(options))
    moe.eval()  # no dropout: both losses see the same network
    batch = on_device(pad_batch(encoded[:6], tok.pad_token_id))
    assert takes_logits_to_keep(moe)
    full = moe(**batch).loss
    full.backward()
    want = {n: p.grad.clone() for n, p in moe.named_parameters() if p.requires_grad}
    moe.zero_grad()
    fast = answer_loss(moe, batch)
    fast.backward()
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    assert want and all(torch.allclose(p.grad, want[n], rtol=1e-4, atol=1e-6)
                        for n, p in moe.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("name", sorted(all_methods()))
def test_save_load_identical_logits(adapters, data, tmp_path, name):
    if name not in {"base", "uniform", "single", "lorahub", "arrow", "loramoe", "rocket", "xlora", "mole"} \
            and not name.startswith("merge_"):
        return  # a method registered by another test (entry points)
    _, _, tok = data
    base, _ = load("tiny-llama")
    options = {"depth": 2, "hidden": 16} if name == "xlora" else {"budget": 4} if name == "lorahub" else {}
    moe, card = fit_model(name, base, tok, [str(p) for p in adapters], TASK, preset="smoke", options=options)
    ids = torch.randint(0, 250, (2, 9), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    with torch.no_grad():
        want = moe(input_ids=ids).logits
    save_checkpoint(moe, tmp_path / "ckpt", card)
    loaded = load_checkpoint(tmp_path / "ckpt", load("tiny-llama")[0])
    with torch.no_grad():
        got = loaded(input_ids=ids).logits
    assert torch.equal(got, want)
    saved = json.loads((tmp_path / "ckpt" / "card.json").read_text())
    assert saved["method"] == name and saved["model"] == "tiny-llama"
    if name != "base":
        with torch.no_grad():
            plain = load("tiny-llama")[0](input_ids=ids).logits
        assert (got - plain).abs().max() > 1e-4  # the experts are really in there


def test_lbc_equals_formula_by_hand():
    gates = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]],
                          [[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7], [0.5, 0.5, 0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    task_type = torch.tensor([1, 0])
    beta, delta = 0.3, 0.2
    values = []
    for b in range(2):
        for i in range(4):
            q = sum(float(gates[b, t, i]) for t in range(3) if mask[b, t])
            favoured = (i < 2 and task_type[b] == 1) or (i >= 2 and task_type[b] == 0)
            values.append(q * ((1 + delta) if favoured else (1 - delta)))
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    want = beta * var / (mean ** 2 + 1e-10)
    got = lbc_loss(gates, task_type, mask, beta, delta)
    assert abs(got.item() - want) < 1e-6


def test_lbc_without_task_types_is_the_plain_balance_by_hand():
    """One task type in the whole fit: no half of the experts is favoured, importance 1."""
    gates = torch.tensor([[[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]], [[0.2, 0.2, 0.6], [0.3, 0.3, 0.4]]])
    q = [0.1 + 0.6, 0.2 + 0.3, 0.7 + 0.1, 0.2 + 0.3, 0.2 + 0.3, 0.6 + 0.4]
    mean = sum(q) / 6
    want = 0.5 * sum((v - mean) ** 2 for v in q) / 5 / mean ** 2
    assert lbc_loss(gates, None, None, 0.5, 0.2).item() == pytest.approx(want, rel=1e-5)
    # the localized form with all examples of one type would instead favour an arbitrary half
    assert lbc_loss(gates, torch.tensor([0, 0]), None, 0.5, 0.2).item() != pytest.approx(want, rel=1e-3)


def test_task_types_localize_only_a_mixed_fit():
    from types import SimpleNamespace

    from loraocean.moe.methods.loramoe import task_types

    nlu = SimpleNamespace(category="nlu")
    knowledge = SimpleNamespace(category="knowledge")
    plain = [SimpleNamespace(metadata={}) for _ in range(4)]
    assert task_types(nlu, plain) is None and task_types(knowledge, plain) is None
    mixed = plain[:2] + [SimpleNamespace(metadata={"task_type": 1}) for _ in range(2)]
    assert task_types(nlu, mixed) == [0, 0, 1, 1]


def test_loramoe_batch_hook_sets_each_batch_task_types():
    """LoRAMoE's own hook (no other method has one): the batch's types, in the batch's order."""
    from types import SimpleNamespace

    method = get_method("loramoe")
    assert [m.name for m in all_methods().values() if m.batch_hook] == ["loramoe"]
    moe = SimpleNamespace(device=torch.device("cpu"), task_type="unset")
    examples = [SimpleNamespace(metadata={"task_type": t}) for t in (0, 1, 1, 0, 1)]
    hook = method.batch_hook(moe, SimpleNamespace(spec=SimpleNamespace(category="nlu"), train=examples))
    hook([4, 0, 2])
    assert moe.task_type.tolist() == [1, 0, 1]
    plain = [SimpleNamespace(metadata={}) for _ in range(3)]
    method.batch_hook(moe, SimpleNamespace(spec=SimpleNamespace(category="nlu"), train=plain))([0, 1])
    assert moe.task_type is None  # one type in the whole fit: the plain balance


def test_build_names_the_model_once_at_registration(adapters):
    """The model a method builds carries its registered name; no module types it a second time."""
    import inspect

    from loraocean.moe import methods

    for name in ("uniform", "rocket", "target_lora"):
        experts = [load_adapter(p) for p in adapters][: 1 if name == "target_lora" else 3]
        moe = get_method(name).build(load("tiny-llama")[0], experts, get_method(name).make_config())
        assert moe.method == name
    for module in vars(methods).values():
        if inspect.ismodule(module):
            assert "MoEModel(base, \"" not in inspect.getsource(module)


def test_fit_applies_training_overrides_and_records_them(adapters, data, tmp_path):
    """Overrides replace the preset's fields for this fit only (the smoke cap of 3 steps stays)."""
    from loraocean.errors import ConfigError

    _, _, tok = data
    card = fit("rocket", "tiny-llama", [str(p) for p in adapters], TASK, tmp_path / "r", preset="smoke",
               model=load("tiny-llama")[0], tokenizer=tok, train={"lr": 5e-5, "epochs": 5})
    assert (card["train_config"]["lr"], card["train_config"]["epochs"], card["train_config"]["max_steps"]) \
        == (5e-5, 5, 3)
    assert card["train_overrides"] == {"lr": 5e-5, "epochs": 5} and card["train_log"]["steps"] == 3
    plain = fit("rocket", "tiny-llama", [str(p) for p in adapters], TASK, tmp_path / "p", preset="smoke",
                model=load("tiny-llama")[0], tokenizer=tok)
    assert plain["train_config"]["lr"] == 1e-3 and "train_overrides" not in plain  # the preset's budget
    assert get_method("rocket").train_overrides == {"lr": 5e-5, "epochs": 5}  # documented, not applied
    with pytest.raises(ConfigError, match="uniform does not train"):
        fit("uniform", "tiny-llama", [str(p) for p in adapters], TASK, tmp_path / "u", preset="smoke",
            model=load("tiny-llama")[0], tokenizer=tok, train={"lr": 1e-4})
    with pytest.raises(ConfigError, match="lrr"):
        fit("rocket", "tiny-llama", [str(p) for p in adapters], TASK, tmp_path / "x", preset="smoke",
            model=load("tiny-llama")[0], tokenizer=tok, train={"lrr": 1e-4})


def test_routing_stats_and_fit_writes_checkpoint(adapters, data, tmp_path):
    examples, _, tok = data
    base, _ = load("tiny-llama")
    card = fit("loramoe", "tiny-llama", [str(p) for p in adapters], TASK, tmp_path / "run", preset="smoke",
               model=base, tokenizer=tok)
    assert card["train_log"]["steps"] == 3 and len(card["losses"]) == 3
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["card.json", "moe_config.json", "moe_model.safetensors"]
    moe = load_checkpoint(tmp_path / "run", load("tiny-llama")[0])
    stats = routing_stats(moe, tok, examples[:5])
    assert stats["experts"] == ["adapter0", "adapter1", "adapter2"]
    assert len(stats["layers"]) == 2 * 3  # FFN only: gate, up, down in 2 layers
    for row in stats["mean_gates"]:
        assert abs(sum(row) - 1) < 1e-5
    json_path, csv_path = write_routing(stats, tmp_path / "routing")
    assert len(csv_path.read_text().splitlines()) == 1 + 6 * 3
    # uniform gates: every mean gate is exactly 1/E
    uniform = get_method("uniform").build(load("tiny-llama")[0], [load_adapter(p) for p in adapters], None)
    for row in routing_stats(uniform, tok, examples[:3])["mean_gates"]:
        assert row == pytest.approx([1 / 3] * 3, abs=1e-6)


def test_load_checkpoint_refuses_another_base_model(adapters, data, tmp_path):
    from loraocean.errors import AdapterMismatchError

    base, tok = load("tiny-llama")
    fit("uniform", "tiny-llama", [str(p) for p in adapters], TASK, tmp_path / "u", preset="smoke",
        model=base, tokenizer=tok)
    other, _ = load("tiny-llama")
    other.config.loraocean_name = "smollm2-135m"
    with pytest.raises(AdapterMismatchError, match="fitted on 'tiny-llama'"):
        load_checkpoint(tmp_path / "u", other)


@pytest.mark.real_model
def test_loramoe_training_lowers_loss_on_embedded_model():
    base, tok = load("smollm2-135m")
    examples = load_split(TASK, "train", limit=4)
    encoded = [encode(ex, tok, max_length=48) for ex in examples]
    method = get_method("loramoe")
    cfg = method.make_config({"n_experts": 4})
    moe = method.build(base, [], cfg)
    before = mean_loss(moe, encoded, tok.pad_token_id)
    train(moe, encoded, TrainConfig(lr=1e-3, epochs=2, max_steps=2, batch_size=4, warmup_ratio=0),
          tok.pad_token_id, aux_loss=lambda: method.aux_loss(moe, cfg))
    assert mean_loss(moe, encoded, tok.pad_token_id) < before - 1e-2


def test_capped_preset_is_a_named_copy():
    from loraocean.moe.presets import PRESETS, get_preset

    before = dict(PRESETS)
    lite = get_preset("lite")
    capped = lite.capped(64, 8)
    assert capped.name == "lite[max_examples=64,max_steps=8]"
    assert (capped.train_limit, capped.train.max_steps, capped.train.lr) == (64, 8, lite.train.lr)
    assert lite.capped(10_000, None).train_limit == lite.train_limit  # a cap never raises the limit
    assert lite.capped() is lite and get_preset(capped) is capped
    assert PRESETS == before  # nothing registered globally


@pytest.mark.parametrize("typed", [True, False])
def test_lbc_of_stacked_layers_is_the_sum_of_each_layers(typed):
    """aux_loss stacks the layers' gates: the constraint of the stack equals the per-layer sum."""
    torch.manual_seed(0)
    gates = torch.rand(5, 3, 4, 6).softmax(-1)  # layers, batch, tokens, experts
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 0, 0]])
    task_type = torch.tensor([1, 0, 1]) if typed else None
    per_layer = sum(lbc_loss(g, task_type, mask, 0.3, 0.2) for g in gates)
    torch.testing.assert_close(lbc_loss(gates, task_type, mask, 0.3, 0.2), per_layer, rtol=1e-6, atol=0)


def test_loramoe_adds_no_balance_loss_on_one_task_type(adapters):
    """As the reference (its constraint needs both task types; the released script's weight is 0):
    a fit of one type gets no auxiliary loss unless balance_one_type asks for the plain balance."""
    method = get_method("loramoe")
    experts = [load_adapter(p) for p in adapters]
    for balance in (False, True):
        cfg = method.make_config({"balance_one_type": balance})
        moe = method.build(load("tiny-llama")[0], experts, cfg)
        moe.task_type = None
        moe(input_ids=torch.tensor([[5, 6, 7, 8]], device=moe.device))
        loss = method.aux_loss(moe, cfg)
        if not balance:
            assert loss is None
            continue
        gates = torch.stack([layer.last_gates for layer in moe.layers().values()])
        torch.testing.assert_close(loss, lbc_loss(gates, None, moe.attention_mask, cfg.beta, cfg.delta))
    mixed = method.make_config({})
    moe = method.build(load("tiny-llama")[0], experts, mixed)
    moe.task_type = torch.tensor([1], device=moe.device)
    moe(input_ids=torch.tensor([[5, 6, 7, 8]], device=moe.device))
    assert method.aux_loss(moe, mixed) is not None  # two types in the fit: the localized constraint


def test_rocket_experts_drop_their_input_as_the_reference(tmp_path):
    from loraocean.moe.methods.rocket import Config

    assert Config().dropout == 0.05
    experts = [load_adapter(p) for p in make_adapters(tmp_path, SAME[:2])]
    moe = get_method("rocket").build(load("tiny-llama")[0], experts, get_method("rocket").make_config({}))
    assert {layer.dropout for layer in moe.layers().values()} == {0.05}
