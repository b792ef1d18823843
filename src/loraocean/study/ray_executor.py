"""Running a study's jobs as Ray tasks (Ray from PyPI: `pip install 'loraocean[ray]'`).

Jobs go out in waves by kind (every LoRA, then every selection, every fit, every evaluation: a
job's dependencies are always of an earlier kind). Each Ray task runs one job with the same stage
functions as the local executor and writes its folder under the run directory itself, atomically,
so the run directory must be on a filesystem every worker sees. Ray reuses worker processes, so the
base model is loaded once per worker and kept. Failed tasks are retried by Ray (`max_retries`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from loraocean.errors import MissingPackageError
from loraocean.study.config import StudyConfig
from loraocean.study.jobs import KINDS, Job
from loraocean.study.runner import Context, Summary, blocked_by, is_done, record_failure, run_one


def _run_remote(job: Job, cfg: StudyConfig, run_dir: str, jobs: dict, stages: dict):
    ctx = Context(cfg=cfg, run_dir=Path(run_dir), jobs=jobs)
    try:
        run_one(job, ctx, stages)
        return None
    except Exception as err:
        return record_failure(Path(run_dir), job, err)


def run_with_ray(cfg: StudyConfig, run_dir: Path, jobs: list[Job], stages: dict,
                 say: Callable[[str], None]) -> Summary:
    try:
        import ray
    except ImportError:
        raise MissingPackageError("Ray", "pip install 'loraocean[ray]'") from None
    if not ray.is_initialized():
        if cfg.executor.address:
            ray.init(address=cfg.executor.address, log_to_driver=False)
        else:
            ray.init(log_to_driver=False, include_dashboard=False)
    remote = ray.remote(num_cpus=cfg.executor.num_cpus, num_gpus=cfg.executor.num_gpus,
                        max_retries=2)(_run_remote)
    summary = Summary(total=len(jobs))
    by_key = {j.key: j for j in jobs}
    bad: set[str] = set()
    done = 0
    for kind in KINDS:
        wave = [j for j in jobs if j.kind == kind]
        pending = []
        for job in wave:
            if is_done(run_dir, job):
                summary.cached += 1
            elif blocked_by(job, bad):
                bad.add(job.key)
                summary.skipped.append(job.label)
            else:
                pending.append(job)
        refs = {remote.remote(job, cfg, str(run_dir), by_key, stages): job for job in pending}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            job = refs.pop(ready[0])
            error = ray.get(ready[0])
            done += 1
            if error is None:
                summary.ran += 1
            else:
                bad.add(job.key)
                summary.failed[job.label] = error
            say(f"[{done}/{len(jobs) - summary.cached}] {'done' if error is None else 'FAILED'} "
                f"{job.label}" + (f": {error}" if error else ""))
    return summary
