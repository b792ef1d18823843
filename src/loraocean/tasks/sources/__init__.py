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


def read(source: str, task: str):
    kind, _, ref = source.partition(":")
    if kind not in READERS:
        raise UnknownNameError("source kind", kind, READERS, hint=f"in source {source!r}")
    return READERS[kind](ref, task)


from loraocean.tasks.sources import bigbench, packaged  # noqa: E402,F401  (registers readers)
