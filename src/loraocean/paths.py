"""Where LoRAOcean keeps its cache: `$LORAOCEAN_HOME`, default `~/.cache/loraocean`."""

from __future__ import annotations

import os
from pathlib import Path

from loraocean.errors import ConfigError


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
