"""Helpers shared by the bench scripts (run as `python bench/NAME.py`, so this folder is on sys.path)."""

from __future__ import annotations

import os
import time
from pathlib import Path

SHARED_BIGBENCH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bigbench"


def use_shared_bigbench() -> None:
    """Read BIG-bench tasks from ../shared/data/bigbench when it is there (else the fetched copy)."""
    if SHARED_BIGBENCH.is_dir():
        os.environ.setdefault("LORAOCEAN_BIGBENCH", str(SHARED_BIGBENCH))


class Clock:
    """Wall and CPU seconds of a `with` block (`.wall`, `.cpu`)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
