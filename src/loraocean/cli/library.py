"""`loraocean library`: list, show, verify, import, export, pull, push and build a LoRA library."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from loraocean.cli import memory

app = typer.Typer(help="The LoRA library: one PEFT adapter per (model, task) under a root folder.",
                  no_args_is_help=True)

ROOT_HELP = "Library root folder."


def _table(*names: str, title: str | None = None):
    """A rich table whose cells wrap instead of being cut (names must stay readable and greppable)."""
    from rich.table import Column, Table

    return Table(*(Column(n, overflow="fold") for n in names), title=title)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command("ls")
def ls(root: Path = typer.Option(..., help=ROOT_HELP),
       as_json: bool = typer.Option(False, "--json", help="Print the manifest rows as JSON instead of a table.")) -> None:
    """One row per adapter: model, task, preset, final loss, metrics, created."""
    from loraocean.cli.console import make_console

    from loraocean.library import Library

    Library(root).require()
    if as_json:
        lib = Library(root)
        typer.echo(json.dumps([e.row(lib.root) for e in lib.list()], indent=2))
        return
    table = _table("model", "task", "preset", "loss", "metrics", "created")
    for e in Library(root).list():
        c = e.card
        table.add_row(e.model, e.task, str(c.get("preset", {}).get("name")),
                      str(c.get("train", {}).get("loss_last", "")),
                      _metric_text(c.get("metrics", {})), str(c.get("created")))
    make_console().print(table)


def _metric_text(metrics: dict) -> str:
    test = metrics.get("test")
    if isinstance(test, dict) and "value" in test:
        return f"{test['metric']} {test['value']:.3f} (n {test['n']})"
    return ", ".join(f"{k} {v}" for k, v in metrics.items())


@app.command("show")
def show(model: str = typer.Argument(..., help="Base model name."),
         task: str = typer.Argument(..., help="Task name."),
         root: Path = typer.Option(..., help=ROOT_HELP)) -> None:
    """Print an adapter's card (after checking its weights)."""
    from loraocean.library import Library

    entry = Library(root).require().get(model, task)
    typer.echo(f"# {entry.path}")
    typer.echo(json.dumps(entry.card, indent=2, sort_keys=True))


@app.command("verify")
def verify(root: Path = typer.Option(..., help=ROOT_HELP),
           fix_manifest: bool = typer.Option(False, "--fix-manifest", help="Rebuild the manifest from the cards first.")) -> None:
    """Re-hash every weight file; report missing, corrupt, misplaced (in another entry's folder),
    orphaned, stale and leftover entries.
    Exits 1 when the library is not clean."""
    from loraocean.library import Library

    lib = Library(root).require()
    if fix_manifest:
        lib.rebuild_manifest()
    rep = lib.verify()
    typer.echo(f"{root}: {len(rep.ok)} ok")
    for kind in ("missing", "corrupt", "misplaced", "orphaned", "stale", "leftovers"):
        for item in getattr(rep, kind):
            typer.echo(f"  {kind}: {item}")
    if not rep.clean:
        raise typer.Exit(1)
    typer.echo("clean")


@app.command("import")
def import_(folder: Path = typer.Argument(..., help="A PEFT adapter folder (adapter_config.json + adapter_model.safetensors)."),
            model: str = typer.Option(..., help="The base model it was trained for."),
            task: str = typer.Option(..., help="The task it is for (library folder name)."),
            root: Path = typer.Option(..., help=ROOT_HELP),
            overwrite: bool = typer.Option(False, help="Replace an existing entry.")) -> None:
    """Add an existing PEFT adapter after checking that it fits the base model."""
    from loraocean.artifacts import check_writable
    from loraocean.library import Library, import_adapter

    check_writable(root, "--root")
    entry = import_adapter(Library(root), folder, model, task, overwrite=overwrite)
    typer.echo(f"imported {folder} as {entry.path}")


@app.command("export")
def export(model: str = typer.Argument(..., help="Base model name."),
           task: str = typer.Argument(..., help="Task name."),
           out: Path = typer.Option(..., help="Folder to write (hub-ready: PEFT files + README.md)."),
           root: Path = typer.Option(..., help=ROOT_HELP),
           overwrite: bool = typer.Option(False, help="Replace an existing folder.")) -> None:
    """Write a hub-ready copy of an adapter with a model card README.md."""
    from loraocean.artifacts import check_writable
    from loraocean.library import Library, export_adapter

    check_writable(out, "--out")
    export_adapter(Library(root), model, task, out, overwrite=overwrite)
    typer.echo(f"exported to {out}")


@app.command("pull")
def pull(repo_id: str = typer.Argument(..., help="Hub repo holding PEFT adapter folders, e.g. org/loras."),
         root: Path = typer.Option(..., help=ROOT_HELP),
         revision: str = typer.Option(None, help="Branch, tag or commit (default: main); the commit got is recorded in each card."),
         map_: Path = typer.Option(None, "--map", help="YAML file: folder in the repo -> task name (or {task, model}); only mapped folders are pulled."),
         model: str = typer.Option(None, help="Base model of the adapters (default: the map's or their card.json's)."),
         overwrite: bool = typer.Option(False, help="Replace existing entries.")) -> None:
    """Download a hub collection of PEFT adapters and import each one, checked against the base model."""
    from loraocean.library.hub import pull as run_pull

    pulled = run_pull(repo_id, root, revision=revision, mapping=map_, model=model, overwrite=overwrite)
    commit = pulled[0].entry.card["imported_from"]["revision"]
    for p in pulled:
        typer.echo(f"  {p.path_in_repo} -> {p.model} / {p.task}")
    typer.echo(f"pulled {len(pulled)} adapters from {repo_id}@{commit[:12]} into {root}")


@app.command("push")
def push(root: Path = typer.Argument(..., help=ROOT_HELP),
         repo_id: str = typer.Argument(..., help="Hub repo to upload to (created if missing), e.g. me/my-loras."),
         tasks: str = typer.Option(None, help="Comma-separated tasks to push (default: all)."),
         model: str = typer.Option(None, help="Only this base model's adapters."),
         private: bool = typer.Option(False, help="Create the repo private."),
         revision: str = typer.Option(None, help="Branch to commit to (default: main).")) -> None:
    """Upload library adapters with model cards (hub base model, task, data, hyperparameters, metrics)."""
    from loraocean.library import Library
    from loraocean.library.hub import push as run_push

    lib = Library(root)
    wanted = set(_split(tasks)) if tasks else None
    entries = [e for e in lib.list() if (wanted is None or e.task in wanted) and model in (None, e.model)]
    oid = run_push(lib, repo_id, entries, private=private, revision=revision)
    typer.echo(f"pushed {len(entries)} adapters to https://huggingface.co/{repo_id} (commit {oid[:12]})")


@app.command("build")
def build(models: str = typer.Option(..., help="Comma-separated base models."),
          tasks: str = typer.Option(..., help="Comma-separated task names."),
          root: Path = typer.Option(..., help=ROOT_HELP),
          preset: str = typer.Option("lite", help="Preset: lite, loralib or smoke."),
          seed: int = typer.Option(0, help="Seed of every pair."),
          limit: int = typer.Option(None, help="At most this many training examples per task."),
          executor: str = typer.Option("local", help="local (process pool; 1 worker: in-process) or ray."),
          workers: int = typer.Option(1, help="Parallel pairs: local worker processes (one per GPU when "
                                      "there are GPUs), or the CPUs of a private local Ray."),
          address: str = typer.Option(None, help="Ray cluster address, e.g. 10.0.0.1:6379 (default: start "
                                      "a private local Ray)."),
          num_gpus: float = typer.Option(None, "--num-gpus", help="GPUs per pair (a fraction shares a "
                                         "GPU); default 1 when the executor sees GPUs, else 0."),
          retrain_stale: bool = typer.Option(False, help="Retrain pairs whose preset or data changed."),
          eval_: bool = typer.Option(False, "--eval", help="Evaluate each adapter on its task's test split."),
          eval_limit: int = typer.Option(200, help="Test examples per pair with --eval."),
          gradient_checkpointing: bool = memory.CHECKPOINTING,
          micro_batch: int = memory.MICRO_BATCH,
          max_memory: float = memory.MAX_MEMORY,
          ) -> None:
    """Train every missing (model, task) pair, skip finished ones; summary table at the end.
    Exits 1 when a pair failed."""
    from loraocean.cli.console import make_console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from loraocean.artifacts import check_writable
    from loraocean.library import Library, get_preset
    from loraocean.library.build import build as run_build

    check_writable(root, "--root")
    chosen = get_preset(preset).with_train(**memory.overrides(gradient_checkpointing, micro_batch, max_memory))
    console = make_console()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("pairs", total=None, info="")

        def on_plan(pairs):
            progress.update(bar, total=len(pairs))

        def on_result(r):
            progress.advance(bar)
            if r.status == "trained":
                progress.console.print(f"{r.model} / {r.task}: trained, loss {r.loss_first} -> "
                                       f"{r.loss_last}, {r.seconds:.1f} s")
            elif r.status == "failed":
                progress.console.print(f"[red]{r.model} / {r.task}: FAILED: {r.error}")

        def on_step(pair, step, total, loss):
            progress.update(bar, info=f"{pair.model}/{pair.task} step {step}/{total} loss {loss:.4f}")

        results = run_build(root, _split(models), _split(tasks), chosen, seed=seed, limit=limit,
                            executor=executor, workers=workers, address=address,
                            num_gpus=num_gpus, retrain_stale=retrain_stale, on_plan=on_plan, on_result=on_result,
                            on_step=on_step)
    if eval_:
        _evaluate(Library(root), results, eval_limit, console)
    table = _table("model", "task", "status", "seconds", "loss", "metrics", title="library build")
    for r in results:
        table.add_row(r.model, r.task, r.status, f"{r.seconds:.1f}",
                      f"{r.loss_first} -> {r.loss_last}" if r.loss_last is not None else "",
                      ", ".join(f"{k} {v}" for k, v in r.metrics.items()) or r.error[:80])
    console.print(table)
    counts = {s: sum(r.status == s for r in results) for s in ("trained", "skipped", "stale", "failed")}
    console.print(", ".join(f"{n} {s}" for s, n in counts.items()) +
                  f"; {sum(r.seconds for r in results):.1f} s of training")
    if counts["failed"]:
        raise typer.Exit(1)


def _evaluate(lib, results, limit, console) -> None:
    """Score each finished adapter on its task's test split (lm-eval convention for choice tasks)
    and record the metric in its card and the manifest."""
    from loraocean import models
    from loraocean.checkpoints import attach
    from loraocean.evaluation import evaluate
    from loraocean.tasks import CATALOG, get_task, load_split

    bases = {}
    for r in results:
        if r.status == "failed":
            continue
        entry = lib.get(r.model, r.task)
        if r.status == "skipped" and "test" in entry.card.get("metrics", {}):
            r.metrics = {entry.card["metrics"]["test"]["metric"]: round(entry.card["metrics"]["test"]["value"], 4)}
            continue  # evaluated when it was built
        if r.model not in bases:
            bases.clear()
            bases[r.model] = models.load(r.model)
        base, tokenizer = bases[r.model]
        spec = get_task(r.task) if r.task in CATALOG else get_task(entry.card["task_source"])
        model = attach(base, entry.path)
        try:
            res = evaluate(model, tokenizer, spec, load_split(spec, "test", limit=limit))
        finally:
            model.unload()
        r.metrics = {res.metric: round(res.value, 4), "n": res.n}
        lib.set_metrics(r.model, r.task, {"test": {"metric": res.metric, "value": res.value,
                                                   "ci_low": res.ci_low, "ci_high": res.ci_high,
                                                   "n": res.n, "majority_rate": res.majority_rate}})
        console.print(res.line())


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="library")
