"""Degenerate cells: evaluations whose answers say the method did nothing a reader should trust.

A cell (one evaluation, one convention) is flagged when
- its predictions equal the base model's on every shared example (same model, target, seed and
  convention): the method changed no answer; or
- its most frequent prediction covers at least `COLLAPSED` of the examples: it answers one thing
  whatever the question (the base model itself is flagged on this rule too).
The tables mark flagged cells and the findings say when a comparison is between flagged cells.
"""

from __future__ import annotations

COLLAPSED = 0.9
SAME_AS_BASE = "=base"
ONE_ANSWER = "one answer"


def flags(df, preds) -> dict[tuple[str, str], str]:
    """(eval_key, convention) -> the reason the cell is flagged ('=base' or 'one answer NN%')."""
    from loraocean.moe.registry import base_model_name

    if preds.empty:
        return {}
    base_name = base_model_name()
    answers = {key: g.set_index("example_id")["prediction"]
               for key, g in preds.groupby(["eval_key", "convention"])}
    base = {}
    for _, row in df[df["method"] == base_name].iterrows():
        base[(row["model"], row["target"], row["seed"], row["convention"])] = (row["eval_key"], row["convention"])
    out = {}
    for _, row in df.iterrows():
        key = (row["eval_key"], row["convention"])
        mine = answers.get(key)
        if mine is None or not len(mine):
            continue
        top = float(mine.value_counts().iloc[0]) / len(mine)
        reference = answers.get(base.get((row["model"], row["target"], row["seed"], row["convention"])))
        if row["method"] != base_name and reference is not None:
            shared = mine.index.intersection(reference.index)
            if len(shared) and (mine[shared] == reference[shared]).all():
                out[key] = SAME_AS_BASE
                continue
        if top >= COLLAPSED:
            out[key] = f"{ONE_ANSWER} {100 * top:.0f}%"
    return out
