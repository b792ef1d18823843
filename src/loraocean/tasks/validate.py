"""Checking unified data: each row's fields and types, labels, ids, splits, and leakage.

Every problem raises a `DataError` naming the file, the line and the field. `leakage` is a report,
not an error: exact-duplicate inputs across splits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from loraocean.artifacts import read_text
from loraocean.errors import DataError
from loraocean.tasks.example import SPLITS, Example

TEXT_FIELDS = ("id", "task", "instruction", "input", "target")


def example_from_row(row, path, line: int | None = None) -> Example:
    """An `Example` from one unified row, every field checked."""
    def bad(field, problem):
        return DataError(path, problem, line=line, field=field)

    if not isinstance(row, dict):
        raise bad(None, f"expected a JSON object, got {type(row).__name__}")
    known = set(TEXT_FIELDS) | {"choices", "label", "metadata"}
    for key in row:
        if key not in known:
            raise DataError(path, f"unknown field (the unified fields are "
                                  f"{', '.join(sorted(known))})", line=line, field=key,
                            fix="for a file in a data set's own schema, name its task: --task T")
    for key in TEXT_FIELDS:
        if key not in row:
            raise bad(key, "missing field")
        if not isinstance(row[key], str):
            raise bad(key, f"expected text, got {type(row[key]).__name__}")
    if not row["id"].strip():
        raise bad("id", "empty id")
    choices, label = row.get("choices"), row.get("label")
    if choices is not None:
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise bad("choices", "expected a list of text")
        if len(choices) < 2:
            raise bad("choices", f"{len(choices)} choices; a choice example needs at least two")
        if isinstance(label, bool) or not isinstance(label, int):
            raise bad("label", f"a choice example needs an integer label, got {label!r}")
        if not 0 <= label < len(choices):
            raise bad("label", f"label {label} out of range 0..{len(choices) - 1}")
        if row["target"] != choices[label]:
            raise bad("target", f"target {row['target']!r:.60} is not choices[{label}] "
                                f"{choices[label]!r:.60}")
    elif label is not None:
        raise bad("label", "a label without choices")
    metadata = row.get("metadata", {})
    if not isinstance(metadata, dict):
        raise bad("metadata", f"expected an object, got {type(metadata).__name__}")
    return Example(id=row["id"], task=row["task"], instruction=row["instruction"],
                   input=row["input"], target=row["target"], choices=choices, label=label,
                   metadata=metadata)


def check_example(example: Example, where) -> Example:
    """The same checks for an `Example` a converter made (a converter bug or odd data)."""
    return example_from_row(example.to_dict(), where)


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def read_jsonl(path: str | Path) -> list[Example]:
    """Unified examples from a JSONL file, every line checked; duplicate ids are an error."""
    path = Path(path)
    out, seen = [], {}
    for n, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as err:
            raise DataError(path, f"malformed JSON ({err.msg} at column {err.colno})",
                            line=n) from None
        except _DuplicateKey as dup:
            raise DataError(path, f"the key {dup.args[0]!r} is there twice (JSON keeps the last one "
                            "silently)", line=n, field=dup.args[0], fix="keep one of them") from None
        ex = example_from_row(row, path, n)
        if ex.id in seen:
            raise DataError(path, f"duplicate id {ex.id!r} (first on line {seen[ex.id]})",
                            line=n, field="id")
        seen[ex.id] = n
        out.append(ex)
    return out


def check_splits(splits: dict[str, list[Example]], where) -> None:
    """No empty split, no id in two splits, one mode (choice or generate) throughout."""
    owner: dict[str, str] = {}
    for split in SPLITS:
        examples = splits.get(split, [])
        if not examples:
            raise DataError(where, f"the {split} split is empty", field=split,
                            fix="use a source with more examples or other split settings")
        for ex in examples:
            if ex.id in owner:
                raise DataError(where, f"id {ex.id!r} is in both {owner[ex.id]} and {split}",
                                field="id")
            owner[ex.id] = split
    kinds = {ex.choices is None for exs in splits.values() for ex in exs}
    if len(kinds) > 1:
        raise DataError(where, "mixes choice examples (with choices) and generate examples",
                        field="choices")


@dataclass
class Leak:
    splits: tuple[str, str]
    ids: list[tuple[str, str]] = field(default_factory=list)  # (id in first split, id in second)


def leakage(splits: dict[str, list[Example]]) -> list[Leak]:
    """Exact-duplicate inputs (instruction + input) across splits: train-dev, train-test, dev-test."""
    index = {s: {} for s in splits}
    for split, examples in splits.items():
        for ex in examples:
            index[split].setdefault((ex.instruction, ex.input), ex.id)
    out = []
    names = [s for s in SPLITS if s in splits]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            common = index[a].keys() & index[b].keys()
            if common:
                out.append(Leak((a, b), sorted((index[a][k], index[b][k]) for k in common)))
    return out


def check_modes(examples: list[Example], where) -> None:
    if len({ex.choices is None for ex in examples}) > 1:
        raise DataError(where, "mixes choice examples (with choices) and generate examples",
                        field="choices")
