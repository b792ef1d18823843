"""The folder an engine run keeps its records in (a study's run folder, a library's `_build/`):

    <folder>/failed/<name>.json   the error of an item that failed (removed when it later succeeds)
    <folder>/progress.txt         done / running / failed / queued by kind and the ETA (tail it)
    <folder>/.lock                held by the one process that runs jobs for this folder
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from loraocean.artifacts import write_json_atomic, write_text_atomic
from loraocean.errors import LoraOceanError


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()  # absolute: workers may start elsewhere

    @property
    def failed(self) -> Path:
        return self.path / "failed"

    @property
    def progress(self) -> Path:
        return self.path / "progress.txt"

    def failure(self, name: str) -> Path:
        return self.failed / f"{name}.json"

    def record_failure(self, name: str, label: str, error: str, traceback: str = "",
                       **details) -> None:
        write_json_atomic(self.failure(name), {"job": label, "error": error, "traceback": traceback,
                                               **details})

    def clear_failure(self, name: str) -> None:
        self.failure(name).unlink(missing_ok=True)

    def write_progress(self, text: str) -> None:
        write_text_atomic(self.progress, text)

    @contextlib.contextmanager
    def lock(self, what: str, wait: bool = False):
        """Hold the folder's lock (the OS drops it when the process dies). Without `wait`, a
        folder in use is an error naming `what` uses it."""
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise LoraOceanError(f"another {what} is using {self.path}; wait for it to finish "
                                     "or choose another folder") from None
            yield


def read_json(path: Path) -> dict | None:
    """A JSON object from `path`, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None
