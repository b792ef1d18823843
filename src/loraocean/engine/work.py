"""One unit of work, what it needs, and how a worker runs it."""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Resources:
    """What one job needs: Ray task resources; locally, GPUs bound the parallelism."""

    cpus: float = 1.0
    gpus: float = 0.0            # a fraction (e.g. 0.25) lets small-model jobs share a GPU
    memory_gb: float = 0.0       # 0: not declared

    def ray_options(self) -> dict:
        opts = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.memory_gb:
            opts["memory"] = int(self.memory_gb * 2**30)
        return opts


@dataclass
class Work:
    name: str                        # unique and file-name safe (the failure record's name)
    kind: str                        # for progress and wave ordering
    label: str                       # for people
    fn: Callable[..., Any]           # module-level, so it pickles: fn(*args) -> JSON-able value
    args: tuple = ()
    deps: tuple[str, ...] = ()       # names of items that must finish first
    model: str | None = None         # the base model it loads (cache affinity)
    cost: float = 1.0                # estimated seconds (the ETA)
    resources: Resources = field(default_factory=Resources)
    artifact: str | None = None      # absolute path of a file that must exist after success


@dataclass
class Outcome:
    name: str
    value: Any = None
    error: str | None = None         # one line; None on success
    traceback: str = ""
    seconds: float = 0.0
    loads: int = 0                   # base models this job had to load (cache misses)
    worker: str = ""                 # host:pid that ran it


def perform(work: Work) -> Outcome:
    """Run one item in this (worker) process; an exception becomes the outcome's error."""
    from loraocean.engine.cache import CACHE
    from loraocean.errors import LoraOceanError

    loads = CACHE.loads
    start = time.perf_counter()
    out = Outcome(work.name, worker=f"{os.uname().nodename}:{os.getpid()}")
    try:
        out.value = work.fn(*work.args)
    except Exception as err:  # one job's failure must not stop the others
        out.error = traceback.format_exception_only(type(err), err)[-1].strip()
        if not isinstance(err, LoraOceanError):
            out.traceback = traceback.format_exc()
    finally:
        CACHE.settle()
    out.seconds = round(time.perf_counter() - start, 3)
    out.loads = CACHE.loads - loads
    return out
