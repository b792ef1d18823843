"""Report tables against a results table built here, and the whole report of a stand-in run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import test_study_standins as standins
from loraocean.report import tables
from loraocean.report.build import write_report
from loraocean.report.findings import claims
from loraocean.report.stats import Cell, claim_test
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
    fitted = extra["method"] != "base"  # the base model is one evaluation, listed under every seed
    extra.loc[fitted, "value"] = extra.loc[fitted, "value"] + 0.1
    extra.loc[fitted, "eval_key"] = extra.loc[fitted, "eval_key"] + "-seed1"
    both = pd.concat([results, extra])
    t = tables.method_by_target(both, "manual", ["base", "loramoe", "rocket"], ["t1", "t2"])
    sd = 100 * np.std([0.70, 0.80], ddof=1)
    assert t.rows[1][1] == f"75.0 ±{sd:.1f} (2 seeds)"
    assert t.rows[0][1] == "30.0 (21.0–39.0)"  # the base model: its one evaluation's CI


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
seeds: [0, 1]
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
    # targets x seeds x (references + methods x selections + rocket on its own selection) x conventions
    assert len(df) == 2 * 2 * (2 + 9 + 1) * 2
    # the method x target table of the report holds the stored values: mean and spread over seeds
    lm = df[df.convention == "lm-eval"]
    r = lm[(lm.method == "loramoe") & (lm.selection == "manual") & (lm.target == "bb_intent_recognition")]
    cell = f"{100 * r['value'].mean():.1f} ±{100 * r['value'].std(ddof=1):.1f} (2 seeds)"
    line = next(l for l in text.splitlines() if l.startswith("| loramoe |") and cell in l)
    assert line in text and cell in html
    assert "| majority label | 10.0 | 10.0 | 10.0 |" in text
    # the claim LoRAMoE vs X-LoRA: the mean over targets and matched selections of the mean over
    # seeds of the stored accuracies, and its test rebuilt here from the stored per-example answers
    preds = predictions(run_dir)
    diffs, cells = [], []
    for target in ("bb_intent_recognition", "bb_sports_understanding"):
        for sel in ("ppl", "random", "manual"):
            side = {m: lm[(lm.method == m) & (lm.selection == sel) & (lm.target == target)] for m in ("loramoe", "xlora")}
            diffs.append(side["loramoe"].value.mean() - side["xlora"].value.mean())
            mats = [np.array([preds[(preds.eval_key == k) & (preds.convention == "lm-eval")]
                              .set_index("example_id").correct.sort_index().to_numpy() for k in side[m].eval_key])
                    for m in ("loramoe", "xlora")]
            cells.append(Cell(target, 1 / 6, *mats))
    expected = claim_test(cells)
    every = claims(df, preds)
    found = next(c for c in every if (c.a, c.b, c.convention) == ("loramoe", "xlora", "lm-eval"))
    assert found.test.diff == pytest.approx(np.mean(diffs)) == pytest.approx(expected.diff)
    assert (found.test.p_value, found.test.se, found.test.df) == pytest.approx(
        (expected.p_value, expected.se, expected.df))
    assert (found.cells, found.targets, found.seeds, sorted(found.levels)) == (6, 2, (2, 2), ["manual", "ppl", "random"])
    # one Holm family: the paper's claims on both conventions (statsmodels as the reference)
    from statsmodels.stats.multitest import multipletests

    family = [c for c in every if c.family_name == "claims" and c.test is not None]
    assert len(family) == 2 * 4 and {c.family for c in family} == {8}
    reference = multipletests([c.test.p_value for c in family], method="holm")[1]
    assert [c.test.p_adjusted for c in family] == pytest.approx(reference.tolist())
    assert found.verdict() == "win" and "Holm over the 8 claims" in text
    assert (f"**loramoe vs xlora** (methods, lm-eval): **loramoe beat xlora**: loramoe "
            f"{100 * found.acc_a:.1f}% vs xlora {100 * found.acc_b:.1f}%") in text
    assert "| loramoe vs xlora | lm-eval | tiny-llama | bb_intent_recognition |" in text
    assert "not measured" not in text  # every claim is: random is a fitted strategy here
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
    experts = json.loads(r.iloc[0]["experts"])
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
    # two targets, one selection, two seeds: loramoe and uniform on the same 6 examples each
    rows, preds = [], []
    outcomes = {("t1", "loramoe"): [[1, 1, 1, 0, 1, 1], [1, 1, 0, 0, 1, 1]],
                ("t1", "uniform"): [[0, 1, 0, 0, 1, 0], [0, 1, 0, 1, 1, 0]],
                ("t2", "loramoe"): [[1, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]],
                ("t2", "uniform"): [[1, 0, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0]]}
    for (target, method), by_seed in outcomes.items():
        for seed, correct in enumerate(by_seed):
            rows.append(row(target, method, "ppl", seed, float(np.mean(correct)), maj=0.1))
            preds += [{"eval_key": f"{target}{method}ppl{seed}", "convention": "lm-eval", "example_id": i,
                       "correct": c, "prediction": f"{c}{i}"} for i, c in enumerate(correct)]
    found = {(c.a, c.b): c for c in claims(pd.DataFrame(rows), pd.DataFrame(preds))}
    assert ("rocket", "uniform") not in found  # rocket was not run
    c = found[("loramoe", "uniform")]
    assert c.family_name == "baseline comparisons" and c.family == 1
    mats = {k: np.array(v, dtype=float) for k, v in outcomes.items()}
    expected = claim_test([Cell(t, 0.5, mats[(t, "loramoe")], mats[(t, "uniform")]) for t in ("t1", "t2")])
    assert c.test.diff == pytest.approx((9 / 12 + 10 / 12) / 2 - (5 / 12 + 3 / 12) / 2)  # by hand
    assert (c.test.diff, c.test.p_value) == pytest.approx((expected.diff, expected.p_value))
    assert c.test.p_adjusted == pytest.approx(c.test.p_value)  # a family of one
    assert c.cells == 2 and c.seeds == (2, 2)


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
