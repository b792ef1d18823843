"""`loraocean select`: rank the library LoRAs of a model as experts for a target task."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _fmt(score) -> str:
    return "-" if score is None else f"{score:.4g}"


def _print_one(sel) -> None:
    from loraocean.cli.console import make_console
    from rich.table import Table

    order = "higher is better" if sel.higher_is_better else "lower is better"
    title = (f"{sel.strategy} for {sel.target} on {sel.model}: k={sel.k}, seed={sel.seed}, "
             f"shots={sel.shots}" + (f", data {sel.data_hash[:12]}" if sel.data_hash else ""))
    table = Table("rank", "task", f"score ({order})", "reason", title=title)
    for i, c in enumerate(sel.ranking, start=1):
        table.add_row(f"{i}{'*' if i <= sel.k else ''}", c.task, _fmt(c.score), c.reason)
    console = make_console(160)
    console.print(table)
    if sel.uses_target_labels:
        console.print("note: this strategy uses target labels (an upper bound, not a fair selection)")
    console.print(f"chosen: {', '.join(sel.chosen)}")


def _print_excluded(sel) -> None:
    """The candidates left out because their training data overlaps the target's test split."""
    for task, o in sel.excluded.items():
        typer.echo(f"left out {task}: {o['overlapping']} of {o['test_examples']} {sel.target} test examples "
                   f"({100 * o['share']:.1f}%) share a {o['n']}-gram with its training split")
    if sel.unchecked:
        typer.echo(f"not checked for overlap (data not readable here): {', '.join(sel.unchecked)}")


def _print_all(selections: dict, overlaps: dict) -> None:
    from loraocean.cli.console import make_console
    from rich.table import Table

    names = list(selections)
    k = next(iter(selections.values())).k
    heads = [f"{n}{' (uses target labels)' if selections[n].uses_target_labels else ''}" for n in names]
    table = Table("rank", *heads, title=f"rankings for {next(iter(selections.values())).target} "
                                         f"(* = chosen k={k})")
    depth = max(len(s.ranking) for s in selections.values())
    for i in range(depth):
        cells = []
        for n in names:
            r = selections[n].ranking
            cells.append(f"{r[i].task} ({_fmt(r[i].score)})" if i < len(r) else "")
        table.add_row(f"{i + 1}{'*' if i < k else ''}", *cells, end_section=(i == k - 1))
    console = make_console(max(160, 28 * (len(names) + 1)))
    console.print(table)
    grid = Table("overlap of chosen", *names, title=f"shared experts among the chosen {k}")
    for a in names:
        row = []
        for b in names:
            row.append(str(k if a == b else overlaps.get((a, b), overlaps.get((b, a)))))
        grid.add_row(a, *row)
    console.print(grid)


def _print_against_oracle(rows: list[dict], k: int) -> None:
    from loraocean.cli.console import make_console
    from rich.table import Table

    table = Table("strategy", "chosen", "regret (points)", f"precision@{k}", "spearman", "kendall",
                  title="against the oracle (each LoRA's dev score alone; regret: oracle's best-k mean "
                        "minus the chosen k's mean)")
    for r in rows:
        table.add_row(r["strategy"], ", ".join(r["chosen"]), f"{100 * r['regret']:.1f}",
                      f"{r['precision_at_k']:.2f}", _fmt(r["spearman"]), _fmt(r["kendall"]))
    make_console(160).print(table)


def select_command(
    target: str = typer.Option(..., "--target", help="Target task (catalog name, e.g. gsm8k or bb_snarks)."),
    k: int = typer.Option(4, "--k", help="Number of experts to choose."),
    strategy: str = typer.Option("ppl", "--strategy",
                                 help="ppl, random, manual, embedding, diversity, rocket, oracle, or all "
                                      "(every strategy side by side with their overlap)."),
    model: str = typer.Option("smollm2-135m", "--model", help="Base model whose LoRAs are candidates."),
    library: Path = typer.Option(..., "--library", help="Library root folder."),
    shots: int = typer.Option(32, "--shots", help="Target train examples seen by ppl and embedding."),
    seed: int = typer.Option(0, "--seed", help="Seed of the example sample and of random."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the selection(s) to this JSON file."),
    map_file: Optional[Path] = typer.Option(None, "--map", help="Relevance map YAML for manual (default: the shipped one)."),
    include_target: bool = typer.Option(False, "--include-target", help="Let the target's own LoRA (and those of tasks built from the same dataset) be candidates."),
    include_contaminated: bool = typer.Option(False, "--include-contaminated", help="Keep the LoRAs whose training split shares 13-grams with the target's test split (left out by default)."),
    base: str = typer.Option("ppl", "--base", help="Base strategy whose top candidates diversity chooses from."),
    pool: Optional[int] = typer.Option(None, "--pool", help="How many top candidates diversity (by --base) and rocket (by K-shot accuracy) choose from (default 2k)."),
    dev_limit: int = typer.Option(100, "--dev-limit", help="Target dev examples the oracle evaluates each LoRA on."),
    batch_size: int = typer.Option(8, "--batch-size", help="Examples per forward pass (ppl, oracle)."),
    against_oracle: bool = typer.Option(False, "--against-oracle", help="Also score every strategy "
                                        "against the oracle: regret, precision@k, rank correlation."),
) -> None:
    """Rank the library LoRAs of MODEL as experts for TARGET and print the chosen k."""
    from loraocean.artifacts import check_writable, write_json_atomic
    from loraocean.library import Library
    from loraocean.selection import overlap, select_many
    from loraocean.selection.oracle import against_oracle as score_against

    if json_path:
        check_writable(json_path, "--json", file=True)
    Library(library).require()

    names = [strategy] + (["oracle"] if against_oracle and strategy not in ("all", "oracle") else [])
    selections = select_many(target, library, model, k, names, shots=shots, seed=seed,
                             include_target=include_target, decontaminate=not include_contaminated,
                             map_file=map_file, base=base, pool=pool, dev_limit=dev_limit, batch_size=batch_size)
    _print_excluded(next(iter(selections.values())))
    scored = [score_against(s, selections["oracle"]) for n, s in selections.items() if n != "oracle"] \
        if against_oracle else []
    if strategy == "all":
        overlaps = overlap(selections)
        _print_all(selections, overlaps)
        if scored:
            _print_against_oracle(scored, k)
        if json_path:
            write_json_atomic(json_path, {
                "target": target, "k": k, "model": model,
                "selections": {n: s.stamp().to_dict() for n, s in selections.items()},
                "overlap": {f"{a}|{b}": v for (a, b), v in overlaps.items()},
                **({"against_oracle": scored} if scored else {})})
    else:
        sel = selections[strategy]
        _print_one(sel)
        if scored:
            _print_against_oracle(scored, k)
        if json_path:
            sel.save(json_path)
    if json_path:
        typer.echo(f"wrote {json_path}")


def register(app: typer.Typer) -> None:
    app.command("select")(select_command)
