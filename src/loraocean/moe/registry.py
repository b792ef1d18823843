"""The methods registry: ours register with a decorator, other packages through the
`loraocean.methods` entry-point group.

A method is a `Method`: its config dataclass, `build(base, experts, cfg) -> MoEModel`, and the
optional steps `prepare` (turn the selected experts into the ones the model holds: merging,
weight search, picking the best), `aux_loss` (added to the LM loss while training) and
`batch_hook` (per-batch labels such as LoRAMoE's task_type). A third-party package adds one with

    [project.entry-points."loraocean.methods"]
    my_method = "my_package.module"        # a module that calls @register_method on import
    # or: my_method = "my_package.module:METHOD"   # a Method object
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

from loraocean.errors import ConfigError, UnknownNameError

ENTRY_POINT_GROUP = "loraocean.methods"


@dataclass
class Method:
    name: str
    config: type
    build: Callable[..., Any]
    trains: bool = False
    prepare: Callable[..., Any] | None = None   # (base, tokenizer, experts, cfg, ctx) -> experts
    aux_loss: Callable[..., Any] | None = None  # (model, cfg) -> tensor | None
    description: str = ""

    def make_config(self, overrides: dict | None = None):
        """The config dataclass with `overrides` applied (unknown keys name the known ones)."""
        overrides = dict(overrides or {})
        known = {f.name for f in fields(self.config)}
        for key in overrides:
            if key not in known:
                raise UnknownNameError(f"{self.name} option", key, known)
        return self.config(**overrides)


METHODS: dict[str, Method] = {}
_entry_points_loaded = False


def register_method(name: str, config: type, *, trains: bool = False, prepare=None, aux_loss=None,
                    description: str = ""):
    """Decorator on a `build(base, experts, cfg)` function: registers the method under `name`."""

    def wrap(build):
        METHODS[name] = Method(name, config, build, trains, prepare, aux_loss,
                               description or (build.__doc__ or "").strip().split("\n")[0])
        return build

    return wrap


def load_entry_points() -> None:
    """Import the methods that installed packages declare in the `loraocean.methods` group."""
    global _entry_points_loaded
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in METHODS:
            continue
        obj = ep.load()
        if isinstance(obj, Method):
            METHODS[obj.name] = obj
    _entry_points_loaded = True


def get_method(name: str) -> Method:
    import loraocean.moe.methods  # noqa: F401  (registers ours)

    if name not in METHODS and not _entry_points_loaded:
        load_entry_points()
    if name not in METHODS:
        raise UnknownNameError("MoE method", name, METHODS,
                               hint="see `loraocean moe methods`; packages add methods through the "
                                    f"{ENTRY_POINT_GROUP!r} entry-point group")
    return METHODS[name]


def all_methods() -> dict[str, Method]:
    import loraocean.moe.methods  # noqa: F401

    load_entry_points()
    return dict(METHODS)


def check_config(cfg, field: str, ok: bool, what: str) -> None:
    if not ok:
        raise ConfigError(f"{type(cfg).__name__}.{field} = {getattr(cfg, field)!r}: {what}")
