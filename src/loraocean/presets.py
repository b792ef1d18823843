"""Training presets, one shape for the library LoRAs and the MoE fits: a name, the data limits and
a nested `TrainConfig` (how the shared loop trains). `capped` is the one way a study caps a preset,
under a name that says so (`lite[max_examples=64,max_steps=8]`).

    p = get_preset("lite").capped(max_examples=64, max_steps=8)
    cfg = p.train_config(seed=0, overrides={"lr": 5e-5})   # the TrainConfig one run uses

`loraocean.library.presets` (LoRA rank, alpha, target modules) and `loraocean.moe.presets` (the dev
examples `prepare` steps may use) add their own fields to this shape.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from loraocean.errors import ConfigError, UnknownNameError
from loraocean.trainer import TrainConfig

# TrainConfig fields a run may override (what is learned): type, check, the rule in words. `seed`
# comes from the run and the execution fields (memory, checkpointing) from the command line.
OVERRIDES = {
    "lr": (float, lambda v: v > 0, "a positive number"),
    "epochs": (float, lambda v: v > 0, "a positive number"),
    "max_steps": (int, lambda v: v >= 1, "a positive integer"),
    "batch_size": (int, lambda v: v >= 1, "a positive integer"),
    "grad_accum": (int, lambda v: v >= 1, "a positive integer"),
    "warmup_ratio": (float, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "weight_decay": (float, lambda v: v >= 0, "a number >= 0"),
    "max_grad_norm": (float, lambda v: v > 0, "a positive number"),
}
# Upper ends far beyond any sensible run: they refuse values that only overflow (lr 1e38).
HIGHEST = {"lr": 10.0, "epochs": 1e4, "max_steps": 10**8, "batch_size": 10**5, "grad_accum": 10**5,
           "weight_decay": 1e3, "max_grad_norm": 1e6}


def override_problem(key: str, value) -> str | None:
    """What is wrong with the training override `key: value`, or None."""
    if key not in OVERRIDES:
        return f"unknown training setting {key!r}; known: {', '.join(OVERRIDES)}"
    kind, ok, rule = OVERRIDES[key]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or (kind is int and not isinstance(value, int)) or not ok(value):
        return f"must be {rule} (got {value!r})"
    if key in HIGHEST and value > HIGHEST[key]:
        return f"must be at most {HIGHEST[key]:g} (got {value!r})"
    return None


@dataclass(frozen=True)
class Preset:
    name: str
    train: TrainConfig
    train_limit: int | None   # cap on training examples (seeded subset); None: the whole split
    max_length: int           # tokens per example (prompt cut from the left)

    def train_config(self, seed: int, overrides: dict | None = None) -> TrainConfig:
        """The TrainConfig of one run: the preset's, with `seed` and `overrides` (field -> value)."""
        overrides = dict(overrides or {})
        for key, value in overrides.items():
            problem = override_problem(key, value)
            if problem:
                raise ConfigError(f"training override {key}: {problem}")
        return replace(self.train, seed=seed, **overrides)

    def with_train(self, **changes) -> "Preset":
        """This preset with some TrainConfig fields changed (e.g. memory options), same name."""
        return replace(self, train=replace(self.train, **changes))

    def capped(self, max_examples: int | None = None, max_steps: int | None = None) -> "Preset":
        """This preset with at most `max_examples` training examples and `max_steps` optimizer steps
        (a study's caps), under a name that records both; unchanged when both are None."""
        if max_examples is None and max_steps is None:
            return self
        train = replace(self.train, max_steps=max_steps) if max_steps is not None else self.train
        limits = [c for c in (max_examples, self.train_limit) if c is not None]
        return replace(self, name=f"{self.name}[max_examples={max_examples},max_steps={max_steps}]",
                       train=train, train_limit=min(limits) if limits else None)


def lookup(table: dict[str, Preset], preset: "str | Preset", what: str) -> Preset:
    """`preset` itself when it is a Preset, else its entry in `table` (an unknown name lists them)."""
    if isinstance(preset, Preset):
        return preset
    if preset not in table:
        raise UnknownNameError(what, preset, table)
    return table[preset]
