"""Sharing adapters: import an existing PEFT folder (e.g. from the hub) after checking that it fits
the base model, and export a hub-ready folder with a model card README.md."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from loraocean import models
from loraocean.artifacts import atomic_dir, package_versions, write_text_atomic
from loraocean.errors import AdapterMismatchError, LoraOceanError
from loraocean.library.adapter import WEIGHTS, check_adapter
from loraocean.library.card import ADAPTER_FILES, CARD, check_card, write_card
from loraocean.library.store import Entry, Library


def check_fits(folder: Path, model) -> list[str]:
    """Check every LoRA matrix of the adapter against the base model's layer shapes.

    Returns the adapted module names; raises AdapterMismatchError naming the first misfit.
    (PEFT would only warn about missing keys and fail later with a shape error, so we check first.)
    """
    from safetensors import safe_open

    modules = dict(model.named_modules())
    base = getattr(model.config, "loraocean_name", model.config.name_or_path)
    adapted = set()
    with safe_open(str(folder / WEIGHTS), framework="pt") as fh:
        for key in fh.keys():
            if ".lora_A." not in key and ".lora_B." not in key:
                continue
            name = key.split(".lora_")[0].removeprefix("base_model.model.")
            module = modules.get(name)
            if module is None:
                raise AdapterMismatchError(f"{folder}: the adapter adapts {name!r}, which base model "
                                           f"{base!r} does not have; it was trained for another model")
            shape = fh.get_slice(key).get_shape()
            weight = getattr(module, "weight", None)
            if weight is None:
                raise AdapterMismatchError(f"{folder}: {name!r} in {base!r} has no weight to adapt")
            out_f, in_f = weight.shape
            if type(module).__name__ == "Conv1D":  # GPT-2 stores (in, out)
                in_f, out_f = out_f, in_f
            want = shape[1] if ".lora_A." in key else shape[0]
            have = in_f if ".lora_A." in key else out_f
            if want != have:
                raise AdapterMismatchError(
                    f"{folder}: {key} has {want} features but {name!r} of base model {base!r} has "
                    f"{have}; the adapter was trained for another base model")
            adapted.add(name)
    if not adapted:
        raise LoraOceanError(f"{folder}/{WEIGHTS} holds no LoRA weights")
    return sorted(adapted)


def import_adapter(lib: Library, folder: str | Path, model_name: str, task: str, model=None,
                   overwrite: bool = False) -> Entry:
    """Add an existing PEFT adapter folder for (model_name, task), with a card of what is known."""
    folder = Path(folder)
    for name in ADAPTER_FILES:
        if not (folder / name).is_file():
            raise LoraOceanError(f"{folder} has no {name}; import needs a PEFT adapter folder "
                                 f"({', '.join(ADAPTER_FILES)})")
    config = check_adapter(folder)
    if (folder / CARD).is_file():  # one of ours: its integrity record must hold too
        check_card(folder)
    if model is None:
        model, _ = models.load(model_name)
    adapted = check_fits(folder, model)
    dest = lib.path(model_name, task)
    if dest.exists() and not overwrite:
        raise LoraOceanError(f"{dest} already exists; remove it first or pass --overwrite")
    card = {
        "model": model_name, "task": task,
        "preset": {"name": "imported", "r": config.get("r"), "alpha": config.get("lora_alpha"),
                   "dropout": config.get("lora_dropout"),
                   "target_modules": config.get("target_modules")},
        "imported_from": str(folder.resolve()),
        "base_model_in_adapter": config.get("base_model_name_or_path"),
        "adapted_modules": len(adapted), "metrics": {}, "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_dir(dest, overwrite=overwrite) as tmp:
        for name in ADAPTER_FILES:
            shutil.copy2(folder / name, tmp / name)
        check_adapter(tmp)  # the copies are what the card records
        write_card(tmp, card)
    lib.rebuild_manifest()
    return Entry(model_name, task, dest, card)


def model_card(card: dict) -> str:
    p = card.get("preset", {})
    train = card.get("train", {})
    rows = "\n".join(f"| {k} | {v} |" for k, v in p.items())
    metrics = "\n".join(f"- {k}: {v}" for k, v in card.get("metrics", {}).items()) or "- not evaluated"
    return f"""---
library_name: peft
base_model: {card['model']}
tags: [lora, loraocean, {card['task']}]
---
# LoRA adapter: {card['model']} on {card['task']}

Trained with LoRAOcean (preset `{p.get('name')}`, seed {card.get('seed')}) on {card.get('n_train', '?')}
training examples of `{card['task']}` (data hash `{str(card.get('data_hash'))[:16]}`), prompt template
`{card.get('template')}`.

## Hyperparameters
| name | value |
| --- | --- |
{rows}

## Training
- loss: first {train.get('loss_first')}, last {train.get('loss_last')} over {train.get('steps')} steps
- time: {card.get('seconds')} s, {card.get('tokens_per_second')} tokens/s on {card.get('device')}

## Metrics
{metrics}

## How to load
```python
from peft import PeftModel
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained("<the base model {card['model']}>")
model = PeftModel.from_pretrained(base, "<this folder>")
```
Weights sha256: `{card.get('weights_sha256')}`. Versions: {card.get('versions')}.
"""


def export_adapter(lib: Library, model_name: str, task: str, out: str | Path,
                   overwrite: bool = False) -> Path:
    """A hub-ready copy: PEFT files, card.json and a README.md model card."""
    entry = lib.get(model_name, task)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for name in (*ADAPTER_FILES, CARD):
            shutil.copy2(entry.path / name, tmp / name)
        write_text_atomic(tmp / "README.md", model_card(entry.card))
    return Path(out)
