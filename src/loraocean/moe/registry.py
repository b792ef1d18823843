"""The methods registry: ours register with a decorator, other packages through the
`loraocean.methods` entry-point group.

A method is a `Method` and owns everything about itself: its config dataclass (which validates
itself in `__post_init__`), `build(base, experts, cfg) -> MoEModel`, and the optional fields the
rest of the code reads instead of naming methods:
- `prepare`: turn the selected experts into the ones the model holds (merging, weight search,
  picking the best); `aux_loss`: added to the LM loss while training; `batch_hook`: per-batch
  labels (LoRAMoE's task_type);
- `train_overrides`: the training settings of the method's reference code (documentation only:
  every trained method gets the preset's budget unless a study names an override);
- `train_cost` / `eval_cost`: cost of a step relative to one LoRA (study time estimates);
- `reference`: evaluated as it is in a study (no expert selection, no fit), `target_expert`: its one
  expert is the target task's own library LoRA, `base_model`: the base model itself;
- `default_selection`: a selection strategy a study also fits the method on (Rocket's own);
- `compared_with`, `baseline`: the report's questions (the paper's comparisons; the
  training-free baseline every trained method is tested against);
- `cite`: the paper and reference code the method follows (`loraocean moe methods` prints it);
- `export`: how a checkpoint becomes another tool's folder (an `Export`: PEFT LoRA, PEFT X-LoRA);
- `degenerates`: what the method must equal in its trivial cases, checked by the conformance kit
  (`loraocean.testing`): "base" (built without experts it is the base model) and/or "expert"
  (built on one library LoRA it is that LoRA, on the modules it adapts).
A method's own layer (a subclass of `moe.layer.MoELinear`), its own state (tensors of its layers
and of modules it attaches to the `MoEModel`; a `MoEModel` subclass may override
`moe_state_dict` / `load_moe_state_dict`) and its own loss need no field beyond these.
`register_method` binds the name once (a second registration under it is refused, naming both
sources): the model `build` returns carries it (`MoEModel.method`).
A third-party package adds one with

    [project.entry-points."loraocean.methods"]
    my_method = "my_package.module"        # a module that calls @register_method on import
    # or: my_method = "my_package.module:METHOD"   # a Method object
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Callable, Union, get_args, get_origin, get_type_hints

from loraocean.errors import ConfigError, UnknownNameError
from loraocean.plugins import Registry, source_of

ENTRY_POINT_GROUP = "loraocean.methods"
MAX_SEED = 2**63 - 1  # results tables store seeds as SQLite integers (int64)
# The declared range of every number option a method config has (besides `seed`) unless its
# `__post_init__` narrows it: finite, and at most this large in magnitude. Options beyond it
# (a scaling of 1e38, a hidden size of 1e12) only ever overflow or exhaust memory.
MAX_OPTION = 1e6


DEGENERATE_CASES = ("base", "expert")


@dataclass(frozen=True)
class Export:
    """How a method's checkpoint becomes another tool's folder, from the checkpoint's files alone.

    - `write(config, tensors, folder)`: `config` is the checkpoint's moe_config.json, `tensors` its
      moe_model.safetensors; writes into the (empty, temporary) `folder`, or raises a
      `LoraOceanError` when this checkpoint cannot be exported (nothing is then left behind);
    - `load(base, folder)`: that tool's model on `base` from the folder, with the logits of the
      checkpoint (the conformance kit checks it);
    - `name`: a short layout name ("lora"), `what`: what the folder is, for messages."""
    name: str
    what: str
    write: Callable[[dict, dict, Path], None]
    load: Callable[[Any, Path], Any]


@dataclass
class Method:
    name: str
    config: type
    build: Callable[..., Any]                   # (base, experts, cfg) -> MoEModel named `name`
    trains: bool = False
    prepare: Callable[..., Any] | None = None   # (base, tokenizer, experts, cfg, ctx) -> experts
    aux_loss: Callable[..., Any] | None = None  # (model, cfg) -> tensor | None
    description: str = ""
    batch_hook: Callable[..., Any] | None = None  # (model, ctx) -> per-batch hook(indices) | None
    train_overrides: dict = field(default_factory=dict)  # the reference code's training settings
    train_cost: float = 1.0   # a training step's cost relative to one LoRA's
    eval_cost: float = 1.0    # a forward's cost relative to the base model's
    reference: bool = False   # a study evaluates it as it is: no selection, no fit
    target_expert: bool = False  # its one expert is the target task's own library LoRA
    base_model: bool = False  # the base model itself: the report's "=base" flag and "can show" line
    default_selection: str | None = None  # a selection strategy a study also fits it on
    compared_with: tuple[str, ...] = ()   # methods the report compares it with (the paper's questions)
    baseline: bool = False    # the training-free baseline the report tests every trained method against
    cite: str = ""            # the paper and reference code it follows
    export: Export | None = None  # how its checkpoints become another tool's folder
    degenerates: tuple[str, ...] = ()  # "base" and/or "expert": see the module docstring

    def __post_init__(self):
        from loraocean.paths import check_name
        from loraocean.presets import override_problem

        check_name(self.name, "method name")  # it names report figures and table keys

        for key, value in self.train_overrides.items():
            problem = override_problem(key, value)
            if problem:
                raise ConfigError(f"method {self.name}: train_overrides {key}: {problem}")
        if self.reference and (self.trains or self.default_selection):
            raise ConfigError(f"method {self.name}: a reference is neither trained nor selected for")
        unknown = set(self.degenerates) - set(DEGENERATE_CASES)
        if unknown:
            raise ConfigError(f"method {self.name}: degenerates {sorted(unknown)}; use {DEGENERATE_CASES}")
        if not getattr(self.build, "_loraocean_named", False):
            self.build = _named(self.build, self.name, self.trains)

    def make_config(self, overrides: dict | None = None, n_experts: int | None = None):
        """The config dataclass with `overrides` applied (unknown keys name the known ones; the
        dataclass checks types and ranges). With `n_experts`, a given `top_k` must not exceed it
        (0 experts: the method's fresh `n_experts`)."""
        overrides = dict(overrides or {})
        known = {f.name for f in fields(self.config)}
        for key in overrides:
            if key not in known:
                raise UnknownNameError(f"{self.name} option", key, known)
        cfg = self.config(**overrides)
        if n_experts is not None and overrides.get("top_k") is not None:
            n_experts = n_experts or getattr(cfg, "n_experts", 0)
            check_config(cfg, "top_k", cfg.top_k <= n_experts,
                         f"must be at most the number of experts ({n_experts})")
        return cfg


METHODS = Registry("MoE method", ENTRY_POINT_GROUP, hint="`loraocean moe methods`")


def _named(build: Callable[..., Any], name: str, trains: bool) -> Callable[..., Any]:
    """`build` whose model carries the method's name (bound once, at registration); the model of
    a method that does not train has no parameter that requires grad."""

    @functools.wraps(build)
    def named(*args, **kwargs):
        model = build(*args, **kwargs)
        model.method = name
        if not trains:
            model.requires_grad_(False)
        return model

    named._loraocean_named = True
    return named


def register_method(name: str, config: type, *, trains: bool = False, prepare=None, aux_loss=None,
                    description: str = "", **more):
    """Decorator on a `build(base, experts, cfg)` function: registers the method under `name`.
    `more`: any other `Method` field (batch_hook, train_overrides, train_cost, reference, ...).
    Returns `build` unchanged."""

    def wrap(build):
        METHODS.add(name, Method(name, config, build, trains, prepare, aux_loss,
                                 description or (build.__doc__ or "").strip().split("\n")[0], **more),
                    source_of(build))
        return build

    return wrap


def _accept(source: str, obj) -> bool:
    """An entry point that names a `Method` object directly."""
    if isinstance(obj, Method):
        METHODS.add(obj.name, obj, source)
        return True
    return False


def load_entry_points() -> None:
    """Import the methods that installed packages declare in the `loraocean.methods` group."""
    METHODS.load_entry_points(_accept)


def get_method(name: str) -> Method:
    return METHODS.lookup(name, _accept)


def all_methods() -> dict[str, Method]:
    return METHODS.everything(_accept)


def base_model_name() -> str:
    """The name of the method that is the base model alone (`Method.base_model`)."""
    return next(m.name for m in all_methods().values() if m.base_model)


class OptionError(ConfigError):
    """A method option of the wrong type or out of range; `field` names it."""

    def __init__(self, method_cfg, field: str, what: str):
        module = type(method_cfg).__module__.rsplit(".", 1)[-1]
        super().__init__(f"option {field} = {getattr(method_cfg, field)!r} of {module}: {what}")
        self.field = field


def check_config(cfg, field: str, ok: bool, what: str) -> None:
    if not ok:
        raise OptionError(cfg, field, what)


def _type_ok(value, hint) -> bool:
    """`value` fits the annotation `hint` (int, float, bool, str, list[X], X | None)."""
    if value is None:
        return type(None) in get_args(hint)
    origin = get_origin(hint)
    if origin in (Union, UnionType):
        return any(_type_ok(value, h) for h in get_args(hint) if h is not type(None))
    if origin is list:
        return isinstance(value, list) and all(_type_ok(v, get_args(hint)[0]) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, hint)


def _type_name(hint) -> str:
    if get_origin(hint) in (Union, UnionType):
        return " or ".join(_type_name(h) for h in get_args(hint))
    if get_origin(hint) is list:
        return f"a list of {_type_name(get_args(hint)[0])}"
    names = {int: "an integer", float: "a finite number", bool: "true or false", str: "a text",
             type(None): "null"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def check_types(cfg) -> None:
    """Every field of a method config dataclass has the type its annotation says, every number is
    within +-MAX_OPTION and a `seed` is in range (call it first in `__post_init__`). Integers are
    accepted for floats; YAML strings like "1e38" are not numbers."""
    for name, hint in get_type_hints(type(cfg)).items():
        value = getattr(cfg, name)
        if not _type_ok(value, hint):
            raise OptionError(cfg, name, f"must be {_type_name(hint)}")
        numbers = value if isinstance(value, list) else [value]
        if name != "seed" and any(isinstance(v, (int, float)) and not isinstance(v, bool)
                                  and abs(v) > MAX_OPTION for v in numbers):
            raise OptionError(cfg, name, f"must be between -{MAX_OPTION:g} and {MAX_OPTION:g}")
    if hasattr(cfg, "seed"):
        check_config(cfg, "seed", 0 <= cfg.seed <= MAX_SEED, f"must be in 0..{MAX_SEED}")

