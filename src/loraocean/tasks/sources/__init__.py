"""Readers that turn a source reference (`kind:ref`) into unified `Example`s.

A reader returns either a list of examples (one pool; the task's split policy splits it) or a
dict split -> examples (the source's own splits). Register a reader with `@reader("kind")`.
"""

from __future__ import annotations

from typing import Callable

from loraocean.errors import UnknownNameError

Reader = Callable[[str, str], "list | dict"]
READERS: dict[str, Reader] = {}


def reader(kind: str):
    def deco(fn: Reader) -> Reader:
        READERS[kind] = fn
        return fn

    return deco


def read(source: str, task: str, from_path=None):
    """Examples of `task` from `source`; `from_path`: local files instead of the hub (`hf:`
    sources only)."""
    kind, _, ref = source.partition(":")
    if kind not in READERS:
        raise UnknownNameError("source kind", kind, READERS, hint=f"in source {source!r}")
    if from_path is not None:
        if kind != "hf":
            from loraocean.errors import ConfigError

            raise ConfigError(f"--from applies to tasks read from the Hugging Face hub; {task!r} "
                              f"reads {source!r} (for BIG-bench files use the task bigbench:PATH)")
        return READERS[kind](ref, task, from_path=from_path)
    return READERS[kind](ref, task)


from loraocean.tasks.sources import bigbench, hub, packaged  # noqa: E402,F401  (registers readers)
