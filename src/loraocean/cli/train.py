"""`loraocean train`: train one LoRA with a named preset into a PEFT folder + card.json."""

from __future__ import annotations

from pathlib import Path

import typer

from loraocean.cli import memory


def train(
    model: str = typer.Option("smollm2-135m", help="Base model: smollm2-135m, tiny-<family>, a local folder or a hub id."),
    task: str = typer.Option(..., help="Task name (see `loraocean tasks list`) or bigbench:PATH."),
    out: Path = typer.Option(..., help="Adapter folder to write (must not exist unless --overwrite)."),
    preset: str = typer.Option("lite", help="Hyperparameter preset: lite (2-core CPU), loralib (GPU), smoke (tests)."),
    seed: int = typer.Option(0, help="Seed for data subset, LoRA init, dropout and batch order."),
    limit: int = typer.Option(None, help="Use at most this many training examples."),
    overwrite: bool = typer.Option(False, help="Replace an existing adapter folder."),
    gradient_checkpointing: bool = memory.CHECKPOINTING,
    micro_batch: int = memory.MICRO_BATCH,
    max_memory: float = memory.MAX_MEMORY,
    quantize: str = memory.QUANTIZE,
) -> None:
    """Train one LoRA on a task's train split; shows a progress bar with the loss."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from loraocean.artifacts import check_writable
    from loraocean.errors import ConfigError
    from loraocean.library import get_preset, train_lora
    from loraocean.tasks import get_task

    from loraocean.models import load, resolve

    p = get_preset(preset).with_train(**memory.overrides(gradient_checkpointing, micro_batch, max_memory))
    get_task(task)
    resolve(model)
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} already exists; choose another folder or pass --overwrite")
    check_writable(out, "--out")
    if overwrite:
        from loraocean.library.card import check_replaceable

        check_replaceable(out)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1 (got {limit})")
    base, tokenizer = load(model, quantize=quantize)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn())
    with Progress(*columns) as progress:
        bar = progress.add_task(f"{task} ({p.name})", total=None, loss="-")

        def on_step(step: int, total: int, loss: float) -> None:
            progress.update(bar, completed=step, total=total, loss=f"{loss:.4f}")

        card = train_lora(model, task, p, out=out, seed=seed, limit=limit, on_step=on_step,
                          overwrite=overwrite, model=base, tokenizer=tokenizer)
    t = card["train"]
    typer.echo(f"{out}: {t['steps']} steps, loss {t['loss_first']} -> {t['loss_last']}, "
               f"{card['seconds']} s, {card['tokens_per_second']} tokens/s")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
