"""The candidate experts of a selection: the library LoRAs of one base model, the target's own LoRA
(and the LoRA of any catalog task built from the same dataset, e.g. siqa for bb_social_iqa) left
out unless asked for, and the LoRAs whose training split shares 13-grams with the target's test
split (`contaminated`, `tasks.overlap`) left out by default."""

from __future__ import annotations

from pathlib import Path

from loraocean.errors import ConfigError, LoraOceanError
from loraocean.models import slug


def library_entries(root: str | Path) -> list:
    """Every entry of the library at `root` (each with .model, .task, .path, .card)."""
    from loraocean.library import Library

    return list(Library(root).list())


def candidates(root: str | Path, model_name: str, target: str, include_target: bool = False) -> list:
    """The library entries trained on `model_name`, sorted by task name; the target's own LoRA and
    those of tasks sharing its data (`tasks.same_data`) are excluded unless `include_target`."""
    root = Path(root)
    if not root.is_dir():
        raise LoraOceanError(f"library folder {root} does not exist; pass --library DIR (a folder "
                             "built with `loraocean library build`)")
    entries = library_entries(root)
    mine = [e for e in entries if e.model in (model_name, slug(model_name))]
    if not mine:
        models = sorted({e.model for e in entries})
        raise LoraOceanError(
            f"library {root} has no adapters for model {model_name!r}"
            + (f" (it has adapters for: {', '.join(models)})" if models else " (it is empty)")
            + "; train some with `loraocean library build` or pick another --model")
    if not include_target:
        from loraocean.tasks import same_data

        own = {target} | same_data(target)
        mine = [e for e in mine if e.task not in own]
    from loraocean.library import Library

    for entry in mine:  # a damaged or edited adapter is refused, never ranked
        Library.check(entry)
    return sorted(mine, key=lambda e: e.task)


def check_k(k: int, pool: list, target: str, include_target: bool, excluded: dict | None = None) -> None:
    if k < 1:
        raise ConfigError(f"--k must be at least 1 (got {k})")
    if k > len(pool):
        hint = "" if include_target else (" (the target's own LoRA, and any LoRA of a task built from the "
                                          "same dataset, is excluded; --include-target allows them)")
        if excluded:
            hint += (f" ({', '.join(sorted(excluded))} left out: their training data overlaps the target's "
                     "test split; --include-contaminated allows them)")
        raise ConfigError(f"--k {k} is larger than the {len(pool)} candidate LoRAs for target "
                          f"{target!r}{hint}; lower --k or add LoRAs to the library")


def task_ref(entry) -> str:
    """The task reference of a library entry that `tasks.get_task` resolves: its catalog name, else
    the source its card records (a BIG-bench folder read by path)."""
    from loraocean.tasks import CATALOG

    return entry.task if entry.task in CATALOG else entry.card.get("task_source") or entry.task


def contaminated(entries: list, target: str) -> tuple[dict[str, dict], list[str]]:
    """({task: overlap record} of the entries whose training split contaminates `target`'s test
    split, [tasks whose data could not be read here, so were not checked])."""
    from loraocean.tasks.overlap import overlap

    found, unchecked = {}, []
    for entry in entries:
        try:
            record = overlap(task_ref(entry), target)
        except LoraOceanError:
            unchecked.append(entry.task)
            continue
        if record.contaminated:
            found[entry.task] = record.to_dict()
    return found, unchecked
