"""Selection strategies scored against the oracle, from a run's finished selection jobs: when a
study ranks `oracle` (e.g. `compare: [oracle]`), every other strategy's regret, precision@k and
rank correlation (`loraocean.selection.oracle.against_oracle`), averaged over targets and seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loraocean.report.tables import Table
from loraocean.study.store import job_result

METRICS = ("regret", "precision_at_k", "spearman", "kendall")


def selections(run_dir: Path, study: dict, model: str) -> dict:
    """(target, seed, strategy) -> Selection, from the finished select jobs of `model`."""
    from loraocean.selection import Choice, Selection

    out = {}
    for job in study["jobs"]:
        i = job["inputs"]
        res = job_result(run_dir, job) if job["kind"] == "select" and i["model"] == model else None
        if res is None:
            continue
        ranking = [Choice(r["task"], r["score"], r.get("reason", "")) for r in res["ranking"]]
        out[(i["target"], i["seed"], i["strategy"])] = Selection(
            i["strategy"], i["target"], model, i["k"], i["seed"], i["shots"], "", ranking, True)
    return out


def oracle_table(run_dir: Path, study: dict, model: str) -> Table | None:
    """Mean regret (points), precision@k and rank correlations per strategy; None without oracle."""
    from loraocean.selection.oracle import against_oracle

    chosen = selections(run_dir, study, model)
    scored: dict[str, list[dict]] = {}
    for (target, seed, strategy), sel in chosen.items():
        oracle = chosen.get((target, seed, "oracle"))
        if strategy != "oracle" and oracle is not None:
            scored.setdefault(strategy, []).append(against_oracle(sel, oracle))
    if not scored:
        return None
    rows, values = [], {}
    for strategy, results in scored.items():
        line = [strategy]
        for metric in METRICS:
            known = [r[metric] for r in results if r[metric] is not None]
            mean = float(np.mean(known)) if known else None
            values[(strategy, metric)] = mean
            scale = 100 if metric == "regret" else 1
            line.append("–" if mean is None else f"{scale * mean:.{1 if metric == 'regret' else 2}f}")
        rows.append(line + [str(len(results))])
    k = next(iter(chosen.values())).k
    return Table(title="Selection against the oracle (mean over targets and seeds)",
                 headers=["strategy", "regret (points)", f"precision@{k}", "Spearman", "Kendall", "targets x seeds"],
                 rows=rows, values=values,
                 note="Oracle: each library LoRA's dev score alone on the target. Regret: the oracle's "
                      "best-k mean dev score minus the strategy's chosen k's; precision@k: share of the "
                      "chosen k among the oracle's top k; rank correlations between the strategy's "
                      "ranking and the dev scores ('–': the dev scores were all equal).")
