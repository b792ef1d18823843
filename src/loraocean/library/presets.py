"""Named hyperparameter presets: one shared set of values per library, as in LoRALib.

Every value is written to each adapter's card; docs/library.md explains each choice.
- `lite`: finishes in a few minutes on 2 CPU cores with the embedded 135M model (capped steps).
- `loralib`: GPU-scale runs: whole train split, 3 epochs, cosine, warm-up 3%, effective batch 32,
  gradient checkpointing on (a 7-8B base does not fit one card without it; see docs/library.md).
- `smoke`: a handful of steps, for tests and smoke runs only (numbers from it mean nothing).

A library preset is the shared `loraocean.presets.Preset` (name, nested `TrainConfig`, data
limits) plus the LoRA's shape. Its card form (`to_dict`) is flat, as cards have always been. The
execution fields (gradient checkpointing, micro-batch, memory cap) decide only how a step is run,
not what it learns (see `loraocean.trainer`), so changing them does not make an adapter stale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from loraocean.presets import Preset as _Base
from loraocean.presets import lookup
from loraocean.trainer import TrainConfig

# The TrainConfig fields a card records (flat, next to the LoRA's shape).
CARD_TRAIN_FIELDS = ("lr", "epochs", "max_steps", "batch_size", "grad_accum", "warmup_ratio", "weight_decay",
                     "max_grad_norm", "gradient_checkpointing", "micro_batch", "max_memory_gib")
EXECUTION = ("gradient_checkpointing", "micro_batch", "max_memory_gib")


@dataclass(frozen=True)
class Preset(_Base):
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    part: str = "all"         # target modules: all (attention + MLP), attention or mlp
    template: str = "auto"    # prompt template (auto: the model's chat template when it has one)

    def values(self) -> dict:
        """Every value that decides what is learned (whether an adapter is stale): all but the
        name and the execution fields."""
        return training_values(self.to_dict())

    def to_dict(self) -> dict:
        """The card's flat form: name, LoRA shape, training values, limits."""
        train = asdict(self.train)
        return {"name": self.name, "r": self.r, "alpha": self.alpha, "dropout": self.dropout, "part": self.part,
                **{k: train[k] for k in CARD_TRAIN_FIELDS if k not in EXECUTION},
                "max_length": self.max_length, "train_limit": self.train_limit, "template": self.template,
                **{k: train[k] for k in EXECUTION}}


PRESETS: dict[str, Preset] = {
    "lite": Preset("lite", TrainConfig(lr=5e-4, epochs=1.0, max_steps=40, batch_size=8, grad_accum=1,
                                       warmup_ratio=0.05, weight_decay=0.0, max_grad_norm=1.0),
                   train_limit=320, max_length=256, r=8, alpha=16, dropout=0.05, part="all"),
    "loralib": Preset("loralib", TrainConfig(lr=2e-4, epochs=3.0, max_steps=None, batch_size=8, grad_accum=4,
                                             warmup_ratio=0.03, weight_decay=0.0, max_grad_norm=1.0,
                                             gradient_checkpointing=True),
                      train_limit=None, max_length=1024, r=16, alpha=32, dropout=0.05, part="all"),
    "smoke": Preset("smoke", TrainConfig(lr=1e-3, epochs=1.0, max_steps=4, batch_size=4, grad_accum=1,
                                         warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1.0),
                    train_limit=32, max_length=96, r=4, alpha=8, dropout=0.0, part="all"),
}


def get_preset(preset: "str | Preset") -> Preset:
    return lookup(PRESETS, preset, "preset")


def training_values(preset: dict) -> dict:
    """A preset's (or a card's preset's) values without its name and execution fields."""
    return {k: v for k, v in preset.items() if k != "name" and k not in EXECUTION}


def is_stale(card_preset: dict) -> bool:
    """True when a card's preset has a known name whose values changed since it was trained."""
    name = card_preset.get("name")
    if name not in PRESETS:
        return False
    return training_values(card_preset) != PRESETS[name].values()
