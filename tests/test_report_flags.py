"""Cells that show no learning, on a constructed run: a method that answers like the base model
(exactly, or on at least 95% of examples), one whose accuracy is the majority-label rate, and one
that answers one label to nearly every example are marked in the table, and a claim that includes
one reads "cannot tell", never a win."""

from __future__ import annotations

import pandas as pd
import pytest

from loraocean.report import tables
from loraocean.report.findings import claims
from loraocean.report.flags import flags, majority_interval

GOLD = list("ABCD") * 10  # 40 examples, majority-label rate 25%
BASE = ["A"] * 24 + list("BCDBCDBCDBCDBCDB")  # top answer 60%: not collapsed
ANSWERS = {
    "base": BASE,
    "loramoe": BASE,                                            # exactly the base model's answers
    "rocket": BASE[:38] + GOLD[38:],                            # 38 of 40 (95%) the base's answers
    "xlora": ["B"] * 39 + ["C"],                                # one answer on 97.5% of examples
    "target_lora": GOLD[:36] + list("BBBB"),                    # healthy: 37 of 40 right
    "uniform": list("AACC") * 10,                               # 50% right: not at 25%, spread answers
    "mole": GOLD[:10] + list("BADC") * 7 + list("BA"),          # 10 right + ... at the majority rate
}


def run(methods=ANSWERS, seeds=(0,)):
    rows, preds = [], []
    for seed in seeds:
        for method, answers in methods.items():
            selection = "none" if method in ("base", "target_lora") else "manual"
            key = f"k-{method}-{seed}" if selection != "none" else f"k-{method}"
            correct = [int(p == g) for p, g in zip(answers, GOLD)]
            rows.append({"model": "m", "target": "t", "method": method, "selection": selection, "seed": seed,
                         "convention": "lm-eval", "metric": "acc", "value": sum(correct) / len(GOLD),
                         "ci_low": None, "ci_high": None, "n": len(GOLD), "majority_rate": 0.25, "eval_key": key})
            if selection == "none" and seed != seeds[0]:
                continue
            preds += [{"eval_key": key, "convention": "lm-eval", "example_id": f"e{i}", "correct": c,
                       "prediction": p} for i, (p, c) in enumerate(zip(answers, correct))]
    return pd.DataFrame(rows), pd.DataFrame(preds)


def test_flags_of_a_constructed_run():
    df, preds = run()
    got = flags(df, preds)
    low, high = majority_interval(0.25, 40)
    mole = df[df.method == "mole"].value.iloc[0]
    assert low <= mole <= high  # the constructed at-majority cell really is inside the interval
    base = df[df.method == "base"].value.iloc[0]
    assert got == {("k-loramoe-0", "lm-eval"): "=base", ("k-rocket-0", "lm-eval"): "near base 95%",
                   ("k-xlora-0", "lm-eval"): "one answer 98%", ("k-mole-0", "lm-eval"): "at majority 25%",
                   **({("k-base", "lm-eval"): "at majority 25%"} if low <= base <= high else {})}


def test_majority_interval_is_wilson():
    from statsmodels.stats.proportion import proportion_confint

    assert majority_interval(0.25, 40) == pytest.approx(proportion_confint(10, 40, method="wilson"))


def test_table_marks_the_flagged_cells():
    df, preds = run()
    t = tables.method_by_target(df, "manual", list(ANSWERS), ["t"], flags(df, preds))
    by_method = {r[0]: r[1] for r in t.rows}
    assert by_method["loramoe"].endswith(" [=base]")
    assert by_method["rocket"].endswith(" [near base 95%]")
    assert by_method["xlora"].endswith(" [one answer 98%]")
    assert by_method["mole"].endswith(" [at majority 25%]")
    assert by_method["target_lora"] == "92.5"


def test_a_claim_with_flagged_cells_cannot_tell():
    """LoRAMoE answers like the base model on both seeds; whatever the numbers say, its claims read
    'cannot tell' and name the flagged evaluations."""
    methods = {"base": BASE, "loramoe": BASE, "rocket": list("AACC") * 10, "xlora": list("ABCA") * 10}
    df, preds = run(methods, seeds=(0, 1))
    found = {(c.a, c.b): c for c in claims(df, preds)}
    c = found[("loramoe", "rocket")]
    assert c.verdict() == "cannot tell"
    assert c.flagged[:2] == ["loramoe/manual on t seed 0: =base", "loramoe/manual on t seed 1: =base"]
    assert "**cannot tell** (2 of its evaluations show no learning" in c.sentence()
    assert found[("manual", "ppl")].test is None  # ppl was not run
