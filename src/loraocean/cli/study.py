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
    max_jobs: Optional[int] = typer.Option(None, "--max-jobs", help="Refuse a study of more jobs than "
                                           "this (counted before any is built; default 20,000: raise it "
                                           "for a large grid on purpose)."),
    seed_sd: float = typer.Option(3.0, "--seed-sd", help="With --dry-run: the assumed seed-to-seed "
                                  "standard deviation of a method's accuracy, in points."),
    discordance: float = typer.Option(0.20, "--discordance", help="With --dry-run: the assumed share "
                                      "of test examples two runs answer differently."),
) -> None:
    """Run a study: build LoRAs, select experts, fit MoE methods, evaluate; resumable."""
    from loraocean.cli.console import make_console
    from rich.table import Table

    from loraocean.artifacts import check_writable
    from loraocean.study import find_study, load_config, plan, run_study
    from loraocean.study.jobs import MAX_JOBS, check_size

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
    max_jobs = MAX_JOBS if max_jobs is None else max_jobs
    check_size(cfg, max_jobs)  # counted, not built: a huge grid costs one line
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
        power_table(console, cfg, seed_sd / 100, discordance)
        return
    summary = run_study(cfg, run_dir, executor=executor, workers=workers, address=address,
                        num_gpus=num_gpus, num_cpus=num_cpus, console=console, max_jobs=max_jobs)
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


def power_table(console, cfg, seed_sd: float, discordance: float) -> None:
    """Per claim of the paper: what the study can detect and what it needs to see the paper's effect."""
    from dataclasses import replace

    from rich.table import Table

    from loraocean.report.findings import harmonic, plan_claims, target_examples
    from loraocean.report.stats import needed

    counted = target_examples(cfg)
    available = harmonic(n for _, n, _ in counted.values())
    planned = plan_claims(cfg, {t: n for t, (n, _, _) in counted.items()}, seed_sd, discordance)
    family = planned[0].family if planned else 0
    table = Table("claim", "cells (models x targets x levels)", "seeds", "test examples / target",
                  "detects at 80% power", "the paper", "to see the paper's smallest / largest effect",
                  title=f"Power before compute: the paper's claims, one Holm family of {family} tests "
                        f"(the first judged at alpha {0.05 / max(family, 1):.3g})")
    for p in planned:
        factor, a, b = p.question
        d = p.design
        if d is None:
            table.add_row(f"{a} vs {b}", "not measured", "–", "–", "–", "–", "–")
            continue
        mdd = d.mdd(p.level)
        detects = "nothing (one seed)" if d.seeds < 2 else (f"{100 * mdd:.1f} points" if mdd < 1 else "nothing")
        paper, need = "–", "–"
        if p.paper:
            paper = f"{p.paper[0]:.1f}-{p.paper[1]:.1f} points"
            parts = []
            for effect in p.paper:
                n, _ = needed(d, effect / 100, p.level)
                _, s = needed(replace(d, examples=available), effect / 100, p.level, most=available)
                parts.append(f"{effect:.1f}: " + (f"{n:,} examples/target at {d.seeds} seeds" if n and n <= available
                                                   else f"{s} seeds at all {available:,} examples/target" if s
                                                   else "not with these targets (add targets or models)"))
            need = "; ".join(parts)
        table.add_row(f"{a} vs {b}", f"{d.cells} ({len(cfg.models)} x {len(cfg.tasks.targets)} x {len(p.levels)})",
                      str(d.seeds), str(d.examples), detects, paper, need)
    console.print(table)
    assumed = [t for t, (_, _, known) in counted.items() if not known]
    console.print(f"Assumes a seed-to-seed sd of {100 * seed_sd:.1f} points and {100 * discordance:.0f}% of "
                  "test examples answered differently by two runs (--seed-sd, --discordance); example "
                  "counts from the data" + (f", assumed for {', '.join(assumed)} (data not available here)"
                                            if assumed else "") + f" ({available:,} per target in the "
                  "targets' splits, harmonic mean). Levels: the selections both methods are fitted on, or "
                  "the trained methods fitted on both selections; loraocean.report.stats.")


def results(
    run_dir: Path = typer.Argument(default_run_dir("lite", False), help="Run folder of a study."),
    where: list[str] = typer.Option([], "--where", help="Filter COLUMN=VALUE (or !=, >=, <=, >, <); "
                                    "repeat to combine, e.g. --where method=loramoe --where seed=0."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Also write the full rows to this CSV file "
                                       "(raw values: scores as fractions in [0, 1], as results.sqlite "
                                       "holds them)."),
) -> None:
    """Print a study's results table (one row per model, target, method, selection, seed, convention);
    scores in percent with one decimal, as the report prints them."""
    from loraocean.cli.console import make_console
    from rich.table import Table

    from loraocean.artifacts import check_writable
    from loraocean.report.tables import pct
    from loraocean.study import query

    if csv is not None:
        check_writable(csv, "--csv", file=True)
    df = query(run_dir, where)
    if csv is not None:
        df.to_csv(csv, index=False)
    table = Table("model", "target", "method", "selection", "seed", "convention", "metric", "value %",
                  "95% CI %", "n", "majority %", "experts", title=f"{len(df)} results in {run_dir}")
    for _, r in df.iterrows():
        ci = "" if r["ci_low"] is None or r["ci_low"] != r["ci_low"] else f"{pct(r['ci_low'])}–{pct(r['ci_high'])}"
        maj = "" if r["majority_rate"] is None or r["majority_rate"] != r["majority_rate"] else pct(r["majority_rate"])
        table.add_row(r["model"], r["target"], r["method"], r["selection"], str(r["seed"]), r["convention"],
                      r["metric"], pct(r["value"]), ci, str(r["n"]), maj, ", ".join(json.loads(r["experts"] or "[]")))
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
