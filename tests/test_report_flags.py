"""Degenerate-cell flags on a constructed run: a method that answers like the base model and one
that answers one label to nearly every example are marked in the table and in the findings."""

from __future__ import annotations

import pandas as pd

from loraocean.report import tables
from loraocean.report.findings import findings
from loraocean.report.flags import flags

GOLD = list("ABCD") * 5  # 20 examples, majority-label rate 25%
ANSWERS = {
    "base": ["A"] * 12 + list("BCDBCDBC"),                       # top answer 60%: not collapsed
    "loramoe": ["A"] * 12 + list("BCDBCDBC"),                    # exactly the base model's answers
    "xlora": ["B"] * 19 + ["C"],                                 # one answer on 95% of examples
    "target_lora": GOLD[:16] + list("BBBB"),                     # healthy
}


def run():
    rows, preds = [], []
    for method, answers in ANSWERS.items():
        selection = "none" if method in ("base", "target_lora") else "manual"
        key = f"k-{method}"
        correct = [int(p == g) for p, g in zip(answers, GOLD)]
        rows.append({"model": "m", "target": "t", "method": method, "selection": selection, "seed": 0,
                     "convention": "lm-eval", "metric": "acc", "value": sum(correct) / 20,
                     "ci_low": None, "ci_high": None, "n": 20, "majority_rate": 0.25, "eval_key": key})
        preds += [{"eval_key": key, "convention": "lm-eval", "example_id": f"e{i}", "correct": c,
                   "prediction": p} for i, (p, c) in enumerate(zip(answers, correct))]
    return pd.DataFrame(rows), pd.DataFrame(preds)


def test_flags_of_a_constructed_degenerate_run():
    df, preds = run()
    assert flags(df, preds) == {("k-loramoe", "lm-eval"): "=base", ("k-xlora", "lm-eval"): "one answer 95%"}


def test_table_marks_the_flagged_cells():
    df, preds = run()
    t = tables.method_by_target(df, "manual", list(ANSWERS), ["t"], flags(df, preds))
    by_method = {r[0]: r[1] for r in t.rows}
    # base: 12 "A" on gold A at 0, 4, 8 -> 3; then B C D B C D B C against gold A B C D A B C D -> 0
    assert by_method["base"] == "15.0"
    assert by_method["loramoe"] == "15.0 [=base]"
    assert by_method["xlora"] == "25.0 [one answer 95%]"  # gold B at 1, 5, 9, 13, 17, all answered B
    assert by_method["target_lora"] == "85.0"  # 16 right, then B B B B against A B C D -> 1


def test_findings_headline_says_the_comparison_is_between_degenerate_cells():
    df, preds = run()
    found = {(f.a, f.b): f for f in findings(df, preds, "lm-eval")}
    text = found[("loramoe", "xlora")].sentence()
    assert text.startswith("**Between degenerate cells**")
    assert (found[("loramoe", "xlora")].flagged_a, found[("loramoe", "xlora")].flagged_b) == (1, 1)
    assert found[("loramoe", "rocket")].result is None  # rocket was not run
