"""Paper-style tables from the results table (a pandas DataFrame of `loraocean.study.store`).

Accuracies are percentages with their 95% CI (one seed) or the spread over seeds, and every
target's majority-label rate stands beside them, so a number near the label prior reads as such.
Degenerate cells (`loraocean.report.flags`) carry their flag in brackets.

One rounding rule wherever a person reads a score (the report, `loraocean results`, the
leaderboard): `pct`, a percentage with one decimal. The CSV files, results.sqlite and results.json
keep the raw fractions in [0, 1].
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""
    values: dict = field(default_factory=dict)  # (row name, column name) -> number, for tests/plots
    anchor: str = ""  # the id of the table in report.html (`anchor`), which other pages link to


def anchor(*parts: str) -> str:
    """An HTML id from its parts: `anchor("results", "org/model", "lm-eval", "manual")` ->
    'results-org-model-lm-eval-manual'; report.html and the leaderboard's links both build it here."""
    return "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "-", str(p)).strip("-") for p in parts)


def pct(x) -> str:
    """A score in [0, 1] as a percentage with one decimal ('11.2' for 9 of 80); '–' when missing."""
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f}"


def cell(group, flagged: dict | None = None) -> tuple[float, str]:
    """Mean value over seeds and its text: '62.0 (55.1–68.4)' for one evaluation, '62.0 ±1.3 (3
    seeds)' for more (the standard deviation over the seeds' evaluations), followed by ' [=base]'
    (or another flag) when a seed's evaluation is flagged. A reference evaluated once and listed
    under every seed counts once."""
    group = group.drop_duplicates("eval_key") if "eval_key" in group else group
    values = group["value"].to_numpy(dtype=float)
    mean = float(values.mean())
    marks = [flagged[k] for k in zip(group["eval_key"], group["convention"]) if k in (flagged or {})]
    mark = "" if not marks else f" [{marks[0]}]" if len(group) == 1 else \
        f" [{marks[0]}; {len(marks)} of {len(group)} seeds flagged]"
    if len(values) == 1:
        row = group.iloc[0]
        if row["ci_low"] is not None and not np.isnan(row["ci_low"]):
            return mean, f"{pct(mean)} ({pct(row['ci_low'])}–{pct(row['ci_high'])}){mark}"
        return mean, pct(mean) + mark
    return mean, f"{pct(mean)} ±{100 * values.std(ddof=1):.1f} ({len(values)} seeds){mark}"


def ordered(values, preferred: list[str]) -> list[str]:
    present = list(dict.fromkeys(values))
    return [v for v in preferred if v in present] + [v for v in present if v not in preferred]


def method_by_target(df, selection: str, methods: list[str], targets: list[str],
                     flagged: dict | None = None) -> Table:
    """Rows: methods (references use no selection); columns: targets and their average.
    `flagged`: (eval_key, convention) -> flag of the degenerate cells (`report.flags.flags`)."""
    targets = ordered(df["target"], targets)
    sub = df[(df["selection"] == selection) | (df["selection"] == "none")]
    rows, values = [], {}
    for method in ordered(sub["method"], methods):
        m = sub[sub["method"] == method]
        line, means = [method], []
        for target in targets:
            g = m[m["target"] == target]
            if g.empty:
                line.append("–")
                continue
            mean, text = cell(g, flagged)
            values[(method, target)] = mean
            means.append(mean)
            line.append(text)
        avg = float(np.mean(means)) if len(means) == len(targets) else None
        values[(method, "avg")] = avg
        rows.append(line + [pct(avg)])
    maj = []
    for target in targets:
        rates = df[df["target"] == target]["majority_rate"].dropna()
        maj.append(float(rates.iloc[0]) if len(rates) else None)
        values[("majority label", target)] = maj[-1]
    known = [m for m in maj if m is not None]
    rows.append(["majority label"] + [pct(m) for m in maj] + [pct(np.mean(known)) if known else "–"])
    return Table(title=f"Accuracy (%) by method and target task, {selection} selection",
                 headers=["method"] + targets + ["avg"], rows=rows, values=values,
                 note="Cells: accuracy with its 95% bootstrap CI (one evaluation) or, for a fitted method, "
                      "the mean over its seeds ± the standard deviation over them (the seed spread). "
                      "'majority label' is the accuracy of always answering the most frequent label of "
                      "that evaluation set: methods near it learned little. [=base] / [near base NN%]: "
                      "every answer / NN% >= 95% of answers equal the base model's; [at majority NN%]: "
                      "accuracy inside the 95% interval of the majority-label rate NN%; [one answer NN%]: "
                      "the most frequent answer covers NN% >= 90% of examples.")


def selection_by_method(df, strategies: list[str], methods: list[str]) -> Table:
    """Rows: selection strategies; columns: MoE methods and their average (mean over targets, seeds)."""
    sub = df[df["selection"] != "none"]
    methods = ordered(sub["method"], methods)
    rows, values = [], {}
    for strategy in ordered(sub["selection"], strategies):
        s = sub[sub["selection"] == strategy]
        line, means = [strategy], []
        for method in methods:
            g = s[s["method"] == method]
            if g.empty:
                line.append("–")
                continue
            per_target = g.groupby("target")["value"].mean()
            mean = float(per_target.mean())
            values[(strategy, method)] = mean
            means.append(mean)
            line.append(pct(mean))
        avg = float(np.mean(means)) if means else None
        values[(strategy, "avg")] = avg
        rows.append(line + [pct(avg)])
    return Table(title="Accuracy (%) by selection strategy and method (mean over target tasks and seeds)",
                 headers=["selection"] + methods + ["avg"], rows=rows, values=values)


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def selection_overlap(chosen: dict, strategies: list[str]) -> tuple[Table, Table]:
    """(mean Jaccard overlap between strategies' chosen sets, the chosen experts per target).

    `chosen`: (target, seed, strategy) -> list of chosen expert tasks."""
    strategies = ordered([k[2] for k in chosen], strategies)
    contexts = sorted({(t, s) for t, s, _ in chosen})
    rows, values = [], {}
    for a in strategies:
        line = [a]
        for b in strategies:
            scores = [jaccard(chosen[(t, s, a)], chosen[(t, s, b)]) for t, s in contexts
                      if (t, s, a) in chosen and (t, s, b) in chosen]
            value = float(np.mean(scores)) if scores else None
            values[(a, b)] = value
            line.append("–" if value is None else f"{value:.2f}")
        rows.append(line)
    overlap = Table(title="Selection overlap (mean Jaccard index of the chosen experts)",
                    headers=["strategy"] + strategies, rows=rows, values=values,
                    note="1.00: the two strategies chose the same experts; 0.00: no expert in common.")
    listing = Table(title="Experts chosen for each target", headers=["target", "seed"] + strategies,
                    rows=[[t, str(s)] + [", ".join(chosen.get((t, s, st), [])) or "–" for st in strategies]
                          for t, s in contexts])
    return overlap, listing
