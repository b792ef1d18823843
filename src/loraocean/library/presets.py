"""Named hyperparameter presets: one shared set of values per library, as in LoRALib.

Every value is written to each adapter's card; docs/library.md explains each choice.
- `lite`: finishes in a few minutes on 2 CPU cores with the embedded 135M model (capped steps).
- `loralib`: GPU-scale runs: whole train split, 3 epochs, cosine, warm-up 3%, effective batch 32,
  gradient checkpointing on (a 7-8B base does not fit one card without it; see docs/library.md).

The last three fields decide only how a step is run, not what it learns (see `loraocean.trainer`),
so changing them does not make an adapter stale.
- `smoke`: a handful of steps, for tests and smoke runs only (numbers from it mean nothing).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from loraocean.errors import UnknownNameError
from loraocean.trainer import TrainConfig


@dataclass(frozen=True)
class Preset:
    name: str
    r: int
    alpha: int
    dropout: float
    part: str                 # target modules: all (attention + MLP), attention or mlp
    lr: float
    epochs: float
    max_steps: int | None     # optimizer steps; caps epochs when set
    batch_size: int           # examples per forward pass
    grad_accum: int           # forward passes per optimizer step (effective batch = product)
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    max_length: int           # tokens per example (prompt cut from the left)
    train_limit: int | None   # cap on training examples (seeded subset)
    template: str = "auto"    # prompt template (auto: the model's chat template when it has one)
    gradient_checkpointing: bool = False  # recompute activations in backward (less memory)
    micro_batch: int | None = None        # examples per forward (None: batch_size)
    max_memory_gib: float | None = None   # CUDA: cap on device memory (smaller micro-batches)

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(lr=self.lr, epochs=self.epochs, max_steps=self.max_steps,
                           batch_size=self.batch_size, grad_accum=self.grad_accum,
                           warmup_ratio=self.warmup_ratio, weight_decay=self.weight_decay,
                           max_grad_norm=self.max_grad_norm, seed=seed,
                           gradient_checkpointing=self.gradient_checkpointing,
                           micro_batch=self.micro_batch, max_memory_gib=self.max_memory_gib)

    def values(self) -> dict:
        """Every value that decides what is learned (whether an adapter is stale): all but the
        name and the execution fields."""
        return training_values(asdict(self))

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> "Preset":
        return replace(self, **changes)


PRESETS: dict[str, Preset] = {
    "lite": Preset(name="lite", r=8, alpha=16, dropout=0.05, part="all", lr=5e-4, epochs=1.0,
                   max_steps=40, batch_size=8, grad_accum=1, warmup_ratio=0.05, weight_decay=0.0,
                   max_grad_norm=1.0, max_length=256, train_limit=320),
    "loralib": Preset(name="loralib", r=16, alpha=32, dropout=0.05, part="all", lr=2e-4,
                      epochs=3.0, max_steps=None, batch_size=8, grad_accum=4, warmup_ratio=0.03,
                      weight_decay=0.0, max_grad_norm=1.0, max_length=1024, train_limit=None,
                      gradient_checkpointing=True),
    "smoke": Preset(name="smoke", r=4, alpha=8, dropout=0.0, part="all", lr=1e-3, epochs=1.0,
                    max_steps=4, batch_size=4, grad_accum=1, warmup_ratio=0.0, weight_decay=0.0,
                    max_grad_norm=1.0, max_length=96, train_limit=32),
}


def get_preset(preset: "str | Preset") -> Preset:
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise UnknownNameError("preset", preset, PRESETS)
    return PRESETS[preset]


EXECUTION = ("gradient_checkpointing", "micro_batch", "max_memory_gib")


def training_values(preset: dict) -> dict:
    """A preset's (or a card's preset's) values without its name and execution fields."""
    return {k: v for k, v in preset.items() if k != "name" and k not in EXECUTION}


def is_stale(card_preset: dict) -> bool:
    """True when a card's preset has a known name whose values changed since it was trained."""
    name = card_preset.get("name")
    if name not in PRESETS:
        return False
    return training_values(card_preset) != PRESETS[name].values()
