"""The reader registry `READERS`, `@reader` and `read` (see the package docstring). A reader is
`fn(ref, spec) -> examples` (`hf:` readers also take `from_path`); `spec` is the task's `TaskSpec`."""

from __future__ import annotations

from typing import Callable

from loraocean.errors import ConfigError, UnknownNameError
from loraocean.tasks.example import TaskSpec

Reader = Callable[[str, TaskSpec], "list | dict"]
READERS: dict[str, Reader] = {}


def reader(kind: str):
    def deco(fn: Reader) -> Reader:
        READERS[kind] = fn
        return fn

    return deco


def read(spec: TaskSpec, from_path=None):
    """Examples of task `spec` from its source; `from_path`: local files instead of the hub (`hf:`
    sources only)."""
    source = spec.source
    kind, _, ref = source.partition(":")
    if kind not in READERS:
        raise UnknownNameError("source kind", kind, READERS, hint=f"in source {source!r}")
    if from_path is not None:
        if kind != "hf":
            raise ConfigError(f"--from applies to tasks read from the Hugging Face hub; {spec.name!r} "
                              f"reads {source!r} (for BIG-bench files use the task bigbench:PATH)")
        return READERS[kind](ref, spec, from_path=from_path)
    return READERS[kind](ref, spec)
