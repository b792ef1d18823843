"""Running a study: walk the job graph, skip what is cached, run the rest, collect the results.

Layout of a run folder:

    <run>/study.json            the resolved config, its hash and the job list (what `report` reads)
    <run>/jobs/<kind>-<key>/    one folder per finished job: result.json (+ its artifacts),
                                appearing atomically, so its presence means "done"
    <run>/failed/<kind>-<key>.json   the error of a job that failed (removed when it later succeeds)
    <run>/library/<id>/         the LoRA library of one (preset, caps, seed): a `loraocean.library` root
    <run>/results.sqlite        the results table (rebuilt from the job folders at the end)

A stage is a plain function `stage(job, ctx, out) -> dict` (see `loraocean.study.stages`): it
writes any artifacts into the folder `out` and returns the JSON result. The base model is loaded
once per process (`Context.base`) and every job gets its own copy to modify (`Context.fresh`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from loraocean.artifacts import atomic_dir, hash_obj, package_versions, write_json_atomic
from loraocean.errors import LoraOceanError
from loraocean.study.config import StudyConfig
from loraocean.study.jobs import Job, estimate_seconds, expand, library_id

Stage = Callable[[Job, "Context", Path], dict]

# Base models loaded in this process, by name: loaded once, shared by every job that runs here.
_MODELS: dict[str, tuple] = {}


def job_dir(run_dir: Path, job: Job) -> Path:
    return Path(run_dir) / "jobs" / job.name


def is_done(run_dir: Path, job: Job) -> bool:
    return (job_dir(run_dir, job) / "result.json").is_file()


@dataclass
class Context:
    """What a stage may use: the config, the run folder, finished dependencies, the base model."""

    cfg: StudyConfig
    run_dir: Path
    jobs: dict[str, Job]
    on_progress: Callable[[int, int, str], None] | None = None

    def library_root(self, model: str) -> Path:
        if self.cfg.library.root:
            return Path(self.cfg.library.root).expanduser()
        return self.run_dir / "library" / hash_obj(library_id(self.cfg, model))

    def dep_dir(self, key: str) -> Path:
        return job_dir(self.run_dir, self.jobs[key])

    def dep_path(self, key: str, field: str) -> Path:
        """A path a dependency recorded in its result (relative to its job folder or absolute)."""
        return self.dep_dir(key) / self.dep_result(key)[field]

    def dep_result(self, key: str) -> dict:
        return json.loads((self.dep_dir(key) / "result.json").read_text(encoding="utf-8"))

    def base(self, model: str):
        """(model, tokenizer), loaded once per process. Do not modify it: use `fresh`."""
        if model not in _MODELS:
            from loraocean.models import load

            _MODELS[model] = load(model)
        return _MODELS[model]

    def fresh(self, model: str):
        """A private copy of the base model (adapters may be injected into it) and the tokenizer."""
        base, tokenizer = self.base(model)
        return copy.deepcopy(base), tokenizer

    def progress(self, step: int, total: int, message: str = "") -> None:
        if self.on_progress is not None:
            self.on_progress(step, total, message)


def run_one(job: Job, ctx: Context, stages: dict[str, Stage]) -> dict:
    """Run one job into its folder (atomically) and return its result."""
    final = job_dir(ctx.run_dir, job)
    start = time.perf_counter()
    with atomic_dir(final, overwrite=True) as out:
        result = stages[job.kind](job, ctx, out) or {}
        result = {"job": {"kind": job.kind, "key": job.key, "inputs": job.inputs},
                  "seconds": round(time.perf_counter() - start, 3), **result}
        write_json_atomic(out / "result.json", result)
    failed = ctx.run_dir / "failed" / f"{job.name}.json"
    failed.unlink(missing_ok=True)
    return result


def record_failure(run_dir: Path, job: Job, err: BaseException) -> str:
    detail = traceback.format_exception_only(type(err), err)[-1].strip()
    write_json_atomic(Path(run_dir) / "failed" / f"{job.name}.json",
                      {"job": job.label, "inputs": job.inputs, "error": detail,
                       "traceback": traceback.format_exc()})
    return detail


@dataclass
class Summary:
    total: int = 0
    cached: int = 0
    ran: int = 0
    failed: dict[str, str] = field(default_factory=dict)    # job label -> error
    skipped: list[str] = field(default_factory=list)         # labels blocked by a failed dependency
    seconds: float = 0.0


def write_study_file(cfg: StudyConfig, run_dir: Path, jobs: list[Job]) -> None:
    write_json_atomic(Path(run_dir) / "study.json", {
        "name": cfg.name, "source": cfg.source, "config": cfg.to_dict(),
        "config_hash": hash_obj(cfg.to_dict()), "versions": package_versions(),
        "jobs": [{"kind": j.kind, "key": j.key, "inputs": j.inputs, "deps": j.deps, "rows": j.rows}
                 for j in jobs]})


def plan(cfg: StudyConfig, run_dir: Path) -> list[tuple[Job, bool, float]]:
    """(job, cached?, estimated seconds) for every job of the study."""
    return [(j, is_done(run_dir, j), estimate_seconds(j, cfg)) for j in expand(cfg)]


def ensure_data(cfg: StudyConfig, say: Callable[[str], None]) -> None:
    """Fetch BIG-bench once (announced) when the study needs tasks that are nowhere on disk."""
    from loraocean.tasks import get_task
    from loraocean.tasks.sources import bigbench

    missing = []
    for task in cfg.tasks.library:
        source = get_task(task).source
        if source.startswith("bigbench:"):
            try:
                bigbench.locate(source.partition(":")[2])
            except LoraOceanError:
                missing.append(task)
    if missing:
        from loraocean.tasks.fetch import fetch_bigbench

        say(f"BIG-bench task files not found for {', '.join(missing)}: fetching the bigbench 1.0.0 "
            "sdist from PyPI once (358 MB download, only task.json files are kept) ...")
        where = fetch_bigbench()
        say(f"BIG-bench tasks ready in {where}")


def run_study(cfg: StudyConfig, run_dir: str | Path, *, stages: dict[str, Stage] | None = None,
              executor: str | None = None, console=None, fetch: bool = True) -> Summary:
    """Run every job of the study that is not cached yet; then rebuild the results table."""
    from loraocean.study import stages as default_stages
    from loraocean.study.store import collect

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stages = stages or default_stages.STAGES
    executor = executor or cfg.executor.kind
    say = console.print if console is not None else (lambda msg: None)
    with run_lock(run_dir):
        if fetch:
            ensure_data(cfg, say)
        jobs = expand(cfg)
        write_study_file(cfg, run_dir, jobs)
        clean_leftovers(run_dir)
        start = time.perf_counter()
        if executor == "ray":
            from loraocean.study.ray_executor import run_with_ray

            summary = run_with_ray(cfg, run_dir, jobs, stages, say)
        elif executor == "local":
            summary = run_local(cfg, run_dir, jobs, stages, console)
        else:
            raise LoraOceanError(f"unknown executor {executor!r}; use local or ray")
        summary.seconds = time.perf_counter() - start
        collect(run_dir)
    return summary


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """One study process per run folder at a time (the OS drops the lock if the process dies)."""
    import fcntl

    with open(Path(run_dir) / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LoraOceanError(f"another `loraocean run` is using {run_dir}; wait for it to finish "
                                 "or choose another --run-dir") from None
        yield


def clean_leftovers(run_dir: Path) -> None:
    """Remove the temporary folders of jobs killed mid-write (never mistaken for finished ones)."""
    import shutil

    folder = Path(run_dir) / "jobs"
    if folder.is_dir():
        for tmp in list(folder.glob(".tmp-*")) + list(folder.glob(".old-*")):
            shutil.rmtree(tmp, ignore_errors=True)


def blocked_by(job: Job, bad: set[str]) -> bool:
    return any(d in bad for d in job.deps)


def run_local(cfg: StudyConfig, run_dir: Path, jobs: list[Job], stages: dict[str, Stage],
              console=None) -> Summary:
    """Run the jobs one after another in this process (the model is loaded once and reused)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    summary = Summary(total=len(jobs))
    by_key = {j.key: j for j in jobs}
    bad: set[str] = set()
    pending = [j for j in jobs if not is_done(run_dir, j)]
    summary.cached = len(jobs) - len(pending)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=console is None, transient=False) as bar:
        overall = bar.add_task(f"study {cfg.name}", total=len(jobs), completed=summary.cached)
        current = bar.add_task("", total=1, visible=False)

        def on_progress(step: int, total: int, message: str) -> None:
            bar.update(current, completed=step, total=max(total, 1),
                       description=f"  {label}" + (f" [{message}]" if message else ""))

        ctx = Context(cfg=cfg, run_dir=run_dir, jobs=by_key, on_progress=on_progress)
        for job in pending:
            label = job.label
            if blocked_by(job, bad):
                bad.add(job.key)
                summary.skipped.append(label)
                bar.advance(overall)
                continue
            bar.update(current, completed=0, total=1, visible=True, description=f"  {label}")
            try:
                started = time.perf_counter()
                run_one(job, ctx, stages)
                summary.ran += 1
                if console is not None and not console.is_terminal:  # logs: one line per job
                    console.print(f"[{summary.cached + summary.ran}/{len(jobs)}] done {label} "
                                  f"in {time.perf_counter() - started:.1f} s")
            except KeyboardInterrupt:
                raise
            except Exception as err:  # one job's failure must not stop the study
                bad.add(job.key)
                summary.failed[label] = record_failure(run_dir, job, err)
                if console is not None:
                    console.print(f"[red]failed[/red] {label}: {summary.failed[label]}")
            bar.advance(overall)
        bar.update(current, visible=False)
    return summary
