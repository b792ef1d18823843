"""Building a library: every missing (model, task) pair becomes one job on the shared engine
(`loraocean.engine`): in this process, a local process pool, or a Ray cluster.

A pair is finished when its folder has a card with the same preset values, data hash and seed.
Each job takes the pair's lock (`pair_lock`), looks again, and trains only when the pair is still
missing, writing the adapter folder atomically into the library (on Ray: a shared filesystem). So
two builds on one root share the work instead of clashing, and a build killed at any moment can
simply be run again. The engine's records (failures, progress) live in `<root>/_build/`; the
manifest is re-derived from the cards by the driver.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from loraocean import models
from loraocean.engine import CACHE, Resources, RunFolder, Work, execute
from loraocean.errors import ConfigError, IntegrityError
from loraocean.library.presets import Preset, get_preset, training_values
from loraocean.library.store import Library
from loraocean.library.train import CARD, train_examples, train_lora
from loraocean.tasks import data_hash, portable_ref

EXECUTORS = ("local", "ray")
BUILD = "_build"  # the engine's run folder inside a library root (hidden from the listing)


@dataclass
class Pair:
    model: str
    task: str            # the library's name for the task (its folder)
    action: str          # train, retrain (stale when asked, or damaged), skip, stale (skipped although stale)
    ref: str = ""        # the task reference to train from (portable: absolute paths)


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


def pair_name(model: str, task: str) -> str:
    return f"{models.slug(model)}--{task}"


def failure_log(root: Path, model: str, task: str) -> Path:
    return RunFolder(Path(root) / BUILD).failure(pair_name(model, task))


@contextlib.contextmanager
def pair_lock(root: str | Path, model: str, task: str):
    """Exclusive right to write one pair of a library (waits for another writer to finish)."""
    import fcntl

    path = Path(root) / BUILD / "locks" / f"{pair_name(model, task)}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _status(lib: Library, model: str, task: str, preset: Preset, seed: int, digest: str) -> str:
    """missing, damaged (fails its integrity check), same (finished with these settings) or stale."""
    entry = lib.find(model, task)
    if entry is None:
        return "missing"
    try:
        Library.check(entry)
    except IntegrityError:
        return "damaged"
    card_preset = entry.card.get("preset", {})  # execution fields (memory) do not make it stale
    same = (card_preset.get("name") == preset.name and training_values(card_preset) == preset.values()
            and entry.card.get("data_hash") == digest and entry.card.get("seed") == seed)
    return "same" if same else "stale"


def plan(lib: Library, model_names: list[str], tasks: list[str], preset: Preset, seed: int = 0,
         limit: int | None = None, retrain_stale: bool = False) -> list[Pair]:
    """What to do with each pair (no training here; loads only the task data to hash it)."""
    pairs = []
    for task in tasks:
        ref = portable_ref(task)
        spec, examples = train_examples(ref, preset, seed, limit)
        digest = data_hash(examples)
        for model in model_names:
            status = _status(lib, model, spec.name, preset, seed, digest)
            action = {"missing": "train", "same": "skip", "damaged": "retrain"}.get(
                status, "retrain" if retrain_stale else "stale")
            pairs.append(Pair(model, spec.name, action, ref))
    return pairs


def run_pair(root: str, pair: Pair, preset: Preset, seed: int, limit: int | None,
             on_step=None) -> PairResult:
    """Train one pair into the library (a worker's job); an error propagates to the engine."""
    lib = Library(root)
    with pair_lock(root, pair.model, pair.task):
        if pair.action == "train":  # another build may have trained it meanwhile
            _, examples = train_examples(pair.ref, preset, seed, limit)
            status = _status(lib, pair.model, pair.task, preset, seed, data_hash(examples))
            if status != "missing":
                return PairResult(pair.model, pair.task, "skipped" if status == "same" else "stale")
        model, tokenizer = CACHE.get(pair.model)
        step = (lambda s, t, loss: on_step(pair, s, t, loss)) if on_step else None
        card = train_lora(pair.model, pair.ref, preset, out=lib.path(pair.model, pair.task), seed=seed,
                          limit=limit, model=model, tokenizer=tokenizer, on_step=step,
                          overwrite=pair.action == "retrain")
    return PairResult(pair.model, pair.task, "trained", card["seconds"], card["train"]["loss_first"],
                      card["train"]["loss_last"])


def build(root: str | Path, model_names: list[str], tasks: list[str], preset: "str | Preset" = "lite",
          *, seed: int = 0, limit: int | None = None, executor: str = "local", workers: int = 1,
          address: str | None = None, num_gpus: float | None = None, retrain_stale: bool = False,
          on_plan: Callable[[list[Pair]], None] | None = None,
          on_result: Callable[[PairResult], None] | None = None,
          on_step: Callable[[Pair, int, int, float], None] | None = None) -> list[PairResult]:
    """Train every missing pair of `model_names` x `tasks` into the library at `root`.

    `executor`: local (in this process with workers=1, else `workers` processes) or ray (`address`:
    a cluster, else a private local Ray with `workers` CPUs). `num_gpus` per pair: default 1 when
    the executor sees GPUs, else 0. Returns one result per pair (trained, skipped, stale, failed),
    in plan order.
    """
    from loraocean.engine.cluster import travelling_env
    from loraocean.engine.schedule import make_executor

    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor!r} is not known; use one of {', '.join(EXECUTORS)}")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {workers})")
    if not model_names or not tasks:
        raise ConfigError("give at least one model (--models) and one task (--tasks)")
    for name in model_names:
        models.resolve(name)  # unknown names fail before any work
    preset = get_preset(preset)
    lib = Library(Path(root).expanduser().resolve())
    lib.root.mkdir(parents=True, exist_ok=True)
    lib.clean_leftovers()  # temp folders of a build that was killed (a live build's stay)
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
    todo = {pair_name(p.model, p.task): p for p in pairs if p.action in ("train", "retrain")}
    if todo:
        engine = make_executor("ray" if executor == "ray" else "pool", workers, address=address,
                               env=travelling_env())
        gpus = num_gpus if num_gpus is not None else (1.0 if engine.gpus else 0.0)
        step = on_step if engine.slots == 1 and executor == "local" else None  # callbacks stay in-process
        items = [Work(name=name, kind="lora", label=f"{p.model} / {p.task}", fn=run_pair,
                      args=(str(lib.root), p, preset, seed, limit, step), model=p.model,
                      resources=Resources(cpus=1, gpus=gpus), artifact=str(lib.path(p.model, p.task) / CARD))
                 for name, p in todo.items()]

        def on_outcome(work, out, progress) -> None:
            p = todo[work.name]
            if out.error is None:
                record(out.value)
            else:
                record(PairResult(p.model, p.task, "failed", out.seconds,
                                  error=f"{out.error} (log: {failure_log(lib.root, p.model, p.task)})"))

        try:
            execute(items, engine, RunFolder(lib.root / BUILD), on_outcome=on_outcome)
        finally:
            lib.rebuild_manifest()
    return [results[(p.model, p.task)] for p in pairs]
