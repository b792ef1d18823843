"""Where LoRAOcean keeps its cache: `$LORAOCEAN_HOME`, default `~/.cache/loraocean`."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The cache root. Created on first use."""
    root = Path(os.environ.get("LORAOCEAN_HOME") or Path.home() / ".cache" / "loraocean")
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_dir(*parts: str) -> Path:
    """A sub-folder of the cache (created)."""
    path = home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
