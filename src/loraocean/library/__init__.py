"""The LoRA library: training one LoRA with a named preset, the on-disk store (PEFT folders +
card.json + manifest), import/export, and the build over (model, task) pairs.

    from loraocean.library import Library, train_lora
    card = train_lora("smollm2-135m", "bb_intent_recognition", preset="lite", out="lib/a")
    Library("lib").get("smollm2-135m", "bb_intent_recognition").path
"""

from loraocean.library import presets
from loraocean.library.build import build
from loraocean.library.presets import PRESETS, Preset, get_preset
from loraocean.library.share import export_adapter, import_adapter
from loraocean.library.store import Entry, Library, Report
from loraocean.library.train import train_lora

__all__ = ["PRESETS", "Entry", "Library", "Preset", "Report", "build", "export_adapter",
           "get_preset", "import_adapter", "presets", "train_lora"]
