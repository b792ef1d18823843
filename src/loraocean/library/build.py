"""Building a library: train every missing (model, task) pair, skip finished ones, on a local
process pool or a Ray cluster.

A pair is finished when its folder has a card with the same preset values and the same data hash.
Every executor runs `run_pair`, which writes the adapter folder atomically straight into the
library (on Ray: a shared filesystem), so a build killed at any moment can simply be run again.
The manifest is re-derived from the cards by the driver.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from loraocean import models
from loraocean.artifacts import write_text_atomic
from loraocean.errors import ConfigError, LoraOceanError, MissingPackageError
from loraocean.library.presets import Preset, get_preset, training_values
from loraocean.library.store import FAILURES, Library
from loraocean.library.train import train_examples, train_lora
from loraocean.tasks import data_hash

EXECUTORS = ("local", "ray")
# Environment a worker needs to find the same data and cache as the driver.
_ENV = ("LORAOCEAN_HOME", "LORAOCEAN_BIGBENCH", "TOKENIZERS_PARALLELISM")


@dataclass
class Pair:
    model: str
    task: str
    action: str          # train, retrain, skip, stale (skipped although stale)


@dataclass
class PairResult:
    model: str
    task: str
    status: str          # trained, skipped, stale, failed
    seconds: float = 0.0
    loss_first: float | None = None
    loss_last: float | None = None
    error: str = ""
    metrics: dict = field(default_factory=dict)


def failure_log(root: Path, model: str, task: str) -> Path:
    return Path(root) / FAILURES / f"{models.slug(model)}--{task}.log"


def failed(root: Path, model: str, task: str, err: Exception, seconds: float = 0.0) -> PairResult:
    """Write the pair's failure log (traceback for unexpected errors) and its `failed` result."""
    log = failure_log(root, model, task)
    detail = "" if isinstance(err, LoraOceanError) else "".join(traceback.format_exception(err))
    write_text_atomic(log, f"model: {model}\ntask: {task}\nerror: {type(err).__name__}: {err}\n\n{detail}")
    return PairResult(model, task, "failed", seconds, error=f"{type(err).__name__}: {err} (log: {log})")


def plan(lib: Library, model_names: list[str], tasks: list[str], preset: Preset, seed: int = 0,
         limit: int | None = None, retrain_stale: bool = False) -> list[Pair]:
    """What to do with each pair (no training here; loads only the task data to hash it)."""
    pairs = []
    for task in tasks:
        spec, examples = train_examples(task, preset, seed, limit)
        digest = data_hash(examples)
        for model in model_names:
            entry = lib.find(model, spec.name)
            if entry is None:
                pairs.append(Pair(model, spec.name, "train"))
                continue
            card_preset = entry.card.get("preset", {})
            same = (card_preset.get("name") == preset.name
                    and training_values(card_preset) == preset.values()
                    and entry.card.get("data_hash") == digest and entry.card.get("seed") == seed)
            if same:
                pairs.append(Pair(model, spec.name, "skip"))
            else:
                pairs.append(Pair(model, spec.name, "retrain" if retrain_stale else "stale"))
    return pairs


def run_pair(root: str, model_name: str, task: str, preset: Preset, seed: int, limit: int | None,
             overwrite: bool, model=None, tokenizer=None, on_step=None) -> PairResult:
    """Train one pair into the library; any failure becomes a failure log and a `failed` result."""
    lib = Library(root)
    log = failure_log(lib.root, model_name, task)
    start = time.perf_counter()
    try:
        card = train_lora(model_name, task, preset, out=lib.path(model_name, task), seed=seed,
                          limit=limit, model=model, tokenizer=tokenizer, on_step=on_step,
                          overwrite=overwrite)
    except Exception as err:  # one pair's failure must not stop the build
        return failed(lib.root, model_name, task, err, time.perf_counter() - start)
    log.unlink(missing_ok=True)
    return PairResult(model_name, task, "trained", card["seconds"], card["train"]["loss_first"],
                      card["train"]["loss_last"])


# ---- local executor -------------------------------------------------------------------------
_MODELS: dict = {}  # per-process cache: a worker loads each base model once


def _cached(model_name: str):
    if model_name not in _MODELS:
        _MODELS.clear()
        _MODELS[model_name] = models.load(model_name)
    return _MODELS[model_name]


def _pool_init(threads: int, env: dict) -> None:
    import torch

    os.environ.update(env)
    torch.set_num_threads(threads)


def _pool_pair(args) -> PairResult:
    root, model_name, task, preset, seed, limit, overwrite = args
    try:
        model, tokenizer = _cached(model_name)
    except Exception as err:
        return failed(Path(root), model_name, task, err)
    return run_pair(root, model_name, task, preset, seed, limit, overwrite, model, tokenizer)


def _env() -> dict:
    return {k: os.environ[k] for k in _ENV if k in os.environ}


def run_local(root, todo: list[Pair], preset, seed, limit, workers: int, on_result, on_step):
    if workers <= 1:
        # In-process: pairs sorted by model, each base model loaded once.
        for pair in sorted(todo, key=lambda p: p.model):
            try:
                model, tokenizer = _cached(pair.model)
            except Exception as err:
                on_result(failed(Path(root), pair.model, pair.task, err))
                continue
            step = (lambda s, t, loss, p=pair: on_step(p, s, t, loss)) if on_step else None
            on_result(run_pair(str(root), pair.model, pair.task, preset, seed, limit,
                               pair.action == "retrain", model, tokenizer, step))
        _MODELS.clear()
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_pool_init, initargs=(threads, _env())) as pool:
        futures = [pool.submit(_pool_pair, (str(root), p.model, p.task, preset, seed, limit,
                                            p.action == "retrain")) for p in todo]
        for fut in as_completed(futures):
            on_result(fut.result())


# ---- Ray executor ---------------------------------------------------------------------------
def _ray_pair(env: dict, threads: int, root, model_name, task, preset, seed, limit, overwrite):
    _pool_init(threads, env)
    return _pool_pair((root, model_name, task, preset, seed, limit, overwrite))


def run_ray(root, todo: list[Pair], preset, seed, limit, workers: int, address: str | None,
            on_result, gpus_per_task: float | None = None):
    try:
        import ray
    except ImportError:
        raise MissingPackageError("Ray", "pip install 'loraocean[ray]'") from None
    import torch

    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False)
        started = True
    if gpus_per_task is None:
        gpus_per_task = 1.0 if torch.cuda.is_available() else 0.0
    remote = ray.remote(num_cpus=1, num_gpus=gpus_per_task, max_retries=2)(_ray_pair)
    try:
        refs = [remote.remote(_env(), 1, str(root), p.model, p.task, preset, seed, limit,
                              p.action == "retrain") for p in todo]
        pending = {ref: p for ref, p in zip(refs, todo)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            pair = pending.pop(done[0])
            try:
                on_result(ray.get(done[0]))
            except ray.exceptions.RayError as err:
                on_result(failed(Path(root), pair.model, pair.task, err))
    finally:
        if started:
            ray.shutdown()


# ---- the build ------------------------------------------------------------------------------
def build(root: str | Path, model_names: list[str], tasks: list[str], preset: "str | Preset" = "lite",
          *, seed: int = 0, limit: int | None = None, executor: str = "local", workers: int = 1,
          address: str | None = None, retrain_stale: bool = False,
          on_plan: Callable[[list[Pair]], None] | None = None,
          on_result: Callable[[PairResult], None] | None = None,
          on_step: Callable[[Pair, int, int, float], None] | None = None) -> list[PairResult]:
    """Train every missing pair of `model_names` x `tasks` into the library at `root`.

    Returns one result per pair (trained, skipped, stale, failed), in plan order.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor!r} is not known; use one of {', '.join(EXECUTORS)}")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {workers})")
    if not model_names or not tasks:
        raise ConfigError("give at least one model (--models) and one task (--tasks)")
    for name in model_names:
        models.resolve(name)  # unknown names fail before any work
    preset = get_preset(preset)
    lib = Library(root)
    lib.root.mkdir(parents=True, exist_ok=True)
    lib.clean_leftovers()  # temp folders of a build that was killed
    pairs = plan(lib, model_names, tasks, preset, seed, limit, retrain_stale)
    if on_plan:
        on_plan(pairs)
    results: dict[tuple[str, str], PairResult] = {}

    def record(res: PairResult) -> None:
        results[(res.model, res.task)] = res
        if on_result:
            on_result(res)

    for p in pairs:
        if p.action in ("skip", "stale"):
            record(PairResult(p.model, p.task, "skipped" if p.action == "skip" else "stale"))
    todo = [p for p in pairs if p.action in ("train", "retrain")]
    try:
        if executor == "local":
            run_local(lib.root, todo, preset, seed, limit, workers, record, on_step)
        else:
            run_ray(lib.root, todo, preset, seed, limit, workers, address, record)
    finally:
        lib.rebuild_manifest()
    return [results[(p.model, p.task)] for p in pairs]


def summary_rows(results: list[PairResult]) -> list[dict]:
    return [asdict(r) for r in results]
