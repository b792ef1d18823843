"""`loraocean moe`: fit an MoE method over library LoRAs, inspect a checkpoint, export routing, export
a checkpoint as a PEFT folder."""

from __future__ import annotations

from pathlib import Path

import typer

from loraocean.cli import memory

app = typer.Typer(help="LoRA mixture-of-experts methods: fit, show, routing, export, methods.", no_args_is_help=True)


def parse_options(items: list[str] | None, flag: str = "--option", example: str = "top_k=2") -> dict:
    """`key=value` pairs; values are read as YAML scalars/lists (2, 0.1, true, [a, b])."""
    import yaml

    from loraocean import yamlio
    from loraocean.errors import ConfigError

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected key=value, e.g. {flag} {example}")
        try:
            out[key.strip()] = yamlio.load(value)[0]
        except yaml.YAMLError as err:
            raise ConfigError(f"{flag} {item!r}: the value is not a YAML scalar or list "
                              f"({getattr(err, 'problem', err)}), e.g. {flag} {example}") from None
    return out


def parse_train(items: list[str] | None) -> dict:
    """`--train key=value` settings over the preset's (what a study file's `methods: - {name: X,
    train: {...}}` gives), checked by the same rules. `5e-5` is a number here (YAML 1.1 reads a
    float without a dot as a string)."""
    from loraocean.errors import ConfigError
    from loraocean.presets import override_problem

    out = {}
    for key, value in parse_options(items, "--train", "lr=5e-5").items():
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        problem = override_problem(key, value)
        if problem:
            raise ConfigError(f"--train {key}: {problem}")
        out[key] = value
    return out


@app.command("fit")
def fit_command(
    method: str = typer.Option(..., help="Method name (see `loraocean moe methods`)."),
    model: str = typer.Option("smollm2-135m", help="Base model: smollm2-135m, tiny-<family>, a local folder or a hub id."),
    experts: str = typer.Option("", help="Comma-separated expert LoRAs: library task names or adapter folders."),
    task: str = typer.Option(..., help="Target task whose train split the method is fitted on."),
    library: Path = typer.Option(None, help="LoRA library root to look expert task names up in."),
    out: Path = typer.Option(..., help="Checkpoint folder to write (appears only when complete)."),
    preset: str = typer.Option("lite", help="Training preset: smoke, lite or loralib."),
    option: list[str] = typer.Option(None, help="Method option key=value (repeatable), e.g. --option top_k=2."),
    train: list[str] = typer.Option(None, help="Training setting key=value over the preset's (repeatable; "
                                    "lr, epochs, max_steps, batch_size, grad_accum, warmup_ratio, weight_decay, "
                                    "max_grad_norm), e.g. --train lr=5e-5 --train epochs=5; the card records them."),
    seed: int = typer.Option(0, help="Seed for data subsets, initialisation and training."),
    overwrite: bool = typer.Option(False, help="Replace an existing checkpoint at --out."),
    gradient_checkpointing: bool = memory.CHECKPOINTING,
    micro_batch: int = memory.MICRO_BATCH,
    max_memory: float = memory.MAX_MEMORY,
    quantize: str = memory.QUANTIZE,
) -> None:
    """Fit a method for a target task over the given experts and write a checkpoint."""
    from rich.progress import Progress

    from loraocean import models
    from loraocean.errors import ConfigError
    from loraocean.moe import fit, get_method
    from loraocean.moe.presets import get_preset
    from loraocean.tasks import get_task

    from loraocean.artifacts import check_writable
    from loraocean.library import Library
    from loraocean.moe.fit import resolve_experts
    from loraocean.moe.registry import OptionError

    m = get_method(method)
    names = [e.strip() for e in experts.split(",") if e.strip()]
    try:
        cfg = m.make_config(parse_options(option), n_experts=len(names))
    except OptionError as err:
        raise ConfigError(f"--option {err.field}: {err}") from None
    p = get_preset(preset).with_train(**memory.overrides(gradient_checkpointing, micro_batch, max_memory))
    train_overrides = parse_train(train)
    if train_overrides and not m.trains:
        raise ConfigError(f"--train: {method} does not train, so it takes no training settings")
    get_task(task)
    models.resolve(model)
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} already exists; choose another folder or pass --overwrite")
    check_writable(out, "--out")
    if overwrite:
        from loraocean.library.card import check_replaceable

        check_replaceable(out)
    if library is not None:
        Library(library).require()
    resolve_experts(names, model, library)  # every expert checked before the base model loads
    base, tokenizer = models.load(model, quantize=quantize)
    with Progress(transient=True) as progress:
        bar = progress.add_task(f"{method} on {task}", total=None)
        card = fit(method, model, names, task, out, library=library, preset=p,
                   options=cfg, seed=seed, overwrite=overwrite, train=train_overrides or None,
                   model=base, tokenizer=tokenizer,
                   on_step=lambda step, total, loss: progress.update(
                       bar, completed=step, total=total, description=f"{method} loss {loss:.3f}"))
    log = card.get("train_log")
    if log:
        typer.echo(f"trained {log['steps']} steps: loss {log['loss_first']} -> {log['loss_last']} "
                   f"({log['seconds']} s)")
    typer.echo(f"wrote {out}")


@app.command("show")
def show_command(path: Path = typer.Argument(..., help="An MoE checkpoint folder.")) -> None:
    """Print a checkpoint's method, options, experts and training summary."""

    from loraocean.moe.checkpoint import check, read_config

    config = read_config(path)
    card = check(path)
    typer.echo(f"{config['method']} on {config.get('base_model')} for task {card.get('task')}")
    typer.echo("options: " + ", ".join(f"{k}={v}" for k, v in config["config"].items()))
    for e in config["experts"]:
        ranks = sorted(set(e["ranks"].values()))
        typer.echo(f"  expert {e['name']}: {len(e['ranks'])} modules, rank {ranks}, from {e['source']}")
    if card.get("train_log"):
        typer.echo("training: " + ", ".join(f"{k} {v}" for k, v in card["train_log"].items()))
    if card.get("train_overrides"):
        typer.echo("training settings over the preset's: "
                   + ", ".join(f"{k}={v}" for k, v in card["train_overrides"].items()))
    if card.get("notes"):
        typer.echo(f"notes: {card['notes']}")


@app.command("routing")
def routing_command(
    path: Path = typer.Argument(..., help="An MoE checkpoint folder."),
    task: str = typer.Option(..., help="Task whose examples are routed."),
    model: str = typer.Option(None, help="Base model (default: the one the checkpoint was fitted on)."),
    split: str = typer.Option("test", help="Split: train, dev or test."),
    limit: int = typer.Option(100, help="Examples (seeded subset)."),
    out: Path = typer.Option(..., help="Folder for routing.json and routing.csv."),
    batch_size: int = typer.Option(8, help="Examples per forward pass."),
) -> None:
    """Mean gate weight per MoE layer and expert on a split, as JSON and CSV for plots."""
    from loraocean import models
    from loraocean.artifacts import check_writable
    from loraocean.moe import load_checkpoint, routing_stats, write_routing
    from loraocean.moe.checkpoint import read_config
    from loraocean.tasks import load_split

    config = read_config(path)
    examples = load_split(task, split, limit=limit)
    check_writable(out, "--out")
    base, tokenizer = models.load(model or config["base_model"])
    moe = load_checkpoint(path, base)
    stats = routing_stats(moe, tokenizer, examples, batch_size=batch_size)
    json_path, csv_path = write_routing(stats, out)
    typer.echo(f"{len(stats['layers'])} layers x {len(stats['experts'])} experts over {stats['tokens']} tokens; "
               f"wrote {json_path} and {csv_path}")


@app.command("export")
def export_command(
    path: Path = typer.Argument(..., help="An MoE checkpoint folder."),
    to: str = typer.Option("peft", "--to", help="Target format: peft."),
    out: Path = typer.Argument(..., help="Folder to write (appears only when complete)."),
    overwrite: bool = typer.Option(False, help="Replace an existing folder."),
) -> None:
    """Write a checkpoint as the PEFT folder its method exports to (a PEFT LoRA adapter for the
    fixed-gate methods; `loraocean moe methods` marks every method that exports). Other methods:
    see docs/checkpoint-format.md."""
    from loraocean.errors import ConfigError
    from loraocean.moe.export import export_peft

    if to != "peft":
        raise ConfigError(f"--to {to!r}: the only export format is peft")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; choose another folder or pass --overwrite")
    export = export_peft(path, out, overwrite=overwrite)
    typer.echo(f"wrote {out} ({export.what})")


@app.command("methods")
def methods_command() -> None:
    """List the registered methods (ours and those of installed packages): whether each trains,
    what it is, whether it exports to PEFT, and the paper and code it follows."""
    from loraocean.moe import all_methods

    for name, m in sorted(all_methods().items()):
        exports = f" [exports: {m.export.what}]" if m.export is not None else ""
        typer.echo(f"{name:<16} {'trains' if m.trains else 'no training':<12} {m.description}{exports}")
        if m.cite:
            typer.echo(f"{'':<16} {'':<12} reference: {m.cite}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="moe")
