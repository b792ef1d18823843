"""Memory options of the trainer change how a step runs, never what it computes: activation
checkpointing gives the same loss and gradients (LoRA and every MoE method that trains, dropout
on), micro-batches give the batch's gradient, an out-of-memory step is redone with half the
micro-batch; the options are checked, and quantized loading says why it cannot run here."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import bigbench_task
from loraocean.batching import encode, pad_batch
from loraocean.errors import ConfigError, MissingPackageError, TrainingError
from loraocean.library.presets import PRESETS, get_preset, is_stale
from loraocean.library.train import fit_lora, lora_config
from loraocean.models import load
from loraocean.moe import get_method, load_adapter
from loraocean.moe.presets import get_preset as moe_preset
from loraocean.tasks import load_split
from loraocean.trainer import TrainConfig, answer_loss, checkpointing, hf_model, train
from test_moe_layer import make_adapters

TARGETS = ["q_proj", "v_proj", "up_proj", "down_proj", "gate_proj"]
TASK = bigbench_task("intent_recognition")  # answers of different lengths: token weights matter


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    return make_adapters(tmp_path_factory.mktemp("lib"), [(4, 8, TARGETS, s) for s in (21, 22, 23)])


@pytest.fixture(scope="module")
def encoded():
    _, tok = load("tiny-llama")
    return [encode(ex, tok, max_length=80) for ex in load_split(TASK, "train", limit=8)], tok.pad_token_id


def build(name: str, adapters):
    """(model, aux_loss) in training mode, with dropout wherever the method has it."""
    base, _ = load("tiny-llama")
    if name == "lora":
        from peft import get_peft_model

        torch.manual_seed(0)
        preset = dataclasses.replace(get_preset("smoke"), dropout=0.1)
        return get_peft_model(base, lora_config(base, preset)).train(), None
    method = get_method(name)
    # loramoe: the plain balance loss (no loss on a one-type fit by default), so the aux path is checked
    options = {"xlora": {"depth": 2, "hidden": 16, "dropout": 0.2}, "hydralora": {"balance_coef": 0.1},
               "loramoe": {"balance_one_type": True}}.get(name, {})
    cfg = method.make_config(options)
    experts = [] if name == "loramoe" else [load_adapter(p) for p in adapters]
    if method.prepare is not None:  # the experts the model holds (MixLoRA, MoLA, HydraLoRA)
        experts = method.prepare(base, None, experts, cfg, None)
    moe = method.build(base, experts, cfg).train()
    return moe, ((lambda: method.aux_loss(moe, cfg)) if method.aux_loss else None)


def loss_and_grads(model, aux, batch):
    torch.manual_seed(5)  # the same dropout masks for both runs
    loss = answer_loss(model, batch)
    if aux is not None:
        loss = loss + aux()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


@pytest.mark.parametrize("name", ["lora", "loramoe", "rocket", "xlora", "mole", "mixlora", "mola", "hydralora"])
@pytest.mark.min_versions
def test_checkpointing_gives_the_same_loss_and_gradients(adapters, encoded, name):
    data, pad_id = encoded
    model, aux = build(name, adapters)
    batch = pad_batch(data[:6], pad_id)
    calls = []  # forwards of one MLP with gradients (not X-LoRA's no-grad scaling pass)
    mlp = hf_model(model).model.layers[0].mlp
    mlp.register_forward_pre_hook(lambda *_: calls.append(1) if torch.is_grad_enabled() else None)
    want_loss, want = loss_and_grads(model, aux, batch)
    assert len(calls) == 1
    with checkpointing(model, True):
        got_loss, got = loss_and_grads(model, aux, batch)
    assert len(calls) == 3  # forward + its recomputation in backward: checkpointing was on
    assert not any(getattr(m, "gradient_checkpointing", False) for m in hf_model(model).modules())  # off again
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-6, atol=1e-7)
    assert want and set(got) == set(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-7, msg=n)
    assert any(g.abs().sum() > 0 for g in want.values())


@pytest.mark.min_versions
def test_checkpointing_in_training_reaches_the_same_weights(adapters, encoded):
    """Whole `train` runs (X-LoRA: gates of pass 2 must survive until backward recomputes it)."""
    data, pad_id = encoded
    runs = []
    for on in (False, True):
        model, aux = build("xlora", adapters)
        log = train(model, data, TrainConfig(lr=1e-3, max_steps=3, batch_size=4, warmup_ratio=0,
                                             gradient_checkpointing=on), pad_id, aux_loss=aux)
        runs.append((log.losses, [p.detach().clone() for p in model.trainable_parameters()]))
    assert runs[1][0] == pytest.approx(runs[0][0], rel=1e-5)
    for got, want in zip(runs[1][1], runs[0][1]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def lora_weights(peft_model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_" in n}


def test_micro_batches_train_to_the_same_weights():
    """batch 4 x grad_accum 2 as forwards of 4, 2 and 1 examples: the same losses and weights (the
    micro-batch losses weighted by answer tokens make up the batch's mean token loss)."""
    runs = []
    for micro in (None, 2, 1):
        model, tok = load("tiny-llama")
        preset = get_preset("smoke").with_train(grad_accum=2, max_steps=3, micro_batch=micro)
        peft_model, card = fit_lora(model, tok, TASK, preset)
        runs.append((card["train"], lora_weights(peft_model)))
    assert runs[0][1] and [r[0]["micro_batch"] for r in runs] == [4, 2, 1]
    for train_log, weights in runs[1:]:
        assert train_log["loss_first"] == pytest.approx(runs[0][0]["loss_first"], rel=1e-5)
        assert train_log["loss_last"] == pytest.approx(runs[0][0]["loss_last"], rel=1e-5)
        for n, w in weights.items():
            torch.testing.assert_close(w, runs[0][1][n], rtol=1e-4, atol=1e-6, msg=n)


def test_out_of_memory_halves_the_micro_batch(encoded):
    """A device that holds at most 2 examples per forward (simulated: CUDA's out-of-memory error
    raised above 2 rows): the step is redone with 4, then 2, and trains as micro_batch=2 does."""
    data, pad_id = encoded
    cfg = TrainConfig(lr=1e-3, epochs=2, batch_size=8, warmup_ratio=0)
    runs = []
    for micro in (None, 2):
        model, _ = load("tiny-llama")

        def small_card(module, args, kwargs):
            if kwargs["input_ids"].shape[0] > 2:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

        model.register_forward_pre_hook(small_card, with_kwargs=True)
        log = train(model, data, TrainConfig(**{**cfg.__dict__, "micro_batch": micro}), pad_id)
        runs.append((log, model.lm_head.weight.detach().clone()))
    assert runs[0][0].micro_batch == 2 and runs[0][0].steps == 2
    assert runs[0][0].losses == pytest.approx(runs[1][0].losses, rel=1e-6)
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=1e-5, atol=1e-7)

    model, _ = load("tiny-llama")
    model.register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(torch.OutOfMemoryError("x")))
    with pytest.raises(TrainingError, match="gradient_checkpointing"):
        train(model, data, cfg, pad_id)


def test_bad_memory_options_are_config_errors(encoded):
    data, pad_id = encoded
    model, _ = load("tiny-llama")
    with pytest.raises(ConfigError, match="micro_batch"):
        train(model, data, TrainConfig(micro_batch=0), pad_id)
    with pytest.raises(ConfigError, match="CUDA"):
        train(model, data, TrainConfig(max_memory_gib=8.0, max_steps=1), pad_id)


def test_presets_checkpoint_at_scale_and_execution_fields_are_not_staleness():
    assert PRESETS["loralib"].train.gradient_checkpointing and not PRESETS["lite"].train.gradient_checkpointing
    assert PRESETS["loralib"].train_config(0).gradient_checkpointing
    assert moe_preset("loralib").train_config(0).gradient_checkpointing
    card = PRESETS["loralib"].to_dict()
    assert not is_stale({**card, "gradient_checkpointing": False, "micro_batch": 2})
    old = {k: v for k, v in card.items() if k not in ("gradient_checkpointing", "micro_batch", "max_memory_gib")}
    assert not is_stale(old)  # a card written before these fields existed
    assert is_stale({**card, "lr": 1e-3})


def test_quantized_loading_says_why_it_cannot_run(monkeypatch):
    with pytest.raises(ConfigError, match="4bit, 8bit"):
        load("smollm2-135m", quantize="3bit")
    with pytest.raises(ConfigError, match="tiny"):
        load("tiny-llama", quantize="4bit")
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        load("smollm2-135m", device="cpu", quantize="4bit")
    import loraocean.models as models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(MissingPackageError, match="pip install bitsandbytes"):
        load("smollm2-135m", device="cuda", quantize="8bit")


def test_cli_memory_flags(tmp_path, capsys):
    import json

    from test_train import cli

    out = tmp_path / "a"
    common = ("train", "--model", "tiny-llama", "--task", TASK, "--preset", "smoke")
    assert cli(*common, "--out", str(out), "--micro-batch", "2", "--gradient-checkpointing") == 0
    card = json.loads((out / "card.json").read_text())
    assert card["preset"]["micro_batch"] == 2 and card["preset"]["gradient_checkpointing"]
    assert card["train"]["micro_batch"] == 2 and card["dtypes"]["trainable"] == "float32"
    for args, message in [(("--max-memory", "4"), "needs a CUDA device"),
                          (("--quantize", "4bit"), "pretrained models")]:
        code = cli(*common, "--out", str(tmp_path / "b"), *args)
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "b").exists()
