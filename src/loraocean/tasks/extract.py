"""Reading an answer off generated text, per task (`TaskSpec.extraction`)."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def normalize_number(text: str) -> str | None:
    """'1,234.50' -> '1234.5'; None when not a number."""
    text = text.replace(",", "").strip().rstrip(".")
    try:
        value = float(text)
    except ValueError:
        return None
    if value == int(value):
        return str(int(value))
    return repr(value)


def last_number(text: str) -> str | None:
    """The last number in `text`, normalized; GSM8K-style answers ('#### 42', 'The answer is 42.')."""
    marked = re.search(r"(?:####|answer is)\s*\$?\s*(-?[\d,]*\.?\d+)", text, flags=re.IGNORECASE)
    if marked:
        return normalize_number(marked.group(1))
    found = _NUMBER.findall(text)
    return normalize_number(found[-1]) if found else None


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (braces matched), as MATH solutions mark answers."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


def code_block(text: str) -> str:
    """The first fenced ```python block of a generation, or the text itself when there is none."""
    match = re.search(r"```(?:python|py)?[^\n]*\n(.*?)(?:```|$)", text, flags=re.DOTALL)
    return match.group(1) if match else text


def extract(text: str, how: str) -> str:
    if how == "none":
        return text.strip()
    if how == "number":
        return last_number(text) or ""
    if how == "first_line":
        return first_line(text)
    if how == "boxed":
        return last_boxed(text) or ""
    if how == "code":
        return code_block(text)
    raise ValueError(f"unknown extraction {how!r}")


def references(example) -> list[str]:
    """Every gold answer of a generate example, as the metric should accept them:
    `metadata["answers"]` (SQuAD, DROP, TriviaQA, NQ, MATH, SVAMP, BIG-bench), else
    `metadata["answer"]` (GSM8K's final number), else the target."""
    meta = example.metadata or {}
    if meta.get("answers"):
        return list(meta["answers"])
    if meta.get("answer") not in (None, ""):
        return [str(meta["answer"])]
    return [example.target]
