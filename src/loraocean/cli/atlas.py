"""`loraocean atlas`: every library LoRA of a model on every target's dev split (the transfer
matrix), the oracle read off it, and each selection strategy scored against that oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _print(atlas, scored: dict, k: int) -> None:
    from loraocean.cli.console import make_console
    from rich.table import Table

    console = make_console(max(120, 14 * (len(atlas.targets) + 2)))
    matrix = Table("LoRA", *atlas.targets, title=f"transfer atlas of {atlas.model} ({atlas.split} "
                   f"split, {atlas.evaluated} cells evaluated, the rest from the cache)")
    for row in atlas.rows:
        matrix.add_row(row, *(f"{atlas.value[(row, t)]:.3f}" for t in atlas.targets))
    matrix.add_row("n", *(str(atlas.n[t]) for t in atlas.targets))
    console.print(matrix)
    if scored:
        table = Table("target", "strategy", "chosen", "regret (points)", f"precision@{k}", "spearman",
                      "kendall", title="against the atlas oracle (regret: oracle's best-k mean minus "
                                       "the chosen k's mean)")
        for target, rows in scored.items():
            for r in rows:
                table.add_row(target, r["strategy"], ", ".join(r["chosen"]), f"{100 * r['regret']:.1f}",
                              f"{r['precision_at_k']:.2f}", _fmt(r["spearman"]), _fmt(r["kendall"]))
        console.print(table)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def atlas_command(
    library: Path = typer.Option(..., "--library", help="Library root folder."),
    model: str = typer.Option("smollm2-135m", "--model", help="Base model whose LoRAs are evaluated."),
    targets: str = typer.Option(..., "--targets", help="Comma-separated target tasks, e.g. bb_snarks,gsm8k."),
    out: Path = typer.Option(..., "--out", help="Folder for atlas.csv, atlas.png and atlas.json."),
    split: str = typer.Option("dev", "--split", help="Split of each target to evaluate on."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many examples per target."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Cell cache folder (default OUT/cells)."),
    k: int = typer.Option(4, "--k", help="Size of the oracle's top k and of each strategy's choice."),
    strategies: str = typer.Option("all", "--strategies",
                                   help="Strategies to score against the oracle (comma-separated; "
                                        "`all`: every one; `none`: only the matrix)."),
    shots: int = typer.Option(32, "--shots", help="Target train examples the strategies see."),
    seed: int = typer.Option(0, "--seed", help="Seed of the example samples and of random."),
    batch_size: int = typer.Option(8, "--batch-size", help="Examples per forward pass."),
) -> None:
    """Evaluate every library LoRA of MODEL on every target (cached), write the matrix and heatmap,
    and score the selection strategies against the oracle read off it."""
    import numpy as np

    from loraocean.report.plots import atlas_heatmap
    from loraocean.selection import STRATEGIES, ModelRef, every_strategy
    from loraocean.selection.atlas import build, compare, write

    names = [s.strip() for s in targets.split(",") if s.strip()]
    chosen = {"none": []}.get(strategies) if strategies != "all" else every_strategy()
    if chosen is None:
        chosen = [s.strip() for s in strategies.split(",")]
    for name in chosen:
        STRATEGIES.lookup(name)  # an unknown name: one line naming the known ones
    ref = ModelRef(model)
    atlas = build(library, ref, names, cache or out / "cells", split=split, limit=limit, seed=seed,
                  batch_size=batch_size)
    scored = compare(atlas, ref, k, chosen, shots=shots, seed=seed, batch_size=batch_size)
    files = write(atlas, out, k, scored)
    matrix = np.array([[atlas.value[(r, t)] for t in atlas.targets] for r in atlas.rows])
    files["png"] = atlas_heatmap(atlas.rows, atlas.targets, matrix,
                                 f"{atlas.model}: each LoRA alone, {split} split", out / "atlas.png")
    _print(atlas, scored, k)
    typer.echo(f"wrote {', '.join(str(p) for p in files.values())}")


def register(app: typer.Typer) -> None:
    app.command("atlas")(atlas_command)
