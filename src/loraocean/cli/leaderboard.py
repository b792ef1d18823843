"""`loraocean leaderboard RUN... [--out DIR]`: one page and one CSV comparing finished study runs."""

from __future__ import annotations

from pathlib import Path

import typer


def leaderboard(
    runs: list[Path] = typer.Argument(..., help="Run folders of studies (each holds study.json)."),
    out: Path = typer.Option(Path("leaderboard"), "--out", help="Folder for leaderboard.html and "
                             "leaderboard.csv (created when missing)."),
) -> None:
    """Compare runs: methods x targets with CIs and flags beside their cost, sortable and filterable
    (one self-contained HTML page), and the same cells as CSV (raw fractions in [0, 1])."""
    from loraocean.artifacts import check_writable
    from loraocean.report.leaderboard import write_leaderboard

    check_writable(out, "--out")
    page, table = write_leaderboard(runs, out)
    typer.echo(f"wrote {page} and {table}")


def register(app: typer.Typer) -> None:
    app.command("leaderboard")(leaderboard)
