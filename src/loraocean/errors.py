"""Errors a user can cause. Each message says what was wrong, where, and what to do.

The CLI prints these without a traceback and exits with code 2.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class LoraOceanError(Exception):
    """Base class of every error caused by user input (files, names, options)."""


class UnknownNameError(LoraOceanError):
    """A model, task, method or strategy name that is not known."""

    def __init__(self, kind: str, name: str, known: Iterable[str], hint: str = ""):
        known = sorted(set(known))
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        msg = f"unknown {kind} {name!r}"
        if close:
            msg += f"; did you mean {', '.join(repr(c) for c in close)}?"
        elif known and len(known) <= 12:
            msg += f"; known: {', '.join(known)}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)
        self.name = name


class DataError(LoraOceanError):
    """A data file that cannot be read: names the file, the line/example index and the field."""

    def __init__(self, path, problem: str, *, line: int | None = None, field: str | None = None,
                 fix: str = ""):
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field {field!r}"
        msg = f"{where}: {problem}"
        if fix:
            msg += f"; {fix}"
        super().__init__(msg)


class ConfigError(LoraOceanError):
    """A bad option or config value (names the field / YAML path)."""


class MissingPackageError(LoraOceanError):
    """An optional package is needed; the message gives the exact install command."""

    def __init__(self, what: str, command: str):
        super().__init__(f"{what} is not installed; install it with: {command}")


class AdapterMismatchError(LoraOceanError):
    """An adapter trained for another base model."""


class TrainingError(LoraOceanError):
    """Training diverged (NaN/inf loss) or could not start."""


class IntegrityError(LoraOceanError):
    """A stored artifact whose checksum does not match its card."""


class ClusterError(LoraOceanError):
    """A Ray cluster that cannot be reached or used (address, authentication, resources)."""
