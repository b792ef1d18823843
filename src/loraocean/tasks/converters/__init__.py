"""Converters: one function per task mapping one row of the public data set (fields and types
exactly as the Hugging Face hub serves them) to a unified `Example`.

A converter is `fn(row: dict, id: str, task: str) -> Example`, registered with
`@converter("task_name", ...)`. It raises `RowError(field, problem)` for a row it cannot use; the
loader turns that into a `DataError` naming the file (or hub split), the row number and the field.
"""

from loraocean.tasks.converters.base import (  # the converters' shared API
    CONVERTERS, Converter, RowError, choice_example, converter, get, key_index, label_index, question,
    text_list, with_options,
)
from loraocean.tasks.converters import (  # noqa: E402,F401  (registers the converters)
    classification, code, commonsense, knowledge, math, nlu, reading,
)

__all__ = ["CONVERTERS", "Converter", "RowError", "choice_example", "converter", "get", "key_index",
           "label_index", "question", "text_list", "with_options"]
