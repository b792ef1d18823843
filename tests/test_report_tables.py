"""Report tables against a results table built here, and the whole report of a stand-in run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import test_study_standins as standins
from loraocean.report import tables
from loraocean.report.build import write_report
from loraocean.report.findings import findings
from loraocean.report.stats import compare
from loraocean.study import load_config, query, run_study
from loraocean.study.store import predictions, tables as tables_of_run


def row(target, method, selection, seed, value, ci=(None, None), maj=0.5):
    return {"model": "m", "target": target, "method": method, "selection": selection, "seed": seed,
            "convention": "lm-eval", "metric": "acc", "value": value, "ci_low": ci[0], "ci_high": ci[1],
            "n": 100, "majority_rate": maj, "experts": "[]", "eval_key": f"{target}{method}{selection}{seed}"}


@pytest.fixture
def results():
    rows = [
        row("t1", "base", "none", 0, 0.30, (0.21, 0.39), maj=0.25),
        row("t2", "base", "none", 0, 0.50, (0.40, 0.60), maj=0.52),
        row("t1", "loramoe", "manual", 0, 0.70, (0.61, 0.79), maj=0.25),
        row("t2", "loramoe", "manual", 0, 0.60, (0.50, 0.70), maj=0.52),
        row("t1", "rocket", "manual", 0, 0.40, (0.30, 0.50), maj=0.25),
        row("t2", "rocket", "manual", 0, 0.55, (0.45, 0.65), maj=0.52),
        row("t1", "loramoe", "ppl", 0, 0.50, maj=0.25),
        row("t2", "loramoe", "ppl", 0, 0.45, maj=0.52),
        row("t1", "rocket", "ppl", 0, 0.20, maj=0.25),
        row("t2", "rocket", "ppl", 0, 0.35, maj=0.52),
    ]
    return pd.DataFrame(rows)


def test_method_by_target_table(results):
    t = tables.method_by_target(results, "manual", ["base", "loramoe", "rocket"], ["t1", "t2"])
    assert t.headers == ["method", "t1", "t2", "avg"]
    assert t.rows[0] == ["base", "30.0 (21.0–39.0)", "50.0 (40.0–60.0)", "40.0"]
    assert t.rows[1] == ["loramoe", "70.0 (61.0–79.0)", "60.0 (50.0–70.0)", "65.0"]
    assert t.rows[2][-1] == "47.5"
    assert t.rows[-1] == ["majority label", "25.0", "52.0", "38.5"]
    assert t.values[("rocket", "avg")] == pytest.approx(0.475)


def test_seeds_are_averaged_with_their_spread(results):
    extra = results.copy()
    extra["seed"] = 1
    extra["value"] = extra["value"] + 0.1
    both = pd.concat([results, extra])
    t = tables.method_by_target(both, "manual", ["base", "loramoe", "rocket"], ["t1", "t2"])
    sd = 100 * np.std([0.70, 0.80], ddof=1)
    assert t.rows[1][1] == f"75.0 ±{sd:.1f}"


def test_selection_by_method_table(results):
    t = tables.selection_by_method(results, ["ppl", "manual"], ["loramoe", "rocket"])
    assert t.headers == ["selection", "loramoe", "rocket", "avg"]
    assert t.rows[0] == ["ppl", "47.5", "27.5", "37.5"]
    assert t.rows[1] == ["manual", "65.0", "47.5", "56.2"]


def test_selection_overlap():
    chosen = {("t1", 0, "ppl"): ["a", "b", "c"], ("t1", 0, "manual"): ["a", "b", "d"],
              ("t2", 0, "ppl"): ["x", "y", "z"], ("t2", 0, "manual"): ["u", "v", "w"]}
    overlap, listing = tables.selection_overlap(chosen, ["manual", "ppl"])
    # t1: |{a,b}| / |{a,b,c,d}| = 0.5; t2: 0; mean 0.25
    assert overlap.values[("manual", "ppl")] == pytest.approx(0.25)
    assert overlap.rows[0] == ["manual", "1.00", "0.25"]
    assert listing.rows[0] == ["t1", "0", "a, b, d", "a, b, c"]


STUDY = """\
name: rep
models: [tiny-llama]
tasks:
  targets: [bb_intent_recognition, bb_sports_understanding]
  pool: [bb_social_iqa, bb_snarks, bb_winowhy, bb_implicatures]
library: {preset: smoke}
methods: [base, target_lora, loramoe, rocket, xlora]
selection: {strategies: [ppl, random, manual], compare: [embedding], k: 2, shots: 4}
seeds: [0]
evaluation: {convention: both}
caps: {max_eval: 60}
"""


def test_report_of_a_run(tmp_path):
    (tmp_path / "s.yaml").write_text(STUDY)
    run_dir = tmp_path / "run"
    run_study(load_config(tmp_path / "s.yaml"), run_dir, stages=standins.STAGES, fetch=False)
    # the report reads the job folders into the very tables `collect` writes, and writes no table
    frames = tables_of_run(run_dir)
    pd.testing.assert_frame_equal(frames[0], query(run_dir))
    pd.testing.assert_frame_equal(frames[1], predictions(run_dir))
    (run_dir / "results.sqlite").unlink()
    md, page = write_report(run_dir)
    assert not (run_dir / "results.sqlite").exists()
    text = md.read_text()
    html = page.read_text()
    df = query(run_dir)
    # targets x (references + methods x selections + rocket on its own selection) x conventions
    assert len(df) == 2 * (2 + 9 + 1) * 2
    # the method x target table of the report holds the stored values
    lm = df[df.convention == "lm-eval"]
    r = lm[(lm.method == "loramoe") & (lm.selection == "manual") & (lm.target == "bb_intent_recognition")].iloc[0]
    cell = f"{100 * r['value']:.1f} ({100 * r['ci_low']:.1f}–{100 * r['ci_high']:.1f})"
    line = next(l for l in text.splitlines() if l.startswith("| loramoe |") and cell in l)
    assert line in text and cell in html
    assert "| majority label | 25.0 | 25.0 | 25.0 |" in text
    # findings: recomputed here from the stored per-example correctness
    preds = predictions(run_dir)
    a, b, ex = [], [], []
    for target in ("bb_intent_recognition", "bb_sports_understanding"):
        for sel in ("ppl", "random", "manual"):
            ka = lm[(lm.method == "loramoe") & (lm.selection == sel) & (lm.target == target)].eval_key.iloc[0]
            kb = lm[(lm.method == "xlora") & (lm.selection == sel) & (lm.target == target)].eval_key.iloc[0]
            pa = preds[(preds.eval_key == ka) & (preds.convention == "lm-eval")].set_index("example_id").correct
            pb = preds[(preds.eval_key == kb) & (preds.convention == "lm-eval")].set_index("example_id").correct
            a += list(pa[pa.index])
            b += list(pb[pa.index])
            ex += [(target, i) for i in pa.index]  # an example is one unit across the 3 strategies
    expected = compare(a, b, ex)
    every = findings(df, preds, "lm-eval")
    found = [f for f in every if (f.a, f.b) == ("loramoe", "xlora")][0]
    assert (found.result.a_only, found.result.b_only) == (expected.a_only, expected.b_only)
    assert found.result.p_value == pytest.approx(expected.p_value)
    # Holm over the measured findings of the section (statsmodels as the independent reference)
    from statsmodels.stats.multitest import multipletests
    measured = [f for f in every if f.result is not None]
    reference = multipletests([f.result.p_value for f in measured], method="holm")[1]
    assert [f.result.p_adjusted for f in measured] == pytest.approx(reference.tolist())
    assert found.family == len(measured) and f"Holm-adjusted over the {len(measured)} findings" in text
    assert (f"**loramoe beat xlora** on this run: loramoe {100 * expected.acc_a:.1f}% vs xlora "
            f"{100 * expected.acc_b:.1f}%, majority-label rate 25.0%; {100 * expected.diff:+.1f} points") in text
    assert "manual vs random" not in text  # measured: random is a fitted strategy here
    # figures exist; report.md links each file, report.html carries each file's bytes inline
    import base64

    figures = sorted(p.name for p in (run_dir / "figures").glob("*.png"))
    assert "routing-loramoe.png" in figures and "routing-xlora.png" in figures
    assert any(f.startswith("accuracy-") for f in figures) and any(f.startswith("selection-") for f in figures)
    inline = html.count("src='data:image/png;base64,")
    assert inline == len(figures) and "figures/" not in html
    for f in figures:
        assert f"figures/{f}" in text
        data = base64.b64encode((run_dir / "figures" / f).read_bytes()).decode()
        assert f"src='data:image/png;base64,{data}'" in html
    # the selection overlap includes the compare-only embedding strategy
    assert "| strategy | ppl | random | manual | rocket | embedding |" in text
    experts = json.loads(r["experts"])
    assert len(experts) == 2
    # rocket's own default selection is a fitted strategy of rocket only, and the report says so
    assert set(df[df.selection == "rocket"].method) == {"rocket"}
    assert "rocket was also fitted on the experts of rocket selection (its own)" in text
    assert "Equal budgets: every trained method trained with the preset's budget" in text
    data = json.loads((run_dir / "results.json").read_text())
    assert data["train_overrides"] == {} and data["own_selections"] == {"rocket": ["rocket"]}


def test_trained_methods_are_compared_with_the_uniform_baseline_when_present():
    from loraocean.report.findings import questions

    assert ("method", "loramoe", "uniform") not in questions(["loramoe", "rocket"])
    # two targets, one selection: loramoe and uniform on the same 6 examples each, known outcomes
    rows, preds = [], []
    outcomes = {("t1", "loramoe"): [1, 1, 1, 0, 1, 1], ("t1", "uniform"): [0, 1, 0, 0, 1, 0],
                ("t2", "loramoe"): [1, 0, 1, 1, 1, 1], ("t2", "uniform"): [1, 0, 0, 1, 0, 0]}
    for (target, method), correct in outcomes.items():
        rows.append(row(target, method, "ppl", 0, float(np.mean(correct))))
        preds += [{"eval_key": f"{target}{method}ppl0", "convention": "lm-eval", "example_id": i,
                   "correct": c, "prediction": str(c)} for i, c in enumerate(correct)]
    found = {(f.a, f.b): f for f in findings(pd.DataFrame(rows), pd.DataFrame(preds), "lm-eval")}
    assert ("rocket", "uniform") not in found  # rocket was not run
    r = found[("loramoe", "uniform")].result
    # by hand: loramoe right and uniform wrong on 3 + 3 examples, the reverse on none
    assert (r.a_only, r.b_only, r.n) == (6, 0, 12)
    assert r.acc_a == pytest.approx(10 / 12) and r.acc_b == pytest.approx(4 / 12)
    assert r.p_value == pytest.approx(2 * 0.5 ** 6)  # sign-flip over 12 examples = McNemar exact
    assert found[("loramoe", "uniform")].contexts == 2


def test_the_report_says_whether_the_run_shows_an_effect(results):
    from loraocean.report.findings import above_base, can_show

    # t1: loramoe/manual (61.0-79.0) clears base (21.0-39.0); rocket/manual (30.0-50.0) overlaps it;
    # t2: loramoe/manual (50.0-70.0) overlaps base (40.0-60.0); the ppl rows have no CI
    assert above_base(results) == ["loramoe (manual) on t1"]
    assert can_show(results).startswith("This run shows a real effect: loramoe (manual) on t1")
    assert can_show(results).endswith("no such effect for rocket: their 95% CIs do not lie above "
                                      "the base model's on any target.")
    assert "no such effect" not in can_show(results[results.method != "rocket"])
    flat = results[~((results.method == "loramoe") & (results.selection == "manual"))]
    assert above_base(flat) == [] and "cannot support any claim" in can_show(flat)


def test_provenance_counts_the_finished_jobs_it_sums(tmp_path):
    """A run still going: the compute-time table says how many of each stage's jobs finished, and
    sums only their seconds."""
    from loraocean.report.build import provenance_blocks
    from loraocean.study.store import job_dir

    study = {"jobs": [{"kind": "lora", "key": "a"}, {"kind": "eval", "key": "b"}, {"kind": "eval", "key": "c"}],
             "versions": {"torch": "x"}}
    for kind, key, seconds in (("lora", "a", 60.0), ("eval", "b", 90.0)):
        job_dir(tmp_path, kind, key).mkdir(parents=True)
        (job_dir(tmp_path, kind, key) / "result.json").write_text(json.dumps({"seconds": seconds}))
    table = next(b[1] for b in provenance_blocks(tmp_path, study, None) if b[0] == "table")
    assert sorted(table.rows) == [["eval", "1 of 2", "1.5"], ["lora", "1", "1.0"]]
