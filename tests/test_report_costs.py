"""The cost table and results.json of a stand-in run whose job results carry known training logs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import test_study_standins as standins
from loraocean.report.build import write_report
from loraocean.report.costs import LIBRARY_ROW, cost_table
from loraocean.study import load_config, query, run_study
from loraocean.study.store import study_file

STUDY = """\
name: costs
models: [tiny-llama]
tasks:
  targets: [bb_intent_recognition]
  pool: [bb_social_iqa, bb_snarks, bb_winowhy]
library: {preset: smoke}
methods: [base, target_lora, loramoe, xlora]
selection: {strategies: [ppl, manual], k: 2, shots: 4}
seeds: [0, 1]
caps: {max_eval: 40}
"""


def _patch(path: Path, **fields) -> None:
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


@pytest.fixture
def run(tmp_path):
    (tmp_path / "s.yaml").write_text(STUDY)
    run_dir = tmp_path / "run"
    run_study(load_config(tmp_path / "s.yaml"), run_dir, stages=standins.STAGES, fetch=False)
    study = study_file(run_dir)
    n_fit = n_eval = 0
    for job in study["jobs"]:
        folder = run_dir / "jobs" / f"{job['kind']}-{job['key']}"
        if job["kind"] == "lora":  # every library LoRA: 12 steps, 900 tokens, 5000 params, 3 s
            _patch(folder / "result.json", seconds=3.0,
                   train={"steps": 12, "tokens": 900, "trainable_params": 5000})
        elif job["kind"] == "fit" and job["inputs"]["method"] == "loramoe":
            n_fit += 1  # the fits differ in tokens: 100, 200, 300, 400 -> mean 250; 3 of 4 chose 2e-4
            _patch(folder / "result.json", seconds=float(n_fit),
                   card={"train_log": {"steps": 8, "tokens": 100 * n_fit, "trainable_params": 777},
                         "lr_sweep": {"grid": [5e-05, 0.0002, 0.0008], "chosen": 5e-05 if n_fit == 1 else 0.0002}})
        elif job["kind"] == "eval" and job["inputs"]["method"] == "loramoe":  # latency 10, 20, 30, 40 ms
            _patch(folder / "result.json", inference={"latency_ms": 10.0 * (n_eval := n_eval + 1),
                                                      "tokens_per_s": 1000.0, "peak_mb": 512.0,
                                                      "memory": "process peak RSS"})
        elif job["kind"] == "fit":  # xlora's fits written as a training-free build would be
            _patch(folder / "result.json", seconds=0.5, card={"train_log": None})
    assert n_fit == 4  # 2 strategies x 2 seeds
    return run_dir


def test_cost_table_from_the_job_logs(run):
    t = cost_table(run, study_file(run), query(run), ["base", "target_lora", "loramoe", "xlora"])
    rows = {r[0]: r for r in t.rows}
    assert rows["base"][1:6] == ["0", "0", "0", "0.0", "1"]
    # target_lora: the target's own LoRA, trained once, shared by both seeds' rows
    assert rows["target_lora"][1:6] == ["5,000", "12", "900", "3.0", "1"]
    assert rows["loramoe"][1:6] == ["777", "8", "250", "2.5", "4"]
    assert rows["xlora"][1:6] == ["0", "0", "0", "0.5", "4"]
    assert rows[LIBRARY_ROW][1:6] == ["5,000", "12", "900", "3.0", "4"]
    assert rows["loramoe"][6] == "40"  # n per cell: the stand-ins score max_eval examples
    assert rows["loramoe"][7:] == ["0.0002 x3, 5e-05 x1", "25.0", "1,000", "512"]
    assert rows["xlora"][7:] == ["n/a", "–", "–", "–"]  # not tuned; its evaluations recorded nothing
    assert rows[LIBRARY_ROW][6:] == ["n/a"] * 5  # a library LoRA is neither tuned nor evaluated alone
    assert "same grid (5e-05, 0.0002, 0.0008)" in t.note
    assert "'–': not recorded by the job" in t.note  # xlora's inference columns


def test_cost_table_says_nothing_of_older_jobs_when_every_column_is_recorded(run):
    study = study_file(run)
    for job in study["jobs"]:
        if job["kind"] == "eval":
            _patch(run / "jobs" / f"eval-{job['key']}" / "result.json",
                   inference={"latency_ms": 5.0, "tokens_per_s": 100.0, "peak_mb": 64.0, "memory": "process peak RSS"})
    t = cost_table(run, study, query(run), ["base", "target_lora", "loramoe", "xlora"])
    assert not any("–" in r for r in t.rows)
    assert "'–'" not in t.note and "before this column existed" not in t.note


def test_cost_table_says_what_an_older_job_did_not_record(run):
    """Library LoRA jobs whose training log lacks trainable_params (as older releases wrote them)."""
    study = study_file(run)
    for job in study["jobs"]:
        if job["kind"] == "lora":
            _patch(run / "jobs" / f"lora-{job['key']}" / "result.json", train={"steps": 12, "tokens": 900})
    t = cost_table(run, study, query(run), ["base", "target_lora", "loramoe", "xlora"])
    rows = {r[0]: r for r in t.rows}
    assert rows[LIBRARY_ROW][1] == rows["target_lora"][1] == "–" and rows["loramoe"][1] == "777"
    assert "'–': not recorded by the job" in t.note


def test_results_json_beside_the_report(run):
    write_report(run)
    data = json.loads((run / "results.json").read_text())
    df = query(run)
    assert len(data["results"]) == len(df)
    assert data["config_hash"] == study_file(run)["config_hash"]
    here = Path(__file__).resolve().parent
    head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert data["git_commit"].split("+")[0] == head
    assert data["versions"]["numpy"] and data["device"]
    claims = [c for c in data["claims"] if c["family"] == "claims"]
    measured = [c for c in claims if "p_value" in c and c["seeds_known"]]
    assert measured and all(c["holm_family"] == len(measured) for c in measured)
    assert all(c["verdict"] in ("win", "loss", "no clear difference", "cannot tell") for c in claims)
    assert {r["method"] for r in data["costs"]["tiny-llama"]} >= {"loramoe", LIBRARY_ROW}
    assert "| loramoe | 777 | 8 | 250 | 2.5 | 4 | 40 |" in (run / "report.md").read_text()
