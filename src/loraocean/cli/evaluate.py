"""`loraocean eval`: score a base model, a LoRA or an MoE checkpoint on one task split."""

from __future__ import annotations

import time
from pathlib import Path

import typer


def eval_command(
    model: str = typer.Option("smollm2-135m", help="Base model: smollm2-135m, tiny-<family>, a local folder or a hub id."),
    task: str = typer.Option(..., help="Task name (see `loraocean tasks list`) or bigbench:PATH."),
    adapter: Path = typer.Option(None, help="A LoRA folder (adapter_config.json) or an MoE checkpoint (moe_config.json) to put on the model."),
    split: str = typer.Option("test", help="Split to score: train, dev or test."),
    limit: int = typer.Option(None, help="Score a seeded subset of at most this many examples."),
    convention: str = typer.Option("lm-eval", help="Choice scoring rules: lm-eval (continuation log-likelihood), opencompass (whole-prompt PPL) or both."),
    metric: str = typer.Option(None, help="Headline metric: acc, acc_norm, ppl, ppl_masked (choice) or exact_match, f1 (generate). Default: the convention's acc."),
    json_path: Path = typer.Option(None, "--json", help="Write the summary and per-example predictions to this JSON file."),
    batch_size: int = typer.Option(16, help="Questions per forward pass."),
    seed: int = typer.Option(0, help="Seed of the --limit subset and of the bootstrap CI."),
) -> None:
    """Score a model on a task: the metric with its 95% bootstrap CI and n, and the majority-label rate."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from loraocean import models
    from loraocean.artifacts import check_writable, package_versions, write_json_atomic
    from loraocean.errors import ConfigError
    from loraocean.checkpoints import attach, check as check_adapter
    from loraocean.evaluation import CONVENTIONS, evaluate
    from loraocean.tasks import data_hash, get_task, load_split

    # Every check a user can fail comes before the slow parts, and nothing is written until the end.
    if convention not in CONVENTIONS:
        raise ConfigError(f"--convention {convention!r} is unknown; use one of {', '.join(CONVENTIONS)}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1 (got {batch_size})")
    if json_path is not None:
        check_writable(json_path, "--json", file=True)
    spec = get_task(task)
    models.resolve(model)
    examples = load_split(spec, split, limit=limit, seed=seed)
    if adapter is not None:
        check_adapter(adapter)

    start = time.perf_counter()
    base, tokenizer = models.load(model)
    scored = attach(base, adapter) if adapter is not None else base
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        bar = progress.add_task(f"{spec.name} {split}", total=len(examples))
        result = evaluate(scored, tokenizer, spec, examples, convention=convention, batch_size=batch_size,
                          metric=metric, seed=seed, progress=lambda k: progress.advance(bar, k))
    seconds = time.perf_counter() - start

    typer.echo(result.line())
    if spec.mode == "choice" and len(result.metrics) > 1:
        for name, m in result.metrics.items():
            typer.echo(f"  {name:<24} {m['value']:.4f} (95% CI {m['ci_low']:.4f}-{m['ci_high']:.4f})")
        typer.echo(f"  most frequent prediction: {result.top_prediction_rate:.4f} of examples")
    if json_path is not None:
        summary = result.summary() | {
            "model": model, "adapter": str(adapter) if adapter else None, "split": split,
            "limit": limit, "seed": seed, "data_hash": data_hash(examples),
            "seconds": round(seconds, 2), "versions": package_versions()}
        write_json_atomic(json_path, {"summary": summary, "predictions": result.predictions})
        typer.echo(f"wrote {json_path}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
