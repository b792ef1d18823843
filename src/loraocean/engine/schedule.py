"""The driver: start every item as soon as the items it needs have finished, record outcomes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from loraocean.engine.folder import RunFolder, read_json
from loraocean.engine.work import Outcome, Work
from loraocean.errors import ConfigError

EXECUTORS = ("inprocess", "pool", "ray")


@dataclass
class Report:
    ran: list[str] = field(default_factory=list)              # names that finished
    failed: dict[str, str] = field(default_factory=dict)      # label -> error
    skipped: list[str] = field(default_factory=list)          # labels blocked by a failed dependency
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    loads: int = 0                                            # base model loads, all workers
    seconds: float = 0.0


class Progress:
    """Counts by kind (done / running / failed / queued) and an ETA from the items' costs, scaled
    by how long the finished ones really took."""

    STATES = ("done", "running", "failed", "queued")

    def __init__(self, works: list[Work], slots: int):
        self.state = {w.name: "queued" for w in works}
        self.works = {w.name: w for w in works}
        self.slots = max(1, slots)
        self.estimated = self.actual = 0.0
        self.start = time.time()

    def set(self, name: str, state: str, seconds: float | None = None) -> None:
        self.state[name] = state
        if seconds is not None:
            self.estimated += self.works[name].cost
            self.actual += seconds

    def eta(self) -> float:
        left = sum(self.works[n].cost for n, s in self.state.items() if s in ("queued", "running"))
        speed = self.actual / self.estimated if self.estimated > 0 else 1.0
        return left * speed / self.slots

    def counts(self, kind: str | None = None) -> str:
        states = [st for n, st in self.state.items() if kind is None or self.works[n].kind == kind]
        return "  ".join(f"{s} {states.count(s)}" for s in self.STATES)

    def line(self) -> str:
        """All items: counts, elapsed time and ETA (what the terminal shows after each job)."""
        return f"{self.counts()}  elapsed {time.time() - self.start:.0f} s  ETA {self.eta():.0f} s"

    def text(self) -> str:
        """The progress file: one line per kind, then `all`."""
        kinds = dict.fromkeys(w.kind for w in self.works.values())
        return "".join(f"{kind:8s} {self.counts(kind)}\n" for kind in kinds) + f"all      {self.line()}\n"


def check_artifact(work: Work) -> str | None:
    """The driver's own look at what a job that reported success wrote."""
    if work.artifact is None:
        return None
    path = Path(work.artifact)
    ok = read_json(path) is not None if path.suffix == ".json" else path.is_file()
    if ok:
        return None
    return (f"the job reported success but {path} is missing or unreadable on the driver; the "
            "run folder must be on a filesystem every worker shares")


def make_executor(kind: str, workers: int = 1, *, affinity: bool = True, address: str | None = None,
                  env: dict | None = None, max_retries: int = 3):
    if kind == "inprocess" or (kind == "pool" and workers <= 1):
        from loraocean.engine.local import InProcess

        return InProcess()
    if kind == "pool":
        from loraocean.engine.local import Pool

        return Pool(workers, env or {}, affinity=affinity)
    if kind == "ray":
        from loraocean.engine.cluster import RayExecutor

        return RayExecutor(address, workers, env or {}, max_retries=max_retries)
    raise ConfigError(f"unknown executor {kind!r}; use one of {', '.join(EXECUTORS)}")


def execute(works: list[Work], executor, folder: RunFolder, *, waves: tuple[str, ...] | None = None,
            on_outcome: Callable[[Work, Outcome, Progress], None] | None = None) -> Report:
    """Run `works` on `executor` (from `make_executor`), recording failures in `folder`.

    A dependency named in `deps` but not among `works` counts as finished (a cached job). With
    `waves` (kinds in order), an item also waits until no item of an earlier kind is left: the old
    wave-by-kind schedule, kept for comparison (bench/engine_schedule.py).
    """
    report = Report()
    names = {w.name for w in works}
    waiting = list(works)
    running: dict[str, Work] = {}
    finished: set[str] = set()
    bad: set[str] = set()
    progress = Progress(works, executor.slots)
    start = time.perf_counter()

    def ready(w: Work) -> bool:
        if not all(d not in names or d in finished for d in w.deps):
            return False
        if waves is None:
            return True
        earlier = set(waves[: waves.index(w.kind)])
        return not any(o.kind in earlier for o in waiting + list(running.values()) if o is not w)

    try:
        while waiting or running:
            for w in [w for w in waiting if any(d in bad for d in w.deps)]:
                waiting.remove(w)
                bad.add(w.name)
                report.skipped.append(w.label)
                progress.set(w.name, "failed")
            while True:
                w = executor.start([w for w in waiting if ready(w)])
                if w is None:
                    break
                waiting.remove(w)
                running[w.name] = w
                progress.set(w.name, "running")
            if not running:
                break
            out = executor.next()
            w = running.pop(out.name)
            if out.error is None:
                out.error = check_artifact(w)
            report.outcomes[w.name] = out
            report.loads += out.loads
            if out.error is None:
                finished.add(w.name)
                report.ran.append(w.name)
                folder.clear_failure(w.name)
                progress.set(w.name, "done", out.seconds)
            else:
                bad.add(w.name)
                report.failed[w.label] = out.error
                folder.record_failure(w.name, w.label, out.error, out.traceback, worker=out.worker)
                progress.set(w.name, "failed", out.seconds)
            folder.write_progress(progress.text())
            if on_outcome is not None:
                on_outcome(w, out, progress)
    finally:
        executor.close()
    report.seconds = time.perf_counter() - start
    return report
