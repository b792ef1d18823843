"""Training one LoRA: PEFT LoraConfig over the family's target modules, the shared trainer on the
task's train split, and an atomic PEFT folder + card.json.

    card = train_lora("smollm2-135m", "bb_intent_recognition", preset="lite", out="lib/x")
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

from loraocean import models
from loraocean.artifacts import atomic_dir, package_versions
from loraocean.library.adapter import WEIGHTS, stable_config  # noqa: F401  (WEIGHTS: re-exported)
from loraocean.library.card import CARD, CARD_VERSION, check_replaceable, write_card
from loraocean.batching import encode
from loraocean.errors import LoraOceanError, TrainingError
from loraocean.library.presets import Preset, get_preset
from loraocean.tasks import data_hash, get_task, load_split, template_name
from loraocean.trainer import train



def lora_config(model, preset: Preset):
    from peft import LoraConfig, TaskType

    fan_in_fan_out = getattr(model.config, "model_type", "") == "gpt2"  # GPT-2 uses Conv1D layers
    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=preset.r, lora_alpha=preset.alpha,
                      lora_dropout=preset.dropout, target_modules=models.targets(model, preset.part),
                      fan_in_fan_out=fan_in_fan_out, bias="none")


def train_examples(task: str, preset: Preset, seed: int = 0, limit: int | None = None):
    """(spec, examples): the task's train split capped to the preset's (or a smaller) limit."""
    spec = get_task(task)
    caps = [c for c in (limit, preset.train_limit) if c is not None]
    examples = load_split(spec, "train", limit=min(caps) if caps else None, seed=seed)
    return spec, examples


def _curve(losses: list[float], points: int = 50) -> list[float]:
    if len(losses) <= points:
        return [round(x, 4) for x in losses]
    step = len(losses) / points
    return [round(losses[int(i * step)], 4) for i in range(points)] + [round(losses[-1], 4)]


def fit_lora(model, tokenizer, task: str, preset: "str | Preset" = "lite", seed: int = 0,
             limit: int | None = None, on_step: Callable[[int, int, float], None] | None = None):
    """(peft_model, card): wrap `model` with a fresh LoRA and train it. The caller saves it
    (`write_adapter`) and gives the base model back with `peft_model.unload()`."""
    from peft import get_peft_model

    preset = get_preset(preset)
    spec, examples = train_examples(task, preset, seed, limit)
    model_name = models.name_of(model)
    template = template_name(tokenizer, preset.template)
    encoded = [encode(ex, tokenizer, template, max_length=preset.max_length) for ex in examples]
    torch.manual_seed(seed)  # LoRA A init
    peft_model = get_peft_model(model, lora_config(model, preset))
    try:
        log = train(peft_model, encoded, preset.train_config(seed), tokenizer.pad_token_id,
                    on_step=on_step)
    except BaseException as err:
        peft_model.unload().eval()  # the caller's base model, unchanged, back in eval mode
        if isinstance(err, TrainingError):  # one line naming the job
            raise TrainingError(f"LoRA of {model_name} on {spec.name}: {err}") from None
        raise
    summary = log.summary()
    card = {
        "card_version": CARD_VERSION,
        "model": model_name,
        "task": spec.name,
        "folder": f"{models.slug(model_name)}/{spec.name}",  # its place in a library
        "task_source": spec.source,
        "preset": preset.to_dict(),
        "seed": seed,
        "data_hash": data_hash(examples),
        "n_train": len(examples),
        "template": template,
        "target_modules": sorted(models.targets(model, preset.part)),
        "train": {**summary, "loss_curve": _curve(log.losses)},
        "seconds": summary["seconds"],
        "tokens_per_second": summary["tokens_per_second"],
        "device": str(next(model.parameters()).device),
        "dtypes": {"base": models.precision(model),
                   "trainable": models.dtype_names(p for p in peft_model.parameters() if p.requires_grad)},
        "versions": package_versions(),
        "metrics": {},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return peft_model, card


def train_lora(model_name: str, task: str, preset: "str | Preset" = "lite", out: str | Path | None = None,
               seed: int = 0, limit: int | None = None, model=None, tokenizer=None,
               on_step: Callable[[int, int, float], None] | None = None, overwrite: bool = False) -> dict:
    """Train one LoRA of `model_name` on `task` and write it to `out` (a PEFT folder + card.json).

    `model`/`tokenizer`: an already-loaded base model (left unchanged afterwards), so a build loads
    each base model once. Returns the card. The folder appears only when complete.
    """
    if out is not None and Path(out).exists() and not overwrite:
        raise LoraOceanError(f"{out} already exists; choose another folder or pass overwrite")
    if out is not None:
        check_replaceable(out)
    if model is None:
        model, tokenizer = models.load(model_name)
    model.config.loraocean_name = model_name
    start = time.perf_counter()
    peft_model, card = fit_lora(model, tokenizer, task, preset, seed, limit, on_step)
    try:
        card["seconds"] = round(time.perf_counter() - start, 2)  # data preparation included
        if out is not None:
            write_adapter(peft_model, card, out, overwrite=overwrite)
    finally:
        peft_model.unload()  # give the caller back its base model without LoRA layers
    return card


def write_adapter(peft_model, card: dict, out: str | Path, overwrite: bool = False) -> Path:
    """The PEFT folder and its card, atomically (the card is written last, inside the temp folder)."""
    with atomic_dir(out, overwrite=overwrite) as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        stable_config(tmp)  # same inputs, same bytes (PEFT writes target_modules in set order)
        write_card(tmp, card)
    return Path(out)
