"""Training presets for `fit`: how much of the target task's train split is used and how.

- smoke: a few steps, for tests and trying the pipeline (16 examples, 3 steps).
- lite: a quick run on CPU (up to 400 training examples, 1 epoch, at most 100 steps).
- loralib: the reference defaults (LoRAMoE: lr 2e-4, 1 epoch, cosine, warm-up 3%, effective batch
  32, gradient checkpointing on as in the library's `loralib` preset).
Every trained method gets the same budget from its preset, and chooses its learning rate from the
same grid (`lr_grid`) on the target's dev split (`moe.tuning`, done by a study's fit jobs): a
comparison between methods trained for different lengths, or tuned differently, would measure
that. A method's reference settings (e.g. Rocket's lr 5e-5 and 5 epochs) are its
`Method.train_overrides`, applied only where a study names them.
"""

from __future__ import annotations

from dataclasses import dataclass

from loraocean.presets import Preset as _Base
from loraocean.presets import lookup
from loraocean.trainer import TrainConfig


@dataclass(frozen=True)
class Preset(_Base):
    max_length: int = 512
    dev_limit: int | None = None  # dev examples a method's `prepare` step (and the lr sweep) may use
    lr_grid: tuple[float, ...] = ()  # learning rates every trained method chooses from on dev (moe.tuning)


# The grid: the references' own rates (Rocket 5e-5, LoRAMoE 2e-4) and one 4x above, the same for
# every trained method; a study gives a method a fixed `train: {lr: ...}` to skip it (unequal tuning,
# which the report says).
GRID = (5e-5, 2e-4, 8e-4)
PRESETS = {
    "smoke": Preset("smoke", TrainConfig(lr=1e-3, max_steps=3, batch_size=4, warmup_ratio=0.0),
                    train_limit=16, dev_limit=8, max_length=128, lr_grid=(3e-4, 1e-3)),
    "lite": Preset("lite", TrainConfig(lr=2e-4, epochs=1, max_steps=100, batch_size=8),
                   train_limit=400, dev_limit=100, max_length=256, lr_grid=GRID),
    "loralib": Preset("loralib", TrainConfig(lr=2e-4, epochs=1, batch_size=8, grad_accum=4, warmup_ratio=0.03,
                                             gradient_checkpointing=True),
                      train_limit=None, dev_limit=200, max_length=1024, lr_grid=GRID),
}


def get_preset(name: "str | Preset") -> Preset:
    return lookup(PRESETS, name, "MoE preset")
