"""`loraocean data`: fetch offline copies of public data into the cache."""

from __future__ import annotations

import typer

app = typer.Typer(help="Fetch public data into the cache ($LORAOCEAN_HOME).", no_args_is_help=True)


@app.command("fetch")
def fetch(
    name: str = typer.Argument(..., help="What to fetch: bigbench"),
    force: bool = typer.Option(False, help="Fetch again even when already present."),
) -> None:
    """Download a data source once and keep only what LoRAOcean reads."""
    from loraocean.errors import UnknownNameError
    from loraocean.tasks.fetch import FETCHERS

    if name not in FETCHERS:
        raise UnknownNameError("data source", name, FETCHERS)
    where = FETCHERS[name](force=force)
    typer.echo(f"{name}: ready in {where}")
