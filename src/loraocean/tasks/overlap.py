"""Test data inside an expert: 13-gram overlap between one task's training split and another
task's test split, the rule of lm-evaluation-harness's decontamination (`lm_eval/decontamination/`):
lowercase, punctuation deleted, split on whitespace, word 13-grams; a test example is contaminated
when one of its 13-grams occurs in the training text. Written here (a dozen lines) rather than
imported: lm-eval is an optional extra, and its Janitor prints a warning and a traceback on import
when its C++ helper is missing. `tests/test_tasks_overlap.py` checks the n-grams against lm-eval's
own `Janitor` and `word_ngrams`.

Text of an example: its input and its reference answer (the instruction is the task's template,
shared by every example). A 13-gram that occurs in more than `TEMPLATE_SHARE` of the test split's
own examples is template text (a shared preamble such as BIG-bench's logical-deduction puzzles'),
not an example's content, and is not counted.

A training split contaminates a test split when at least `THRESHOLD` of the test examples (and at
least one) overlap it. Results are cached in `$LORAOCEAN_HOME/overlap/`, keyed by both splits'
data hashes, the n-gram size and this module's `VERSION`.
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass, field

from loraocean.artifacts import hash_obj, read_json_object, write_json_atomic
from loraocean.errors import LoraOceanError
from loraocean.paths import cache_dir
from loraocean.tasks.example import Example

N = 13
THRESHOLD = 0.01
TEMPLATE_SHARE = 0.05
VERSION = 1
_TABLE = str.maketrans(string.ascii_uppercase, string.ascii_lowercase, string.punctuation)


def normalize(text: str) -> str:
    """lm-eval's Janitor normalisation: ASCII letters lowercased, ASCII punctuation deleted."""
    return text.translate(_TABLE)


def ngrams(text: str, n: int = N) -> set[str]:
    """The word n-grams of the normalised text, each joined by single spaces."""
    words = normalize(text).split()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def text_of(ex: Example) -> str:
    return f"{ex.input}\n{ex.target}"


@dataclass
class Overlap:
    train_task: str
    test_task: str
    n: int                      # n-gram size
    test_examples: int
    overlapping: int            # test examples with a 13-gram in the training text
    example_ids: list[str] = field(default_factory=list)  # up to 5 of them

    @property
    def share(self) -> float:
        return self.overlapping / self.test_examples if self.test_examples else 0.0

    @property
    def contaminated(self) -> bool:
        return self.overlapping > 0 and self.share >= THRESHOLD

    def to_dict(self) -> dict:
        return {**asdict(self), "share": self.share, "contaminated": self.contaminated}


def overlapping(train: list[Example], test: list[Example], n: int = N) -> list[int]:
    """Indices of the test examples that share a content n-gram with any training example."""
    grams = [ngrams(text_of(ex), n) for ex in test]
    where: dict[str, list[int]] = {}
    for i, gs in enumerate(grams):
        for g in gs:
            where.setdefault(g, []).append(i)
    template = max(2, TEMPLATE_SHARE * len(test))
    where = {g: idx for g, idx in where.items() if len(idx) <= template}
    hit: set[int] = set()
    for ex in train:
        for g in ngrams(text_of(ex), n):
            hit.update(where.get(g, ()))
    return sorted(hit)


def overlap(train_task: str, test_task: str, n: int = N, cache: bool = True) -> Overlap:
    """The overlap of `train_task`'s train split with `test_task`'s test split (task names or
    references that `tasks.get_task` resolves), cached."""
    from loraocean.tasks.catalog import get_task
    from loraocean.tasks.example import data_hash
    from loraocean.tasks.load import load_split

    train_spec, test_spec = get_task(train_task), get_task(test_task)
    train = load_split(train_spec, "train")
    test = load_split(test_spec, "test")
    path = cache_dir("overlap") / (hash_obj([VERSION, n, data_hash(train), data_hash(test)]) + ".json")
    if cache and path.is_file():
        try:
            row = read_json_object(path)
            return Overlap(train_spec.name, test_spec.name, row["n"], row["test_examples"], row["overlapping"],
                           row["example_ids"])
        except (LoraOceanError, KeyError, TypeError):  # a damaged cache entry is recomputed
            pass
    hits = overlapping(train, test, n)
    found = Overlap(train_spec.name, test_spec.name, n, len(test), len(hits), [test[i].id for i in hits[:5]])
    if cache:
        write_json_atomic(path, found.to_dict())
    return found
