"""Readers that turn a source reference (`kind:ref`) into unified `Example`s.

A reader returns either a list of examples (one pool; the task's split policy splits it) or a
dict split -> examples (the source's own splits). Register a reader with `@reader("kind")`.
"""

from loraocean.tasks.sources.base import READERS, Reader, read, reader
from loraocean.tasks.sources import bigbench, hub, packaged  # noqa: E402,F401  (registers readers)

__all__ = ["READERS", "Reader", "read", "reader"]
