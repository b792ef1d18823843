"""The alpaca layout (records with `instruction`, `input`, `output`), which the Rocket and LoRAMoE
code and many LoRA collections ship their data in, read into and written from our `Example`s.

A source is one JSON file (a list of records), one JSONL file (a record per line) or a folder of
them named by split: `train`, `dev` (or `validation` / `valid` / `val`), `test`. Records map to
examples as instruction -> instruction, input -> input, output -> target. For a choice task the
choices are the record's `choices` with `label` when it has them (what `write` adds), else the
task's label set: every distinct output of the data, sorted, with the record's output as the label
(classification data as those repositories ship it).
"""

from __future__ import annotations

import json
from pathlib import Path

from loraocean.artifacts import write_text_atomic
from loraocean.errors import DataError
from loraocean.tasks.example import SPLITS, Example, TaskSpec

FIELDS = ("instruction", "input", "output")
SPLIT_NAMES = {"train": "train", "dev": "dev", "validation": "dev", "valid": "dev", "val": "dev",
               "test": "test"}
MAX_LABELS = 50


def _files(path: Path) -> dict[str, Path] | None:
    """{our split: file} of a folder, or None for a single file."""
    if path.is_file():
        return None
    found = {SPLIT_NAMES[p.stem]: p for p in sorted(path.iterdir())
             if p.suffix in (".json", ".jsonl") and p.stem in SPLIT_NAMES}
    if not found:
        raise DataError(path, "no train/dev/test .json or .jsonl file in the alpaca layout",
                        fix="name the files train.json, dev.json (or validation.json), test.json")
    return found


def _records(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(path, f"invalid JSON ({err.msg})", line=n) from None
        return rows
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(path, f"invalid JSON ({err.msg})", line=err.lineno) from None
    if not isinstance(rows, list):
        raise DataError(path, "expected a JSON list of records", fix="or give a .jsonl file")
    return rows


def is_alpaca(path: str | Path) -> bool:
    """Whether `path` holds data in the alpaca layout (its first record has instruction + output)."""
    path = Path(path)
    try:
        files = _files(path)
    except (DataError, OSError):
        return False
    first = path if files is None else next(iter(files.values()))
    if first.suffix not in (".json", ".jsonl"):
        return False
    try:
        rows = _records(first)
    except (DataError, OSError, UnicodeDecodeError):
        return False
    return bool(rows) and isinstance(rows[0], dict) and {"instruction", "output"} <= set(rows[0])


def _check(row, path: Path, n: int) -> dict:
    if not isinstance(row, dict):
        raise DataError(path, "expected a record (JSON object)", line=n)
    for key in FIELDS:
        value = row.get(key, "" if key == "input" else None)
        if not isinstance(value, str):
            raise DataError(path, f"{key!r} must be a string (got {type(value).__name__})", line=n,
                            field=key)
    return row


def read(path: str | Path, spec: TaskSpec) -> list[Example] | dict[str, list[Example]]:
    """The examples of an alpaca source: a list (one file; the task's split policy splits it) or
    {our split: examples} (a folder of split files)."""
    path = Path(path)
    files = _files(path)
    raw = {None: _records(path)} if files is None else {s: _records(f) for s, f in files.items()}
    rows = {s: [_check(r, files[s] if files else path, n) for n, r in enumerate(rs, start=1)]
            for s, rs in raw.items()}
    labels = None
    if spec.mode == "choice" and not all("choices" in r for rs in rows.values() for r in rs):
        labels = sorted({r["output"] for rs in rows.values() for r in rs})
        if len(labels) > MAX_LABELS:
            raise DataError(path, f"{len(labels)} distinct outputs for choice task {spec.name!r}",
                            field="output", fix="give each record its `choices` and `label`")
    out = {}
    for split, rs in rows.items():
        examples = []
        for n, r in enumerate(rs, start=1):
            choices, label = None, None
            if spec.mode == "choice":
                choices = list(r["choices"]) if labels is None else labels
                label = int(r["label"]) if labels is None else labels.index(r["output"])
            examples.append(Example(id=str(r.get("id", f"{spec.name}-{split or 'all'}-{n}")),
                                    task=spec.name, instruction=r["instruction"],
                                    input=r.get("input", ""), target=r["output"], choices=choices,
                                    label=label))
        out[split] = examples
    return out[None] if files is None else out


def write(splits: dict[str, list[Example]], out_dir: str | Path) -> list[Path]:
    """`<split>.json` per split in the alpaca layout (plus `id`, and `choices` / `label` for
    choice tasks, which alpaca readers ignore); returns the paths."""
    out_dir = Path(out_dir)
    paths = []
    for split in SPLITS:
        if split not in splits:
            continue
        rows = []
        for ex in splits[split]:
            row = {"instruction": ex.instruction, "input": ex.input, "output": ex.target, "id": ex.id}
            if ex.choices is not None:
                row |= {"choices": list(ex.choices), "label": ex.label}
            rows.append(row)
        paths.append(write_text_atomic(out_dir / f"{split}.json",
                                       json.dumps(rows, indent=1, ensure_ascii=False) + "\n"))
    return paths
