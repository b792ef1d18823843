"""Sharing adapters: import an existing PEFT folder (e.g. from the hub) after checking that it fits
the base model, and export a hub-ready folder with a model card README.md."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from loraocean import models
from loraocean.artifacts import atomic_dir, package_versions, write_text_atomic
from loraocean.errors import LoraOceanError
from loraocean.library.adapter import SET_FIELDS, WEIGHTS, check_adapter, check_fits
from loraocean.library.card import ADAPTER_FILES, CARD, check_card, check_replaceable, write_card
from loraocean.library.store import Entry, Library, folder_of


def import_adapter(lib: Library, folder: str | Path, model_name: str, task: str, model=None,
                   overwrite: bool = False, source: dict | None = None) -> Entry:
    """Add an existing PEFT adapter folder for (model_name, task), with a card of what is known.

    A card.json in the folder (e.g. one of ours pushed to the hub) must pass its integrity check
    and is kept, with model, task, source and integrity record set anew. `source` records where
    the folder came from (default: its local path)."""
    folder = Path(folder)
    dest = lib.path(model_name, task)  # a bad task name fails before any work
    if dest.exists() and not overwrite:
        raise LoraOceanError(f"{dest} already exists; remove it first or pass --overwrite")
    check_replaceable(dest)
    for name in ADAPTER_FILES:
        if not (folder / name).is_file():
            raise LoraOceanError(f"{folder} has no {name}; import needs a PEFT adapter folder "
                                 f"({', '.join(ADAPTER_FILES)})")
    config = check_adapter(folder)
    previous = check_card(folder) if (folder / CARD).is_file() else {}  # one of ours: must hold
    if model is None:
        model, _ = models.load(model_name)
    adapted = check_fits(folder, model)
    card = {
        "preset": {"name": "imported", "r": config.get("r"), "alpha": config.get("lora_alpha"),
                   "dropout": config.get("lora_dropout"),
                   "target_modules": config.get("target_modules")},
        "base_model_in_adapter": config.get("base_model_name_or_path"),
        "metrics": {}, "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    card.update({k: v for k, v in previous.items() if k not in ("files", "card_sha256")})
    card.update(model=model_name, task=task, folder=folder_of(model_name, task), adapted_modules=len(adapted),
                imported_from=source or {"path": str(folder.resolve())})
    with atomic_dir(dest, overwrite=overwrite) as tmp:
        for name in ADAPTER_FILES:
            shutil.copy2(folder / name, tmp / name)
        check_adapter(tmp)  # the copies are what the card records
        write_card(tmp, card)
    lib.rebuild_manifest()
    return Entry(model_name, task, dest, card)


def public_card(card: dict) -> dict:
    """The card as it is shared: without the local paths it may record (where a local import came
    from, a base model folder named in the adapter)."""
    out = dict(card)
    source = out.get("imported_from")
    if isinstance(source, str) or (isinstance(source, dict) and "path" in source):
        out.pop("imported_from")
    if not models.hub_id(out.get("base_model_in_adapter")):
        out.pop("base_model_in_adapter", None)
    return out


def portable_config(folder: Path, model_name: str) -> str:
    """adapter_config.json with the base model named by its hub id (None where it has none)
    instead of the local folder it was trained from."""
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = models.hub_id(model_name)
    for key in SET_FIELDS:  # in a stable order, also for adapters imported from elsewhere
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def _load_lines(card: dict, location: str, subfolder: str | None) -> str:
    """Python that loads the adapter with transformers + PEFT alone (no placeholders)."""
    hub = models.hub_id(card["model"])
    where = f'"{location}"' + (f', subfolder="{subfolder}"' if subfolder else "")
    if hub:
        base = f'base = AutoModelForCausalLM.from_pretrained("{hub}")'
    else:  # a tiny test model or a local folder: only loraocean can rebuild it by name
        base = f'base, _ = loraocean.models.load("{card["model"]}")  # no hub copy of this base'
    lines = ["from peft import PeftModel", "from transformers import AutoModelForCausalLM",
             *([] if hub else ["import loraocean.models"]), base,
             f"model = PeftModel.from_pretrained(base, {where})" + ("" if subfolder else "  # this folder")]
    return "\n".join(lines)


def model_card(card: dict, location: str, subfolder: str | None = None) -> str:
    """A hub model card (README.md): metadata block, data, hyperparameters, metrics, how to load.
    `location`: the folder name or hub repo id the adapter is loaded from; `subfolder` inside it."""
    from loraocean.models import embedded

    p = card.get("preset", {})
    train = card.get("train", {})
    hub = models.hub_id(card["model"])
    rows = "\n".join(f"| {k} | {v} |" for k, v in p.items())
    metrics = "\n".join(f"- {k}: {v}" for k, v in card.get("metrics", {}).items()) or "- not evaluated"
    note = ""
    if card["model"] == embedded.NAME:
        note = (f"\nThe adapter was trained on loraocean's embedded copy of `{hub}`: the weights of "
                f"its Q4_1 GGUF (package `{embedded.PACKAGE}`) de-quantized to fp32, so they carry "
                "the quantization error. On the original checkpoint it behaves close to, not exactly "
                "as, measured here.\n")
    source = public_card(card).get("imported_from")
    license_ = card.get("license") or ("other" if "imported_from" in card else "apache-2.0")
    meta = ["library_name: peft", f"license: {license_}", *([f"base_model: {hub}"] if hub else []),
            f"tags: [lora, loraocean, {card['task']}]"]
    data = (f"{card.get('n_train', '?')} training examples of `{card['task']}` (source "
            f"`{card.get('task_source', card['task'])}`, data hash `{str(card.get('data_hash'))[:16]}`), "
            f"prompt template `{card.get('template')}`")
    if "imported_from" in card:
        data = "imported, not trained by loraocean" + (
            f" (from hub repo `{source['repo_id']}`, revision `{source['revision']}`, folder "
            f"`{source['path_in_repo']}`; see its own card for data and license)" if source else "")
    return f"""---
{chr(10).join(meta)}
---
# LoRA adapter: {card['model']} on {card['task']}

Base model: {f"[`{hub}`](https://huggingface.co/{hub})" if hub else f"`{card['model']}` (no hub copy)"}.
{note}
## Data
{data}.

## Hyperparameters
Preset `{p.get('name')}`, seed {card.get('seed')}.

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
{_load_lines(card, location, subfolder)}
```
Weights sha256: `{card.get('weights_sha256')}`. Versions: {card.get('versions')}.
"""


def write_shareable(entry: Entry, dest: Path, location: str, subfolder: str | None = None) -> None:
    """The files that leave this machine: PEFT files (portable config), public card, README.md."""
    shutil.copy2(entry.path / WEIGHTS, dest / WEIGHTS)
    write_text_atomic(dest / "adapter_config.json", portable_config(entry.path, entry.model))
    write_card(dest, public_card(entry.card))  # its integrity record covers the shared files
    write_text_atomic(dest / "README.md", model_card(entry.card, location, subfolder))


def export_adapter(lib: Library, model_name: str, task: str, out: str | Path,
                   overwrite: bool = False) -> Path:
    """A hub-ready copy: PEFT files, card.json and a README.md model card."""
    entry = lib.get(model_name, task)
    if overwrite:
        check_replaceable(out)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_shareable(entry, tmp, Path(out).name)
    return Path(out)
