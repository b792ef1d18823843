"""BIG-bench `task.json` files (Apache-2.0): by path, or by name from a fetched copy.

Choice tasks come from `target_scores` (choices in file order; the label is the first choice with
the highest score); tasks with only `target` become generate tasks. When the file asks for it
(`append_choices_to_input`, BIG-bench's default is true), the choices are listed in the input.

A choice example must make sense or the file is refused, naming the example: at least two
choices, a best score above 0 (a task whose scores are all 0 has no right answer), no key twice
in one object (JSON keeps the last silently), and a `target` that names one of the choices must
be a best-scored one (a `target` that is not a choice is an explanation, as in strategyqa, and is
not read).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from loraocean.artifacts import read_json_object
from loraocean.errors import DataError, LoraOceanError
from loraocean.paths import home
from loraocean.tasks.example import Example
from loraocean.tasks.sources.base import reader

FETCH_HINT = "run `loraocean data fetch bigbench` once (downloads the bigbench 1.0.0 sdist from PyPI)"


def search_roots() -> list[Path]:
    """Folders searched for BIG-bench tasks by name: $LORAOCEAN_BIGBENCH, then the fetched copy."""
    roots = []
    if os.environ.get("LORAOCEAN_BIGBENCH"):
        roots += [Path(p) for p in os.environ["LORAOCEAN_BIGBENCH"].split(os.pathsep) if p]
    roots.append(home() / "data" / "bigbench")
    return roots


def locate(ref: str) -> Path:
    """The task.json for a path (file or folder) or a task name like `logical_deduction/three_objects`."""
    path = Path(ref).expanduser()
    candidates = [path] if (path.is_absolute() or ref.startswith(".") or path.exists()) else []
    candidates += [root / ref for root in search_roots()]
    for cand in candidates:
        if cand.is_file():
            return cand
        if (cand / "task.json").is_file():
            return cand / "task.json"
    raise LoraOceanError(f"BIG-bench task {ref!r} not found (looked in {', '.join(map(str, candidates))}); "
                         f"pass a path to a task.json or its folder, or {FETCH_HINT}")


def available(ref: str) -> bool:
    """Whether the task file of `ref` is on this machine (`locate` finds it)."""
    try:
        locate(ref)
    except LoraOceanError:
        return False
    return True


def task_name_for(ref: str) -> str:
    """`../x/logical_deduction/three_objects` -> `logical_deduction_three_objects` for a name ref;
    for a path, the folder name (and parent, for BIG-bench subtasks). The name becomes a library
    folder, so characters outside `paths.NAME`'s set become `_` (the reference, a path to read
    from, may hold anything) and it is cut to 90 characters."""
    path = locate(ref)
    folder = path.parent
    name = folder.name
    if (folder.parent / "task.json").is_file():  # a subtask folder of a task with subtasks
        name = f"{folder.parent.name}_{folder.name}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:90]


def list_tasks(root: str | Path) -> list[tuple[str, Path]]:
    """(name, task.json) for every task file with examples under `root`."""
    root = Path(root)
    out = []
    for path in sorted(root.rglob("task.json")):
        rel = path.parent.relative_to(root)
        name = "_".join(rel.parts) if rel.parts else root.name
        out.append((name, path))
    return out


class _Object(dict):
    """A JSON object that remembers the first key it had twice (`duplicate`)."""

    duplicate: str | None = None


def _pairs(pairs: list) -> dict:
    out = _Object()
    for key, value in pairs:
        if key in out and out.duplicate is None:
            out.duplicate = key
        out[key] = value
    return out


def _no_duplicate(obj, path: Path, what: str, field: str | None) -> None:
    if isinstance(obj, _Object) and obj.duplicate is not None:
        raise DataError(path, f"{what} has the key {obj.duplicate!r} twice", field=field,
                        fix="keep one of them")


def _load_json(path: Path) -> dict:
    """The task file's top-level object (a DataError for unreadable, non-UTF-8 or non-object files)."""
    data = read_json_object(path, fix="repair or re-fetch it: a BIG-bench task.json is an object "
                                      "with an 'examples' list", object_pairs_hook=_pairs)
    _no_duplicate(data, path, "the top-level object", None)
    append = data.get("append_choices_to_input")
    if isinstance(append, str) and append.strip().lower() in ("true", "false"):
        # BIG-bench 1.0.0 ships one task with the string "false"; its author meant the boolean
        data["append_choices_to_input"] = append.strip().lower() == "true"
    for key, kind, what in (("task_prefix", str, "a text"), ("append_choices_to_input", bool, "true or false"),
                            ("examples", list, "a list of objects")):
        if key in data and data[key] is not None and not isinstance(data[key], kind):
            raise DataError(path, f"must be {what} (got {type(data[key]).__name__})", field=key)
    return data


def _examples(data: dict) -> list:
    return data.get("examples") or []


def _mode(examples: list) -> str:
    first = examples[0] if examples else {}
    return "choice" if isinstance(first, dict) and "target_scores" in first else "generate"


def convert(data: dict, task: str, path: Path | str = "<task.json>") -> list[Example]:
    if not isinstance(data.get("examples"), list) or not data["examples"]:
        raise DataError(path, "has no examples", field="examples",
                        fix="a task with subtasks lists them in sub-folders; point at one of those")
    instruction = (data.get("task_prefix") or "").strip()
    append = data.get("append_choices_to_input", True)
    out = []
    for i, row in enumerate(data["examples"]):
        where = f"examples[{i}]"
        if not isinstance(row, dict) or not isinstance(row.get("input"), str):
            raise DataError(path, f"example {i} lacks a text 'input'", field=f"{where}.input")
        _no_duplicate(row, path, f"example {i}", where)
        scores = row.get("target_scores")
        if scores is not None:
            if not isinstance(scores, dict) or not scores:
                raise DataError(path, f"example {i} has empty or non-object target_scores",
                                field=f"{where}.target_scores")
            _no_duplicate(scores, path, f"example {i}'s target_scores", f"{where}.target_scores")
            choices = [str(c) for c in scores]
            values = list(scores.values())
            for choice, v in zip(choices, values):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or abs(v) == float("inf"):
                    raise DataError(path, f"example {i}: the score of {choice!r} is {v!r}, not a number",
                                    field=f"{where}.target_scores")
            if len(choices) < 2:
                raise DataError(path, f"example {i} has {len(choices)} choice; a choice example needs at "
                                "least two", field=f"{where}.target_scores")
            best = max(values)
            if best <= 0:
                raise DataError(path, f"example {i}: no choice has a score above 0, so it has no right "
                                "answer", field=f"{where}.target_scores",
                                fix="give the right choice the score 1")
            label = values.index(best)
            named = row.get("target")
            if isinstance(named, str) and named in scores and scores[named] != best:
                raise DataError(path, f"example {i}: its target {named!r:.60} scores {scores[named]}, below "
                                f"the best choice {choices[label]!r:.60} ({best})", field=f"{where}.target")
            text = row["input"]
            if append:
                text += "\n" + "\n".join(f"- {c}" for c in choices)
            out.append(Example(id=f"{task}-{i:05d}", task=task, instruction=instruction, input=text,
                               target=choices[label], choices=choices, label=label))
        else:
            target = row.get("target")
            targets = [target] if isinstance(target, str) else target
            if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
                raise DataError(path, f"example {i} has neither target_scores nor a text target",
                                field=f"{where}.target")
            out.append(Example(id=f"{task}-{i:05d}", task=task, instruction=instruction,
                               input=row["input"], target=targets[0],
                               metadata={"answers": list(targets)}))
    return out


def describe(path: Path) -> tuple[int, str]:
    """(number of examples, mode) of a task.json; a parent of subtasks has 0 examples."""
    data = _load_json(Path(path))
    examples = _examples(data)
    if not examples:
        return 0, "subtasks" if data.get("subtasks") or list(Path(path).parent.glob("*/task.json")) else "-"
    return len(examples), _mode(examples)


def mode_of(ref: str) -> str:
    return _mode(_examples(_load_json(locate(ref))))


@reader("bigbench")
def read_bigbench(ref: str, spec) -> list[Example]:
    path = locate(ref)
    return convert(_load_json(path), spec.name, path)
