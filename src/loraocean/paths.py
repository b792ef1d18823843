"""Where LoRAOcean keeps its cache (`$LORAOCEAN_HOME`, default `~/.cache/loraocean`), and the one
rule for names that become paths.

A name (a task, a model's folder name, a method, a study, a run folder, a hub repository part) is
one path component of a safe set: ASCII letters, digits, `.`, `_` and `-`, starting with a letter
or digit, at most 100 characters. So it holds no separator, is never `.` or `..`, never hidden,
and holds no control or bidirectional character (U+202E). `check_name` refuses anything else;
`inside` builds a path from names under a root and refuses one that resolves outside it (a link
inside the root pointing elsewhere). References that are read from (a `bigbench:PATH`, a local
model folder) are not names: they never build an output path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from loraocean.errors import ConfigError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_RULE = ("use ASCII letters, digits, '.', '_' and '-' only, starting with a letter or digit, at "
             "most 100 characters (no '/', no '..')")


def check_name(name, what: str) -> str:
    """`name` when it may be one path component (see the module doc), else a ConfigError that
    says which `what` (e.g. "--task", "task in card.json") and the rule."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{what} {name!r} cannot be used as a folder name; {NAME_RULE}")
    return name


def inside(root: str | Path, *names: str, what: str = "name") -> Path:
    """`root/name/...`, each name checked with `check_name`, and the result resolved inside the
    resolved `root` (a link under the root that leads out of it is refused)."""
    root = Path(root)
    for name in names:
        check_name(name, what)
    path = root.joinpath(*names)
    real = os.path.realpath(path)
    base = os.path.realpath(root)
    if os.path.commonpath([real, base]) != base:
        raise ConfigError(f"{path} leads outside {root} (to {real}, through a link); remove the "
                          "link or choose another root")
    return path


def _made(path: Path, problem: str) -> Path:
    """`path`, created; a folder that cannot be is a ConfigError saying `problem` and what to do."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{problem} ({err.strerror}); set LORAOCEAN_HOME to a writable folder") from None
    return path


def home() -> Path:
    """The cache root. Created on first use."""
    root = Path(os.environ.get("LORAOCEAN_HOME") or Path.home() / ".cache" / "loraocean")
    return _made(root, f"LORAOCEAN_HOME={root} cannot be used as the cache folder")


def cache_dir(*parts: str) -> Path:
    """A sub-folder of the cache (created)."""
    path = home().joinpath(*parts)
    return _made(path, f"cache folder {path} cannot be created")
