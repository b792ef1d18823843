"""The report's selection-against-oracle table on a stand-in run whose oracle scores are set here."""

from __future__ import annotations

import json

import pytest
from scipy.stats import spearmanr

import test_study_standins as standins
from loraocean.report.build import write_report
from loraocean.report.oracle import oracle_table
from loraocean.study import load_config, run_study
from loraocean.study.store import study_file

STUDY = """\
name: oracle
models: [tiny-llama]
tasks:
  targets: [bb_intent_recognition]
  pool: [bb_social_iqa, bb_snarks, bb_winowhy, bb_implicatures]
library: {preset: smoke}
methods: [base, loramoe]
selection: {strategies: [ppl, manual], compare: [oracle], k: 2, shots: 4}
caps: {max_eval: 20}
"""
DEV = {"bb_social_iqa": 0.40, "bb_snarks": 0.70, "bb_winowhy": 0.10, "bb_implicatures": 0.55}


def test_oracle_table_of_a_run(tmp_path):
    (tmp_path / "s.yaml").write_text(STUDY)
    run_dir = tmp_path / "run"
    run_study(load_config(tmp_path / "s.yaml"), run_dir, stages=standins.STAGES, fetch=False)
    study = study_file(run_dir)
    rankings = {}
    for job in study["jobs"]:
        if job["kind"] != "select":
            continue
        path = run_dir / "jobs" / f"select-{job['key']}" / "result.json"
        res = json.loads(path.read_text())
        if job["inputs"]["strategy"] == "oracle":  # the oracle as it would rank: by dev score
            res["ranking"] = [{"task": t, "score": s, "reason": ""} for t, s in
                              sorted(DEV.items(), key=lambda ts: -ts[1])]
            path.write_text(json.dumps(res))
        rankings[job["inputs"]["strategy"]] = [r["task"] for r in res["ranking"]]
    table = oracle_table(run_dir, study, "tiny-llama")
    best = (0.70 + 0.55) / 2  # snarks, implicatures
    for strategy in ("ppl", "manual"):
        order = rankings[strategy]
        chosen = order[:2]
        assert table.values[(strategy, "regret")] == pytest.approx(best - (DEV[chosen[0]] + DEV[chosen[1]]) / 2)
        hits = len({"bb_snarks", "bb_implicatures"} & set(chosen))
        assert table.values[(strategy, "precision_at_k")] == pytest.approx(hits / 2)
        rho = spearmanr(range(len(order), 0, -1), [DEV[t] for t in order]).statistic
        assert table.values[(strategy, "spearman")] == pytest.approx(rho)
    md, _ = write_report(run_dir)
    assert "Selection against the oracle" in md.read_text()
