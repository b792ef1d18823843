"""Running a study: turn its job graph into engine work, skip what is cached, run the rest on
the shared engine (`loraocean.engine`), collect the results.

Layout of a run folder (an engine `RunFolder` plus the study's own files):

    <run>/study.json            the resolved config, its hash and the job list (what `report` reads)
    <run>/jobs/<kind>-<key>/    one folder per finished job: result.json (+ its artifacts),
                                appearing atomically, so a readable result.json means "done"
    <run>/failed/<kind>-<key>.json   the error of a job that failed (removed when it later succeeds)
    <run>/progress.txt          done / running / failed / queued by kind, ETA (while it runs)
    <run>/library/<id>/         the LoRA library of one (preset, caps, seed): a `loraocean.library` root
    <run>/results.sqlite        the results table (rebuilt from the job folders at the end)

A stage is a plain function `stage(job, ctx, out) -> dict` (see `loraocean.study.stages`): it
writes any artifacts into the folder `out` and returns the JSON result. Stages get base models from
the worker's model cache (`Context.base` to read, `Context.fresh` to change).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from loraocean.artifacts import atomic_dir, hash_obj, package_versions, remove_stale, write_json_atomic
from loraocean.engine import CACHE, Resources, RunFolder, Work, execute
from loraocean.engine.folder import read_json
from loraocean.errors import LoraOceanError
from loraocean.study import store
from loraocean.study.config import StudyConfig
from loraocean.study.jobs import KINDS, MAX_JOBS, Job, check_size, estimate_seconds, expand, library_id

Stage = Callable[[Job, "Context", Path], dict]

# Share of the per-job GPU request each kind takes: scoring jobs can share a GPU two by two.
GPU_SHARE = {"lora": 1.0, "select": 0.5, "fit": 1.0, "eval": 0.5}


def job_dir(run_dir: Path, job: Job) -> Path:
    return store.job_dir(run_dir, job.kind, job.key)


def is_done(run_dir: Path, job: Job) -> bool:
    """A job is done when its result.json is there and readable (a damaged one is redone)."""
    return read_json(job_dir(run_dir, job) / "result.json") is not None


@dataclass
class Context:
    """What a stage may use: the config, the run folder, finished dependencies, base models."""

    cfg: StudyConfig
    run_dir: Path
    jobs: dict[str, Job]                     # at least the job's dependencies, by key
    refs: dict[str, str] = field(default_factory=dict)   # task reference -> absolute form
    on_progress: Callable[[int, int, str], None] | None = None

    def task(self, ref: str) -> str:
        """The task reference to hand to the rooms (paths made absolute by the driver)."""
        return self.refs.get(ref, ref)

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
        """(model, tokenizer) from this worker's cache. Do not modify it: use `fresh`."""
        return CACHE.get(model)

    def fresh(self, model: str):
        """(model, tokenizer) the job may change (adapters injected); see `ModelCache.fresh`."""
        return CACHE.fresh(model)

    def progress(self, step: int, total: int, message: str = "") -> None:
        if self.on_progress is not None:
            self.on_progress(step, total, message)


def run_one(job: Job, ctx: Context, stages: dict[str, Stage]) -> dict:
    """Run one job into its folder (atomically) and return its result."""
    import time

    final = job_dir(ctx.run_dir, job)
    start = time.perf_counter()
    with atomic_dir(final, overwrite=True) as out:
        result = stages[job.kind](job, ctx, out) or {}
        result = {"job": {"kind": job.kind, "key": job.key, "inputs": job.inputs},
                  "seconds": round(time.perf_counter() - start, 3), **result}
        write_json_atomic(out / "result.json", result)
    return result


@dataclass
class Summary:
    total: int = 0
    cached: int = 0
    ran: int = 0
    failed: dict[str, str] = field(default_factory=dict)    # job label -> error
    skipped: list[str] = field(default_factory=list)         # labels blocked by a failed dependency
    seconds: float = 0.0
    loads: int = 0                                           # base model loads, all workers


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
        kind, _, ref = get_task(task).source.partition(":")
        if kind == "bigbench" and not bigbench.available(ref):
            missing.append(task)
    if missing:
        from loraocean.tasks.fetch import fetch_bigbench

        say(f"BIG-bench task files not found for {', '.join(missing)}: fetching the bigbench 1.0.0 "
            "sdist from PyPI once (358 MB download, only task.json files are kept) ...")
        where = fetch_bigbench()
        say(f"BIG-bench tasks ready in {where}")


def task_refs(cfg: StudyConfig) -> dict[str, str]:
    """Each of the study's task references in a form any worker resolves (absolute paths)."""
    from loraocean.tasks import portable_ref

    return {t: portable_ref(t) for t in dict.fromkeys(cfg.tasks.library + cfg.tasks.targets)}


def shipped(cfg: StudyConfig) -> StudyConfig:
    """The config as workers get it: a relative library.root made absolute on the driver."""
    if not cfg.library.root:
        return cfg
    root = str(Path(cfg.library.root).expanduser().resolve())
    return dataclasses.replace(cfg, library=dataclasses.replace(cfg.library, root=root))


def work_items(cfg: StudyConfig, run_dir: Path, todo: list[Job], jobs: list[Job], stages: dict[str, Stage],
               gpus: float = 0.0, cpus: float | None = None) -> list[Work]:
    """One engine item per job to run (`todo`, out of all the study's `jobs`)."""
    by_key = {j.key: j for j in jobs}
    cfg, refs = shipped(cfg), task_refs(cfg)
    cpus = cfg.executor.num_cpus if cpus is None else cpus
    items = []
    for job in todo:
        ctx = Context(cfg=cfg, run_dir=run_dir, jobs={k: by_key[k] for k in job.deps}, refs=refs)
        items.append(Work(name=job.name, kind=job.kind, label=job.label, fn=run_one, args=(job, ctx, stages),
                          deps=tuple(by_key[d].name for d in job.deps), model=job.inputs.get("model"),
                          cost=estimate_seconds(job, cfg),
                          resources=Resources(cpus=cpus, gpus=gpus * GPU_SHARE.get(job.kind, 1.0)),
                          artifact=str(job_dir(run_dir, job) / "result.json")))
    return items


def run_study(cfg: StudyConfig, run_dir: str | Path, *, stages: dict[str, Stage] | None = None,
              executor: str | None = None, workers: int = 1, address: str | None = None,
              num_gpus: float | None = None, num_cpus: float | None = None, affinity: bool = True,
              waves: bool = False, console=None, fetch: bool = True, max_jobs: int = MAX_JOBS) -> Summary:
    """Run every job of the study that is not cached yet; then rebuild the results table.

    `executor`: local (this process with workers=1, else a pool of `workers` processes) or ray
    (`address`: a cluster, else a private local Ray). `num_gpus`: GPUs per training job (scoring
    jobs take half); default: the study's executor.num_gpus, or 1 when that is 0 and the executor
    sees GPUs. `waves`: the old wave-by-kind schedule (for the bench). A study of more than
    `max_jobs` jobs is refused before any is built (`jobs.check_size`).
    """
    from loraocean.engine.cluster import travelling_env
    from loraocean.engine.schedule import make_executor
    from loraocean.study import stages as default_stages

    check_size(cfg, max_jobs)
    folder = RunFolder(run_dir)
    run_dir = folder.path
    stages = stages or default_stages.STAGES
    executor = executor or cfg.executor.kind
    if executor not in ("local", "ray"):
        raise LoraOceanError(f"unknown executor {executor!r}; use local or ray")
    say = console.print if console is not None else (lambda msg: None)
    with folder.lock("`loraocean run`"):
        jobs = expand(cfg)
        write_study_file(cfg, run_dir, jobs)
        clean_leftovers(cfg, run_dir)
        todo = [j for j in jobs if not is_done(run_dir, j)]
        summary = Summary(total=len(jobs), cached=len(jobs) - len(todo))
        if todo:  # the executor first: a cluster that cannot be reached fails before any download
            engine = make_executor("ray" if executor == "ray" else "pool", workers, affinity=affinity,
                                   address=address or cfg.executor.address, env=travelling_env())
            try:
                if fetch:
                    ensure_data(cfg, say)
                gpus = num_gpus if num_gpus is not None else (cfg.executor.num_gpus or float(engine.gpus > 0))
                items = work_items(cfg, run_dir, todo, jobs, stages, gpus, num_cpus)
            except BaseException:
                engine.close()
                raise

            def on_outcome(work, out, progress) -> None:
                state = "done" if out.error is None else f"FAILED: {out.error}"
                say(f"{work.label}: {state} ({out.seconds:.1f} s) | {progress.line()}")

            report = execute(items, engine, folder, waves=KINDS if waves else None, on_outcome=on_outcome)
            summary.ran, summary.failed, summary.skipped = len(report.ran), report.failed, report.skipped
            summary.seconds, summary.loads = report.seconds, report.loads
        store.collect(run_dir)
    return summary


def run_lock(run_dir: Path):
    """One study process per run folder at a time (the OS drops the lock if the process dies)."""
    return RunFolder(run_dir).lock("`loraocean run`")


def clean_leftovers(cfg: StudyConfig, run_dir: Path) -> None:
    """Remove the temporary folders of writers killed mid-write (jobs and the study's libraries);
    a live writer's are kept."""
    from loraocean.library import Library

    folder = Path(run_dir) / store.JOBS
    if folder.is_dir():
        remove_stale(list(folder.glob(".tmp-*")) + list(folder.glob(".old-*")))
    for model in cfg.models:
        root = Context(cfg=cfg, run_dir=Path(run_dir), jobs={}).library_root(model)
        if root.is_dir():
            Library(root).clean_leftovers()
