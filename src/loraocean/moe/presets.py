"""Training presets for `fit`: how much of the target task's train split is used and how.

- smoke: a few steps, for tests and trying the pipeline (16 examples, 3 steps).
- lite: a quick run on CPU (up to 400 training examples, 1 epoch, at most 100 steps).
- loralib: the reference defaults (LoRAMoE: lr 2e-4, 1 epoch, cosine, warm-up 3%, effective batch
  32, gradient checkpointing on as in the library's `loralib` preset).
Every trained method gets the same budget from its preset: a comparison between methods trained
for different lengths would measure the budget. (Rocket's reference code uses lr 5e-5 and 5
epochs; `per_method` can hold such an override, and none is set by default.)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from loraocean.errors import UnknownNameError
from loraocean.trainer import TrainConfig


@dataclass(frozen=True)
class Preset:
    name: str
    train: TrainConfig
    train_limit: int | None
    dev_limit: int | None
    max_length: int = 512
    per_method: dict = field(default_factory=dict)  # method -> TrainConfig field overrides

    def train_config(self, method: str, seed: int) -> TrainConfig:
        return replace(self.train, seed=seed, **self.per_method.get(method, {}))

    def capped(self, max_examples: int | None = None, max_steps: int | None = None) -> "Preset":
        """This preset with at most `max_examples` training examples and `max_steps` optimizer
        steps (a study's caps), under a name that says so (e.g. `lite[max_fit=64,max_steps=8]`)."""
        if max_examples is None and max_steps is None:
            return self
        train = replace(self.train, max_steps=max_steps) if max_steps is not None else self.train
        limits = [c for c in (max_examples, self.train_limit) if c is not None]
        return replace(self, name=f"{self.name}[max_fit={max_examples},max_steps={max_steps}]",
                       train=train, train_limit=min(limits) if limits else None)


PRESETS = {
    "smoke": Preset("smoke", TrainConfig(lr=1e-3, max_steps=3, batch_size=4, warmup_ratio=0.0),
                    train_limit=16, dev_limit=8, max_length=128),
    "lite": Preset("lite", TrainConfig(lr=2e-4, epochs=1, max_steps=100, batch_size=8),
                   train_limit=400, dev_limit=100, max_length=256),
    "loralib": Preset("loralib", TrainConfig(lr=2e-4, epochs=1, batch_size=8, grad_accum=4, warmup_ratio=0.03,
                                                   gradient_checkpointing=True),
                      train_limit=None, dev_limit=200, max_length=1024),
}


def get_preset(name: "str | Preset") -> Preset:
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise UnknownNameError("MoE preset", name, PRESETS)
    return PRESETS[name]
