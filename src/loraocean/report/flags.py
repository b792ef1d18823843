"""Cells that show no learning: evaluations whose answers say the method did nothing a reader
should trust.

A cell (one evaluation, one convention) is flagged when
- near base: at least `NEAR_BASE` (95%) of its answers equal the base model's on the shared
  examples (same model, target, seed and convention): the method changed almost nothing
  ('=base' when every answer is the same);
- one answer: its most frequent prediction covers at least `COLLAPSED` of the examples: it answers
  one thing whatever the question;
- at majority: its accuracy lies inside the 95% Wilson interval of the majority-label rate over
  its n examples: it scores what always answering the most frequent label scores.
The base model itself is flagged on the last two rules. The tables mark flagged cells, and a claim
with a flagged cell on either side reads "cannot tell" (report.findings), never a win.
"""

from __future__ import annotations

COLLAPSED = 0.9
NEAR_BASE = 0.95
SAME_AS_BASE = "=base"
ONE_ANSWER = "one answer"
AT_MAJORITY = "at majority"


def majority_interval(rate: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson interval of a majority-label rate observed on n examples (scipy)."""
    from scipy.stats import binomtest

    k = int(round(rate * n))
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def _near_base(mine, reference) -> str | None:
    shared = mine.index.intersection(reference.index)
    if not len(shared):
        return None
    same = float((mine[shared] == reference[shared]).mean())
    if same >= 1.0:
        return SAME_AS_BASE
    return f"near base {100 * same:.0f}%" if same >= NEAR_BASE else None


def _at_majority(row) -> str | None:
    rate, n = row.get("majority_rate"), row.get("n")
    if rate is None or rate != rate or not n:
        return None
    low, high = majority_interval(float(rate), int(n))
    return f"{AT_MAJORITY} {100 * float(rate):.0f}%" if low <= float(row["value"]) <= high else None


def flags(df, preds) -> dict[tuple[str, str], str]:
    """(eval_key, convention) -> the reason the cell is flagged ('=base', 'near base NN%',
    'at majority NN%' or 'one answer NN%')."""
    from loraocean.moe.registry import base_model_name

    base_name = base_model_name()
    answers = {} if preds.empty else {key: g.set_index("example_id")["prediction"]
                                      for key, g in preds.groupby(["eval_key", "convention"])}
    base = {}
    for _, row in df[df["method"] == base_name].iterrows():
        base[(row["model"], row["target"], row["seed"], row["convention"])] = (row["eval_key"], row["convention"])
    out = {}
    for _, row in df.iterrows():
        key = (row["eval_key"], row["convention"])
        mine = answers.get(key)
        if mine is not None and len(mine):
            reference = answers.get(base.get((row["model"], row["target"], row["seed"], row["convention"])))
            if row["method"] != base_name and reference is not None:
                reason = _near_base(mine, reference)
                if reason:
                    out[key] = reason
                    continue
        if mine is not None and len(mine):
            top = float(mine.value_counts().iloc[0]) / len(mine)
            if top >= COLLAPSED:
                out[key] = f"{ONE_ANSWER} {100 * top:.0f}%"
                continue
        reason = _at_majority(row)
        if reason:
            out[key] = reason
    return out
