"""`loraocean tasks`: the task catalog (list, show, prepare, validate, export)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="The task catalog: list, show, prepare, validate and export tasks.", no_args_is_help=True)


@app.command("list")
def list_tasks(
    source: Optional[str] = typer.Option(None, "--source",
                                         help="List the tasks a source holds instead of the "
                                              "catalog, e.g. bigbench:DIR (a folder of task.json)."),
) -> None:
    """Every catalog task: name, category, mode, metric, source, and whether its data is
    available offline now."""
    from loraocean.cli.console import make_console
    from rich.table import Table

    from loraocean.tasks import CATALOG
    from loraocean.tasks.load import availability

    if source is not None:
        table = Table("task", "mode", "examples", "file")
        for name, path, mode, count in _source_tasks(source):
            table.add_row(name, mode, str(count), str(path))
        make_console().print(table)
        return
    table = Table("name", "category", "mode", "metric", "source", "offline now")
    for spec in CATALOG.values():
        table.add_row(spec.name, spec.category, spec.mode, spec.metric, spec.source,
                      availability(spec))
    make_console().print(table)


def _source_tasks(source: str):
    from loraocean.errors import ConfigError
    from loraocean.tasks.sources import bigbench

    kind, _, ref = source.partition(":")
    if kind != "bigbench" or not ref:
        raise ConfigError(f"--source {source!r}: use bigbench:DIR (a folder of BIG-bench task.json)")
    root = Path(ref).expanduser()
    if not root.is_dir():
        raise ConfigError(f"--source {source!r}: {root} is not a folder")
    for name, path in bigbench.list_tasks(root):
        count, mode = bigbench.describe(path)
        yield name, path, mode, count


@app.command("show")
def show(
    task: str = typer.Argument(..., help="Task name or source reference (bigbench:PATH)."),
    n: int = typer.Option(3, "-n", "--n", help="Rendered examples to print."),
    from_path: Optional[Path] = typer.Option(None, "--from",
                                             help="Read local files in the hub layout instead of "
                                                  "the hub (hf: tasks)."),
) -> None:
    """Counts per split and a few rendered examples (plain template)."""
    from loraocean.tasks import SPLITS, get_task, render
    from loraocean.tasks.load import _all_splits
    from loraocean.tasks.store import source_splits

    spec = get_task(task)
    splits = source_splits(spec, from_path) if from_path else _all_splits(spec)
    typer.echo(f"{spec.name}: {spec.category}, {spec.mode}, metric {spec.metric}, "
               f"source {spec.source}, license {spec.license or '?'}")
    typer.echo("  " + ", ".join(f"{s} {len(splits[s])}" for s in SPLITS))
    for ex in list(splits["train"])[:n]:
        shown = render(ex, None, template="plain")
        typer.echo(f"--- {ex.id}\n{shown.prompt}{shown.target}")
        if ex.choices is not None:
            typer.echo(f"    choices: {ex.choices}  label: {ex.label}")


@app.command("prepare")
def prepare(
    task: str = typer.Argument(..., help="Task name, or bigbench:PATH (a task.json, its folder, "
                                         "or a folder of tasks: each is prepared)."),
    from_path: Optional[Path] = typer.Option(None, "--from",
                                             help="Local files instead of the source: in the data "
                                                  "set's hub layout (Parquet / JSON / JSONL), or in "
                                                  "the alpaca layout (instruction, input, output)."),
    out: Optional[Path] = typer.Option(None, "--out",
                                       help="Output folder (default $LORAOCEAN_HOME/tasks/TASK; "
                                            "for a folder of BIG-bench tasks, one sub-folder each)."),
    max_train: Optional[int] = typer.Option(None, "--max-train",
                                            help="Keep at most N train examples (seeded, stable)."),
    max_eval: Optional[int] = typer.Option(None, "--max-eval",
                                           help="Keep at most N dev and N test examples."),
    seed: int = typer.Option(0, help="Seed of the sub-sampling under the caps."),
) -> None:
    """Convert a task's source into the unified store: train/dev/test JSONL + metadata.json."""
    from loraocean.artifacts import check_writable
    from loraocean.tasks import get_task
    from loraocean.tasks.store import prepare as prepare_task
    from loraocean.tasks.store import store_dir

    if out is not None:
        check_writable(out, "--out")
    specs = _bigbench_folder(task)
    if specs:
        root = out
        for spec in specs:
            where = prepare_task(spec, out=(root / spec.name) if root else store_dir(spec.name),
                                 max_train=max_train, max_eval=max_eval, seed=seed)
            _report_prepared(where)
        return
    where = prepare_task(get_task(task), out=out, from_path=from_path, max_train=max_train,
                         max_eval=max_eval, seed=seed)
    _report_prepared(where)


def _bigbench_folder(task: str):
    """TaskSpecs of every task file with examples under a bigbench:DIR folder of tasks."""
    from loraocean.tasks import get_task
    from loraocean.tasks.sources import bigbench

    if not task.startswith("bigbench:"):
        return []
    root = Path(task.partition(":")[2]).expanduser()
    if not root.is_dir() or (root / "task.json").is_file() and bigbench.describe(root / "task.json")[0]:
        return []
    return [get_task(f"bigbench:{path}") for _, path in bigbench.list_tasks(root)
            if bigbench.describe(path)[0]]


def _report_prepared(where: Path) -> None:
    import json

    meta = json.loads((where / "metadata.json").read_text())
    counts = ", ".join(f"{s} {meta['counts'][s]}/{meta['source_counts'][s]}"
                       for s in ("train", "dev", "test"))
    typer.echo(f"{meta['task']}: {counts} -> {where}")


@app.command("validate")
def validate(
    path: Path = typer.Argument(..., help="A prepared store folder, a unified JSONL file, a "
                                          "BIG-bench task.json, or source files (with --task)."),
    task: Optional[str] = typer.Option(None, "--task",
                                       help="The task whose converter reads a source file or a "
                                            "folder in the hub layout."),
) -> None:
    """Check data: JSON, fields and types, labels, choices, ids, empty splits (an error naming
    file, line and field; exit 2), then report exact-duplicate inputs across splits."""
    from loraocean.tasks.store import validate_path
    from loraocean.tasks.validate import leakage

    splits = validate_path(path, task)
    typer.echo(f"ok: {path}: " + ", ".join(f"{s} {len(v)}" for s, v in splits.items()))
    leaks = leakage(splits)
    if not leaks:
        typer.echo("leakage: no input appears in two splits")
    for leak in leaks:
        sample = ", ".join(f"{a}={b}" for a, b in leak.ids[:5])
        typer.echo(f"leakage: {len(leak.ids)} inputs in both {leak.splits[0]} and "
                   f"{leak.splits[1]} (e.g. {sample})")


EXPORT_FORMATS = ("lm-eval", "opencompass", "alpaca")


@app.command("export")
def export(
    task: str = typer.Argument(..., help="Task name or bigbench:PATH."),
    out: Path = typer.Argument(..., help="Folder to write into."),
    to: str = typer.Option(..., "--to", help="lm-eval (task YAML + JSONL), opencompass (config + "
                                             "JSONL) or alpaca (train/dev/test.json)."),
    model: str = typer.Option("smollm2-135m", help="Model whose prompt template (chat or plain) the "
                                                   "prompts are rendered with (lm-eval, opencompass)."),
    split: str = typer.Option("test", help="Split to export (lm-eval, opencompass; alpaca writes all three)."),
    limit: Optional[int] = typer.Option(None, help="A seeded subset of at most this many examples (per split)."),
    seed: int = typer.Option(0, help="Seed of the --limit subset."),
    adapter: Optional[str] = typer.Option(None, help="opencompass: a LoRA folder or MoE checkpoint "
                                                     "the config puts on the model."),
) -> None:
    """Write a task for another harness: the same examples and prompts as `loraocean eval`."""
    from loraocean.errors import ConfigError
    from loraocean.tasks import SPLITS, get_task, load_split

    if to not in EXPORT_FORMATS:
        raise ConfigError(f"--to {to!r}: use one of {', '.join(EXPORT_FORMATS)}")
    spec = get_task(task)
    if to == "alpaca":
        from loraocean.tasks import alpaca

        paths = alpaca.write({s: load_split(spec, s, limit=limit, seed=seed) for s in SPLITS}, out)
        typer.echo(f"wrote {', '.join(str(p) for p in paths)}")
        return
    from loraocean import models

    examples = load_split(spec, split, limit=limit, seed=seed)
    tokenizer = models.load(model)[1]
    if to == "lm-eval":
        from loraocean.bridges.lm_eval_bridge import write_lm_eval_task

        path = write_lm_eval_task(spec, examples, tokenizer, out)
        typer.echo(f"wrote {path} ({len(examples)} examples); run it with "
                   f"`loraocean lm-eval --model loraocean --model_args model={model} "
                   f"--tasks {spec.name} --include_path {out}`")
    else:
        from loraocean.bridges.opencompass_bridge import write_opencompass_task

        _, config = write_opencompass_task(spec, examples, tokenizer, out, model_name=model,
                                           adapter=adapter)
        typer.echo(f"wrote {config} ({len(examples)} examples); run it with `opencompass {config}` "
                   "in OpenCompass's environment (see integrations/opencompass/README.md)")
