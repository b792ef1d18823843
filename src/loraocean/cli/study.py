"""`loraocean run | results | report`: run a study, query its results table, write its report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

DEFAULT_RUNS = Path("runs")


def default_run_dir(name: str, quick: bool) -> Path:
    return DEFAULT_RUNS / (f"{name}-quick" if quick else name)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def run(
    config: Optional[str] = typer.Argument(None, help="Study YAML file or shipped study name "
                                           "(lite, loralib, ci). Default: lite."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the jobs, what is cached and the "
                                 "estimated cost; run nothing."),
    quick: bool = typer.Option(False, "--quick", help="Apply the study's quick: section (a smaller "
                               "grid and caps; lite --quick takes a few minutes on 2 cores)."),
    executor: Optional[str] = typer.Option(None, help="local (this process, or --workers "
                                           "processes) or ray; default: the study's executor.kind."),
    workers: int = typer.Option(1, "--workers", help="Local worker processes (one per GPU when there "
                                "are GPUs), or the CPUs of a private local Ray."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (with "
                                          "--executor ray), e.g. 10.0.0.1:6379; default: the study's "
                                          "executor.address, else a private local Ray."),
    num_gpus: Optional[float] = typer.Option(None, "--num-gpus", help="GPUs per training job "
                                             "(scoring jobs take half); default: the study's "
                                             "executor.num_gpus, or 1 when that is 0 and GPUs are seen."),
    num_cpus: Optional[float] = typer.Option(None, "--num-cpus", help="CPUs per job on Ray; default: "
                                             "the study's executor.num_cpus."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run folder (cache, results, "
                                           "report). Default: runs/<study name>[-quick]."),
    model: Optional[str] = typer.Option(None, "--model", help="Replace the study's models with this "
                                        "one (e.g. tiny-llama for a smoke run)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.md and report.html "
                                "when the run ends."),
) -> None:
    """Run a study: build LoRAs, select experts, fit MoE methods, evaluate; resumable."""
    from loraocean.cli.console import make_console
    from rich.table import Table

    from loraocean.artifacts import check_writable
    from loraocean.study import find_study, load_config, plan, run_study

    console = make_console()
    path = find_study(config)
    cfg = load_config(path, quick=quick, overrides={"models": [model]} if model else None)
    if executor is not None:
        from loraocean.study.config import EXECUTORS
        from loraocean.errors import UnknownNameError

        if executor not in EXECUTORS:
            raise UnknownNameError("executor", executor, EXECUTORS)
    if workers < 1:
        from loraocean.errors import ConfigError

        raise ConfigError(f"--workers must be at least 1 (got {workers})")
    run_dir = run_dir or default_run_dir(cfg.name, quick)
    check_writable(run_dir, "--run-dir")
    jobs = plan(cfg, run_dir)
    todo = [(j, s) for j, cached, s in jobs if not cached]
    console.print(f"study [bold]{cfg.name}[/bold] ({path}{', quick' if quick else ''}): {len(jobs)} jobs, "
                  f"{len(jobs) - len(todo)} cached, {len(todo)} to run, estimated "
                  f"{_minutes(sum(s for _, s in todo))} on 2 CPU cores; run folder {run_dir}")
    if dry_run:
        table = Table("kind", "job", "key", "cached", "est.")
        for job, cached, secs in jobs:
            table.add_row(job.kind, job.label, job.key, "yes" if cached else "no", _minutes(secs))
        console.print(table)
        by_kind = {}
        for job, cached, secs in jobs:
            n, c, s = by_kind.get(job.kind, (0, 0, 0.0))
            by_kind[job.kind] = (n + 1, c + cached, s + (0 if cached else secs))
        console.print("; ".join(f"{k}: {n} jobs, {c} cached, ~{_minutes(s)}" for k, (n, c, s) in by_kind.items()))
        return
    summary = run_study(cfg, run_dir, executor=executor, workers=workers, address=address,
                        num_gpus=num_gpus, num_cpus=num_cpus, console=console)
    console.print(f"done in {_minutes(summary.seconds)}: {summary.ran} ran, {summary.cached} cached, "
                  f"{len(summary.failed)} failed, {len(summary.skipped)} skipped (a dependency failed); "
                  f"{summary.loads} base model loads")
    for label, error in summary.failed.items():
        console.print(f"  [red]failed[/red] {label}: {error}")
    if report:
        from loraocean.report import write_report

        md, page = write_report(run_dir)
        console.print(f"report: {md} and {page}")
        shows = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))["can_show"]
        if shows:
            console.print(shows)
    console.print(f"results: loraocean results {run_dir}")
    if summary.failed:
        raise typer.Exit(1)


def results(
    run_dir: Path = typer.Argument(default_run_dir("lite", False), help="Run folder of a study."),
    where: list[str] = typer.Option([], "--where", help="Filter COLUMN=VALUE (or !=, >=, <=, >, <); "
                                    "repeat to combine, e.g. --where target=gsm8k --where seed=0."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Also write the full rows to this CSV file."),
) -> None:
    """Print a study's results table (one row per model, target, method, selection, seed, convention)."""
    from loraocean.cli.console import make_console
    from rich.table import Table

    from loraocean.artifacts import check_writable
    from loraocean.study import query

    if csv is not None:
        check_writable(csv, "--csv", file=True)
    df = query(run_dir, where)
    if csv is not None:
        df.to_csv(csv, index=False)
    table = Table("model", "target", "method", "selection", "seed", "convention", "metric", "value",
                  "95% CI", "n", "majority", "experts", title=f"{len(df)} results in {run_dir}")
    for _, r in df.iterrows():
        ci = "" if r["ci_low"] is None or r["ci_low"] != r["ci_low"] else f"{r['ci_low']:.3f}-{r['ci_high']:.3f}"
        maj = "" if r["majority_rate"] is None or r["majority_rate"] != r["majority_rate"] else f"{r['majority_rate']:.3f}"
        table.add_row(r["model"], r["target"], r["method"], r["selection"], str(r["seed"]), r["convention"],
                      r["metric"], f"{r['value']:.3f}", ci, str(r["n"]), maj,
                      ", ".join(__import__("json").loads(r["experts"] or "[]")))
    make_console().print(table)


def report(
    run_dir: Path = typer.Argument(default_run_dir("lite", False), help="Run folder of a study."),
) -> None:
    """Write report.md and report.html (tables, plots, routing heatmaps, findings) into the run folder."""
    from loraocean.report import write_report

    md, page = write_report(run_dir)
    typer.echo(f"wrote {md} and {page}")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("results")(results)
    app.command("report")(report)
