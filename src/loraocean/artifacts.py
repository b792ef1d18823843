"""Atomic writes and content hashes, shared by every stage.

A finished artifact is a folder or file that appears by `os.replace` of a fully written and fsynced
temporary sibling, so an interrupted write never leaves something that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Files meant to be read by others (a report, its figures, a leaderboard): the atomic writer's
# temporary file is created 0600, which a renamed report would keep.
READABLE = 0o644


def write_bytes_atomic(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    """Write `data` to `path` atomically; `mode` (e.g. READABLE) sets its permissions, else it
    keeps the temporary file's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | Path, text: str, mode: int | None = None) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), mode)


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def write_json_atomic(path: str | Path, obj: Any, mode: int | None = None) -> Path:
    return write_text_atomic(path, to_json(obj), mode)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(dirpath))


@contextlib.contextmanager
def atomic_dir(final: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it is fsynced and renamed to `final`.

    On any exception the temporary folder is removed; after a kill it is left behind under a hidden
    `.tmp-` name, never at `final`. The writer holds an exclusive lock on the temporary folder while
    it writes, so `remove_stale` can tell a dead writer's leftovers from a live writer's work. With
    `overwrite`, an existing `final` is replaced (old copy removed after the new one is in place).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    held = _lock_dir(tmp)
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.exists():
            if not overwrite:
                raise FileExistsError(f"{final} already exists")
            old = final.with_name(f".old-{final.name}-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(held)


def _lock_dir(path: Path) -> int:
    """An open descriptor of `path` holding an exclusive lock (released when the process dies)."""
    import fcntl

    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def remove_stale(paths) -> list[Path]:
    """Remove the temporary folders (of `atomic_dir`, or `.old-` copies) whose writer is dead.

    A folder whose lock another process holds belongs to a live writer and is kept; an `.old-`
    copy is removed only when its owner's pid (in its name) is not a live process on this host.
    """
    import fcntl

    gone = []
    for path in map(Path, paths):
        if path.name.startswith(".old-"):
            pid = path.name.rpartition("-")[2]
            if pid.isdigit() and _alive(int(pid)):
                continue
            shutil.rmtree(path, ignore_errors=True)
            gone.append(path)
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # gone meanwhile (its writer finished)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live writer
        else:
            shutil.rmtree(path, ignore_errors=True)
            gone.append(path)
        finally:
            os.close(fd)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_obj(obj: Any, length: int = 16) -> str:
    """Stable short hash of a JSON-able object (sorted keys), used as cache keys."""
    data = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:length]


def package_versions(names: tuple[str, ...] = ("loraocean", "torch", "transformers", "peft",
                                               "safetensors", "accelerate", "datasets")) -> dict:
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def check_writable(path: str | Path, option: str, *, file: bool = False) -> None:
    """Raise ConfigError unless `path` (a file with `file`, else a folder) can be written by this
    process, so a command fails before its long work, not after. Leaves nothing behind."""
    from loraocean.errors import ConfigError

    path = Path(path)
    if file and path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file path")
    if not file and path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file; give a folder path")
    parent = path if path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: {parent} is a file, not a folder; choose a path under a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=parent)
    except OSError as err:
        raise ConfigError(f"{option} {path}: cannot write in {parent} ({err.strerror}); "
                          "choose a writable location") from None
    os.close(fd)
    os.unlink(probe)


def read_json_object(path: str | Path, fix: str = "", object_pairs_hook=None) -> dict:
    """A JSON file holding an object; unreadable, non-UTF-8, invalid or non-object files raise a
    DataError naming the file (and the line of a syntax error). `object_pairs_hook`: json's."""
    from loraocean.errors import DataError

    try:
        data = json.loads(read_text(path, fix=fix), object_pairs_hook=object_pairs_hook)
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON ({err.msg})", line=err.lineno, fix=fix) from None
    if not isinstance(data, dict):
        raise DataError(path, f"the top level is a JSON {type(data).__name__}, not an object", fix=fix)
    return data


def read_text(path: str | Path, fix: str = "") -> str:
    """A text file's contents; unreadable or non-UTF-8 files raise a DataError naming the file."""
    from loraocean.errors import DataError

    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text ({err.reason} at byte {err.start})",
                        fix=fix or "save the file as UTF-8") from None
    except OSError as err:
        raise DataError(path, f"cannot be read ({err.strerror})", fix=fix) from None
