"""Where LoRAOcean keeps its cache: `$LORAOCEAN_HOME`, default `~/.cache/loraocean`."""

from __future__ import annotations

import os
from pathlib import Path

from loraocean.errors import ConfigError


def home() -> Path:
    """The cache root. Created on first use."""
    root = Path(os.environ.get("LORAOCEAN_HOME") or Path.home() / ".cache" / "loraocean")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"LORAOCEAN_HOME={root} cannot be used as the cache folder ({err.strerror}); "
                          "set LORAOCEAN_HOME to a writable folder") from None
    return root


def cache_dir(*parts: str) -> Path:
    """A sub-folder of the cache (created)."""
    path = home().joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cache folder {path} cannot be created ({err.strerror}); set LORAOCEAN_HOME "
                          "to a writable folder") from None
    return path
