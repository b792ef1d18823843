"""Training one LoRA: the PEFT folder reloads with identical logits, the card holds what it
promises, the same seed gives the same bytes, and an interrupted save leaves nothing finished."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from conftest import DEVICE, bigbench_task
from loraocean.artifacts import sha256_file
from loraocean.library import presets
from loraocean.library.presets import PRESETS, get_preset
from loraocean.library.train import CARD, WEIGHTS, lora_config, train_lora
from loraocean.models import load

TASK = "bb_intent_recognition"
SMOKE = PRESETS["smoke"]


@pytest.fixture(autouse=True)
def _bigbench():
    bigbench_task("intent_recognition")  # fails clearly when ../shared is missing


@pytest.mark.min_versions
def test_adapter_reloads_with_peft_and_gives_identical_logits(tiny_llama, tmp_path):
    from peft import PeftModel, get_peft_model

    model, tok = tiny_llama
    card = train_lora("tiny-llama", TASK, SMOKE, out=tmp_path / "a", model=model, tokenizer=tok)
    # The caller's base model is given back unchanged (no LoRA layers left in it).
    assert not any("lora" in n for n, _ in model.named_modules())
    ids = torch.tensor([tok("Play some jazz music please").input_ids], device=DEVICE)
    with torch.no_grad():
        base_logits = model(input_ids=ids).logits
    # Independent reconstruction: a fresh PEFT wrapper with the saved state dict loaded by hand.
    fresh, _ = load("tiny-llama")
    manual = get_peft_model(fresh, lora_config(fresh, SMOKE))
    state = load_file(tmp_path / "a" / WEIGHTS)
    missing = manual.load_state_dict({k.replace(".weight", ".default.weight"): v for k, v in state.items()},
                                     strict=False)
    assert not missing.unexpected_keys
    manual.eval()
    with torch.no_grad():
        want = manual(input_ids=ids).logits
    fresh2, _ = load("tiny-llama")
    with torch.no_grad():
        got = PeftModel.from_pretrained(fresh2, tmp_path / "a").eval()(input_ids=ids).logits
    assert torch.equal(want, got)
    assert not torch.allclose(base_logits, got)
    # LoRA B is trained away from its zero init in every adapted module
    b = [v for k, v in state.items() if "lora_B" in k]
    assert len(b) == 2 * 7 and all(v.abs().sum() > 0 for v in b)
    assert card["weights_sha256"] == sha256_file(tmp_path / "a" / WEIGHTS)


def test_card_records_everything(tiny_llama, tmp_path):
    model, tok = tiny_llama
    train_lora("tiny-llama", TASK, SMOKE, out=tmp_path / "a", model=model, tokenizer=tok, seed=3)
    card = json.loads((tmp_path / "a" / CARD).read_text())
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert card["model"] == "tiny-llama" and card["task"] == TASK and card["seed"] == 3
    assert card["preset"] == SMOKE.to_dict()
    assert config["r"] == SMOKE.r and config["lora_alpha"] == SMOKE.alpha
    assert sorted(config["target_modules"]) == card["target_modules"]
    assert card["n_train"] == SMOKE.train_limit and len(card["data_hash"]) == 64
    assert card["template"] == "plain"  # the byte tokenizer has no chat template
    t = card["train"]
    assert t["steps"] == len(t["loss_curve"]) == SMOKE.train.max_steps
    assert t["tokens"] > 0 and card["tokens_per_second"] > 0 and card["seconds"] > 0
    assert card["versions"]["peft"] and card["versions"]["torch"]


def test_same_seed_same_bytes_other_seed_differs(tiny_llama, tmp_path):
    model, tok = tiny_llama
    cards = [train_lora("tiny-llama", TASK, SMOKE, out=tmp_path / str(i), model=model, tokenizer=tok,
                        seed=s) for i, s in enumerate((0, 0, 1))]
    assert cards[0]["weights_sha256"] == cards[1]["weights_sha256"]
    assert cards[0]["train"]["loss_curve"] == cards[1]["train"]["loss_curve"]
    assert cards[2]["weights_sha256"] != cards[0]["weights_sha256"]


def test_crash_mid_save_leaves_no_finished_folder(tiny_llama, tmp_path, monkeypatch):
    import loraocean.library.train as train_mod

    model, tok = tiny_llama

    def crash(folder, card):  # the weights are on disk, the card is not yet written
        assert (folder / WEIGHTS).is_file() and not (folder / CARD).exists()
        raise OSError("disk full")

    monkeypatch.setattr(train_mod, "write_card", crash)
    with pytest.raises(OSError, match="disk full"):
        train_lora("tiny-llama", TASK, SMOKE, out=tmp_path / "a", model=model, tokenizer=tok)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temp folder is left
    assert not any("lora" in n for n, _ in model.named_modules())


def test_presets_are_complete_and_stale_detection():
    for name, p in PRESETS.items():
        assert p.name == name and p.part in ("all", "attention", "mlp")
        assert get_preset(name) is p
    lite = PRESETS["lite"].to_dict()
    assert not presets.is_stale(lite)
    assert presets.is_stale({**lite, "lr": 1.0})
    assert not presets.is_stale({"name": "imported", "r": 8})


def test_library_preset_is_the_shared_shape_with_the_flat_card_it_always_had():
    """One Preset shape (nested TrainConfig) for the library and the MoE fits; a card keeps the flat
    form every existing card has (its values as written before the change), so none turns stale."""
    from loraocean.moe.presets import get_preset as fit_preset
    from loraocean.presets import Preset

    lite = PRESETS["lite"]
    assert isinstance(lite, Preset) and isinstance(fit_preset("lite"), Preset)
    assert lite.to_dict() == {
        "name": "lite", "r": 8, "alpha": 16, "dropout": 0.05, "part": "all", "lr": 5e-4, "epochs": 1.0,
        "max_steps": 40, "batch_size": 8, "grad_accum": 1, "warmup_ratio": 0.05, "weight_decay": 0.0,
        "max_grad_norm": 1.0, "max_length": 256, "train_limit": 320, "template": "auto",
        "gradient_checkpointing": False, "micro_batch": None, "max_memory_gib": None}
    assert lite.train_config(7).seed == 7 and lite.train_config(7).lr == 5e-4
    # the one way to cap, the same for both tables
    for p in (lite, fit_preset("lite")):
        capped = p.capped(96, 12)
        assert capped.name == "lite[max_examples=96,max_steps=12]"
        assert (capped.train_limit, capped.train.max_steps, capped.train.lr) == (96, 12, p.train.lr)
    assert not presets.is_stale(lite.capped(96, 12).to_dict())  # its own name: never read as stale lite
    assert lite.with_train(micro_batch=2).values() == lite.values()  # execution fields: not stale


def cli(*args) -> int:
    """Run the CLI in this process (as the console script does); returns the exit code."""
    from loraocean.cli import main

    try:
        main(list(args))
    except SystemExit as exit_:
        return exit_.code or 0
    return 0


def test_cli_train_and_bad_input(tmp_path, capsys):
    out = tmp_path / "a"
    assert cli("train", "--model", "tiny-llama", "--task", TASK, "--out", str(out), "--preset", "smoke") == 0
    card = json.loads((out / CARD).read_text())
    assert card["preset"]["name"] == "smoke"
    assert f"{card['train']['steps']} steps" in capsys.readouterr().out
    for args, message in [
        (("--out", str(out)), "already exists"),
        (("--out", str(tmp_path / "b"), "--preset", "lyte"), "unknown preset 'lyte'; did you mean 'lite'"),
        (("--out", str(tmp_path / "b"), "--limit", "0"), "--limit must be at least 1"),
        (("--out", str(tmp_path / "b"), "--task", "bb_intent_recogniton"), "did you mean 'bb_intent_recognition'"),
    ]:
        code = cli("train", "--model", "tiny-llama", "--task", TASK, *args)
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "b").exists()


@pytest.mark.real_model
def test_embedded_model_adapter_reloads_with_identical_logits(tmp_path):
    """The same round trip on the real embedded SmolLM2-135M (chat template, 49k vocabulary),
    checked against a hand merge W + (alpha / r) B A; one model load, one training step."""
    from peft import PeftModel

    model, tok = load("smollm2-135m")
    quick = replace(PRESETS["lite"].with_train(max_steps=1, batch_size=2), name="quick", train_limit=2,
                    max_length=128)
    ids = torch.tensor([tok("Book a table for two tonight").input_ids], device=DEVICE)
    with torch.no_grad():
        base_logits = model(input_ids=ids).logits
    card = train_lora("smollm2-135m", TASK, quick, out=tmp_path / "a", model=model, tokenizer=tok)
    assert card["template"] == "chat" and card["train"]["steps"] == 1
    with torch.no_grad():
        peft_model = PeftModel.from_pretrained(model, tmp_path / "a").eval()
        got = peft_model(input_ids=ids).logits
    model = peft_model.unload()
    state = load_file(tmp_path / "a" / WEIGHTS)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for key, a in state.items():
            if ".lora_A." not in key:
                continue
            b = state[key.replace(".lora_A.", ".lora_B.")]
            name = key.split(".lora_A.")[0].removeprefix("base_model.model.")
            modules[name].weight += ((quick.alpha / quick.r) * (b @ a)).to(modules[name].weight)
        want = model(input_ids=ids).logits
    assert not torch.allclose(base_logits, got)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
