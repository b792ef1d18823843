"""Finished study runs read for the leaderboard: one entry per (run, model, method, selection,
convention) with its score on each target (CI or spread over seeds, degenerate-cell flag) and what
it cost, all from the run folder alone (study.json and the job folders, read through
`study.store.tables`; nothing is written there).

Costs are what the run folders record: the mean wall seconds and trainable parameters of the
training runs behind an entry (`report.costs.training`, the report's cost table), and the
evaluation jobs' wall seconds per test example. No stage records peak memory, so there is none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loraocean.errors import ConfigError, LoraOceanError
from loraocean.report.build import fit_plan
from loraocean.report.costs import training
from loraocean.report.flags import flags
from loraocean.report.tables import anchor, cell
from loraocean.study import store

ENTRY_KEY = ("model", "method", "selection", "convention")


@dataclass
class Run:
    folder: Path
    label: str                # unique among the runs read together
    study: dict               # study.json
    report: Path | None       # its report.html, when it has one
    library: dict[str, dict] = field(default_factory=dict)  # model -> the library LoRAs' mean cost

    @property
    def name(self) -> str:
        return self.study["name"]


@dataclass
class Score:
    value: float              # mean over seeds (a fraction in [0, 1])
    text: str                 # as the report's tables print it: '62.0 (55.1–68.4)', '62.0 ±1.3', flag
    ci_low: float | None      # one seed: its 95% bootstrap CI
    ci_high: float | None
    sd: float | None          # several seeds: the standard deviation over them
    seeds: int
    n: int                    # test examples
    flag: str                 # '' or why the cell is degenerate ('=base', 'one answer 95%')
    anchor: str               # the id of the report.html table that holds this cell


@dataclass
class Entry:
    run: Run
    model: str
    method: str
    selection: str
    convention: str
    metric: str
    scores: dict[str, Score]          # target -> score
    train_seconds: float | None       # mean wall seconds per training run behind it (0: nothing trained)
    trainable_params: float | None    # mean trainable parameters of those runs
    eval_ms: float | None             # mean evaluation wall time per test example, milliseconds


def family(target: str) -> str:
    """The task family (the catalog's category) of a target; 'other' for a task it does not know."""
    from loraocean.tasks import get_task

    try:
        return get_task(target).category
    except (LoraOceanError, OSError):
        return "other"


def labels(folders: list[Path]) -> list[str]:
    """Short unique names for the run folders: the folder name, with its parent where two share it."""
    names = [f.name for f in folders]
    return [f"{f.parent.name}/{f.name}" if names.count(f.name) > 1 else f.name for f in folders]


def read_runs(folders: list[str | Path]) -> list[tuple[Run, list[Entry]]]:
    """Every run's entries, in the order given; a folder named twice is a ConfigError."""
    paths = [Path(f) for f in folders]
    seen: dict[Path, Path] = {}
    for p in paths:
        if p.resolve() in seen:
            raise ConfigError(f"run folder {p} is given twice (as {seen[p.resolve()]}); name each run once")
        seen[p.resolve()] = p
    return [read_run(p, label) for p, label in zip(paths, labels([p.resolve() for p in paths]))]


def read_run(folder: Path, label: str) -> tuple[Run, list[Entry]]:
    study = store.study_file(folder)
    df, preds = store.tables(folder)
    report = folder / "report.html"
    run = Run(folder, label, study, report if report.is_file() else None, library_costs(folder, study))
    if df.empty:
        return run, []
    flagged = flags(df, preds)
    first = first_tables(study, df)
    costs = {}  # (model, selection) -> method -> training records
    entries = []
    for (model, method, selection, convention), g in df.groupby(list(ENTRY_KEY), sort=False):
        if (model, selection) not in costs:
            costs[(model, selection)] = training(folder, study, df[(df["model"] == model) & (df["selection"] == selection)])
        records = costs[(model, selection)].get(method, [])
        table = selection if selection != "none" else first.get((model, convention), "none")
        scores = {target: score(t, flagged, anchor("results", model, convention, table))
                  for target, t in g.groupby("target", sort=False)}
        evals = g.drop_duplicates("eval_key")
        per_example = [s / n for s, n in zip(evals["eval_seconds"], evals["n"]) if _known(s) and _known(n) and n]
        entries.append(Entry(run, model, method, selection, convention, str(g["metric"].iloc[0]), scores,
                             _mean(records, "seconds"), _mean(records, "trainable_params"),
                             1000 * float(np.mean(per_example)) if per_example else None))
    cfg = study["config"]
    order = (cfg["models"], [m["name"] for m in cfg["methods"]], ["none"] + cfg["selection"]["strategies"])
    entries.sort(key=lambda e: tuple(_rank(o, x) for o, x in zip(order, (e.model, e.method, e.selection))))
    return run, entries


def score(g, flagged: dict, where: str) -> Score:
    """One target's cell of an entry: the report's text for it (`tables.cell`) and its numbers."""
    mean, text = cell(g, flagged)
    one = len(g) == 1 and _known(g["ci_low"].iloc[0])
    marks = [flagged[k] for k in zip(g["eval_key"], g["convention"]) if k in flagged]
    return Score(mean, text, float(g["ci_low"].iloc[0]) if one else None,
                 float(g["ci_high"].iloc[0]) if one else None,
                 float(g["value"].std(ddof=1)) if len(g) > 1 else None, len(g),
                 int(g["n"].max()) if g["n"].notna().any() else 0, marks[0] if marks else "", where)


def first_tables(study: dict, df) -> dict[tuple[str, str], str]:
    """(model, convention) -> the selection of the first results table of that report section,
    where the references (selection 'none') are shown: as `build_blocks` orders its tables, the
    study's strategies, then those a method was fitted on of its own."""
    _, _, extra = fit_plan(study)
    order = list(dict.fromkeys(study["config"]["selection"]["strategies"] + [s for ss in extra.values() for s in ss]))
    out = {}
    for (model, conv), g in df.groupby(["model", "convention"], sort=False):
        out[(model, conv)] = next((s for s in order if s in set(g["selection"])), "none")
    return out


def library_costs(folder: Path, study: dict) -> dict[str, dict]:
    """model -> {'loras', 'seconds', 'trainable_params'}: the finished library LoRAs of that model
    (mean per LoRA; the report's last cost row), which the MoE methods start from and whose cost an
    MoE entry's own leaves out."""
    out: dict[str, list[dict]] = {}
    for job in study["jobs"]:
        res = store.job_result(folder, job) if job["kind"] == "lora" else None
        if res is not None:
            out.setdefault(job["inputs"]["model"], []).append(
                {"seconds": res.get("seconds"), "trainable_params": (res.get("train") or {}).get("trainable_params")})
    return {model: {"loras": len(r), "seconds": _mean(r, "seconds"), "trainable_params": _mean(r, "trainable_params")}
            for model, r in out.items()}


def relative_link(target: Path, start: Path) -> str:
    """`target` as a link from a page in `start` (a relative path where one exists)."""
    try:
        return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()
    except ValueError:  # another drive (Windows): an absolute file URL
        return target.resolve().as_uri()


def _rank(order: list[str], x: str) -> int:
    return order.index(x) if x in order else len(order)


def _known(x) -> bool:
    return x is not None and x == x


def _mean(records: list[dict], key: str) -> float | None:
    values = [r[key] for r in records if _known(r.get(key))]
    return float(np.mean(values)) if values else None
