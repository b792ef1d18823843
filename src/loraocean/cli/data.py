"""`loraocean data`: fetch offline copies of public data into the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Fetch public data into the cache ($LORAOCEAN_HOME).", no_args_is_help=True)


@app.command("fetch")
def fetch(
    name: str = typer.Argument(..., help="What to fetch: bigbench"),
    force: bool = typer.Option(False, help="Fetch again even when already present."),
    archive: Optional[Path] = typer.Option(None, "--archive",
                                           help="Use this already-downloaded sdist (.tar.gz) "
                                                "instead of downloading it."),
) -> None:
    """Download a data source once and keep only what LoRAOcean reads."""
    from loraocean.errors import ConfigError, UnknownNameError
    from loraocean.tasks.fetch import FETCHERS

    if name not in FETCHERS:
        raise UnknownNameError("data source", name, FETCHERS)
    if archive is not None and not archive.is_file():
        raise ConfigError(f"--archive {archive}: no such file")
    where = FETCHERS[name](force=force, archive=archive)
    typer.echo(f"{name}: ready in {where}")
