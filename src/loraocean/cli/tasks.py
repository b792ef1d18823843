"""`loraocean tasks`: the task catalog."""

from __future__ import annotations

import typer

app = typer.Typer(help="The task catalog: list, show, prepare and validate tasks.", no_args_is_help=True)


@app.command("list")
def list_tasks() -> None:
    """Every catalog task with its category, mode, metric and source."""
    from rich.console import Console
    from rich.table import Table

    from loraocean.tasks import CATALOG

    table = Table("name", "category", "mode", "metric", "source")
    for spec in CATALOG.values():
        table.add_row(spec.name, spec.category, spec.mode, spec.metric, spec.source)
    Console().print(table)


@app.command("show")
def show(task: str = typer.Argument(..., help="Task name or source reference (bigbench:PATH)."),
         n: int = typer.Option(3, help="Rendered examples to print.")) -> None:
    """Counts per split and a few examples."""
    from loraocean.tasks import SPLITS, get_task
    from loraocean.tasks.load import _all_splits

    spec = get_task(task)
    splits = _all_splits(spec)
    typer.echo(f"{spec.name}: {spec.category}, {spec.mode}, metric {spec.metric}, source {spec.source}")
    typer.echo("  " + ", ".join(f"{s} {len(splits[s])}" for s in SPLITS))
    for ex in list(splits["train"])[:n]:
        typer.echo(f"--- {ex.id}\n{ex.instruction}\n{ex.input}\n=> {ex.target}")
