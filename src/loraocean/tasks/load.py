"""Loading a task's examples by split, with seeded caps and a content hash."""

from __future__ import annotations

import json
import os
from functools import lru_cache

from loraocean.errors import ConfigError, LoraOceanError
from loraocean.tasks.catalog import get_task
from loraocean.tasks.example import SPLITS, Example, TaskSpec
from loraocean.tasks.splits import subsample
from loraocean.tasks.store import read_store, source_splits, store_dir


def _all_splits(spec: TaskSpec) -> dict[str, tuple[Example, ...]]:
    """A task's examples by split: from its prepared store (`loraocean tasks prepare`) when there
    is one for this source, else read from the source itself. Cached per data location: a change
    of $LORAOCEAN_HOME or $LORAOCEAN_BIGBENCH (another cache, another BIG-bench copy) reads again
    instead of returning the examples read from the old one."""
    return _read_splits(spec, os.environ.get("LORAOCEAN_HOME", ""), os.environ.get("LORAOCEAN_BIGBENCH", ""))


@lru_cache(maxsize=64)
def _read_splits(spec: TaskSpec, home: str, bigbench: str) -> dict[str, tuple[Example, ...]]:
    """`_all_splits` for the data location named by `home` and `bigbench` (the cache key only:
    the readers take both from the environment)."""
    folder = store_dir(spec.name)
    if (folder / "metadata.json").is_file():
        meta, splits = read_store(folder)
        if meta.get("source") == spec.source:
            return {k: tuple(v) for k, v in splits.items()}
    return {k: tuple(v) for k, v in source_splits(spec).items()}


def load_split(task: str | TaskSpec, split: str, limit: int | None = None, seed: int = 0) -> list[Example]:
    """Examples of one split, optionally capped to a seeded stable subset of `limit`."""
    spec = get_task(task) if isinstance(task, str) else task
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1 (got {limit})")
    examples = list(_all_splits(spec)[split])
    if not examples:
        raise LoraOceanError(f"task {spec.name!r} has an empty {split} split; "
                             "choose another split or a larger source")
    return subsample(examples, limit, seed)


def availability(spec: TaskSpec) -> str:
    """Whether a task's data can be read on this machine now, without the hub."""
    meta = store_dir(spec.name) / "metadata.json"
    if meta.is_file():
        try:
            if json.loads(meta.read_text(encoding="utf-8")).get("source") == spec.source:
                return "yes (prepared)"
        except (ValueError, AttributeError):
            return f"no (unreadable {meta}; run tasks validate)"
    kind, _, ref = spec.source.partition(":")
    if kind == "hf":
        return "no (hub; or prepare --from)"
    if kind == "bigbench":
        from loraocean.tasks.sources import bigbench

        return "yes (files)" if bigbench.available(ref) else "no (data fetch bigbench)"
    try:
        from loraocean.tasks.sources import packaged

        packaged.gsm8k_file() if kind == "gsm8k-pypi" else packaged.humaneval_file()
    except LoraOceanError:
        return "no (pip package)"
    return "yes (package)"
