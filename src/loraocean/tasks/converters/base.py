"""What every converter uses: the registry `CONVERTERS`, `@converter`, `RowError` and the
field readers (see the package docstring)."""

from __future__ import annotations

from typing import Any, Callable

from loraocean.tasks.example import Example

Converter = Callable[[dict, str, str], Example]
CONVERTERS: dict[str, Converter] = {}


class RowError(Exception):
    """A row that does not fit the converter's schema (caught and located by the loader)."""

    def __init__(self, field: str, problem: str):
        super().__init__(problem)
        self.field = field
        self.problem = problem


def converter(*tasks: str):
    def deco(fn: Converter) -> Converter:
        for task in tasks:
            CONVERTERS[task] = fn
        return fn

    return deco


def get(row: dict, key: str, kind: type | tuple[type, ...] = str) -> Any:
    """`row[key]`, checked to be of `kind` (bool is not accepted as int)."""
    if key not in row:
        raise RowError(key, "missing field")
    value = row[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise RowError(key, f"expected {names}, got {type(value).__name__} {value!r:.60}")
    return value


def text_list(row: dict, key: str, value: Any = None) -> list[str]:
    """A non-empty list of strings (the field itself or a value taken from it)."""
    value = get(row, key, list) if value is None else value
    if not value or not all(isinstance(v, str) for v in value):
        raise RowError(key, f"expected a non-empty list of text, got {value!r:.80}")
    return list(value)


def label_index(field: str, value: Any, n: int) -> int:
    """An integer class label checked to lie in 0..n-1 (test splits of GLUE-style data sets carry
    -1: those rows have no answer and cannot be used)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RowError(field, f"expected an integer label, got {value!r}")
    if not 0 <= value < n:
        raise RowError(field, f"label {value} out of range 0..{n - 1}"
                              + (" (an unlabeled test row)" if value == -1 else ""))
    return value


def key_index(field: str, key: Any, keys: list[str]) -> int:
    """Position of an answer key ('B', '3', 'c') among the choice keys."""
    if not isinstance(key, str) or key.strip() not in keys:
        raise RowError(field, f"answer key {key!r} is not one of {keys}")
    return keys.index(key.strip())


def with_options(text: str, choices: list[str]) -> str:
    """The question followed by its options, one per line (the same layout as BIG-bench's
    `append_choices_to_input`)."""
    return text.rstrip() + "\n" + "\n".join(f"- {c}" for c in choices)


def choice_example(id: str, task: str, instruction: str, input: str, choices: list[str],
                   label: int, **metadata) -> Example:
    return Example(id=id, task=task, instruction=instruction, input=input, target=choices[label],
                   choices=list(choices), label=label, metadata=metadata)


def question(text: str) -> str:
    """Questions some data sets store lower-cased without the question mark (BoolQ, NQ)."""
    text = text.strip()
    return text if text.endswith("?") else text + "?"
