"""The plain-language findings: did LoRAMoE beat Rocket and X-LoRA, did Manual selection beat PPL
and Random, and (when the run has it) did each trained LoRA-MoE method beat the uniform average of
the same experts, on this run, as measured.

Each comparison pairs evaluations that differ only in the compared factor (same model, target,
seed, convention, and the same selection for a method comparison / the same method for a
selection comparison) and joins their per-example correctness on the example id. The unit of
every test is the test example: the matched evaluations (the other factor's levels and the seeds)
are its strata, so an example seen in three strata still counts once (`loraocean.report.stats`).
The measured findings of one report section (one model, one convention) are one family: their
p-values are Holm-adjusted together. A difference is called a win only when the adjusted p < 0.05
and the cluster-bootstrap CI excludes 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loraocean.report.flags import flags
from loraocean.report.stats import Paired, compare, holm

MATCH = ("model", "target", "seed", "convention")


@dataclass
class Finding:
    a: str
    b: str
    factor: str          # "method" or "selection"
    result: Paired | None
    contexts: int        # matched evaluation pairs pooled
    majority: float | None = None  # majority-label rate of the paired examples (weighted by pairs)
    flagged_a: int = 0   # matched evaluations of `a` that are degenerate cells (see report.flags)
    flagged_b: int = 0
    family: int = 1      # findings Holm-adjusted together with this one

    def degenerate(self) -> str:
        """What the reader must know first when flagged cells are compared, else ''."""
        if not self.contexts or not (self.flagged_a or self.flagged_b):
            return ""
        if self.flagged_a == self.contexts and self.flagged_b == self.contexts:
            return ("**Between degenerate cells**: every evaluation on both sides answers like the "
                    "base model or gives one answer to >= 90% of examples; ")
        return (f"**Partly degenerate**: {self.flagged_a} of {self.contexts} {self.a} and "
                f"{self.flagged_b} of {self.contexts} {self.b} evaluations are flagged cells; ")

    def record(self) -> dict:
        """The finding as plain data (results.json)."""
        r = self.result
        numbers = {} if r is None else {
            "acc_a": r.acc_a, "acc_b": r.acc_b, "diff": r.diff, "ci_low": r.ci_low, "ci_high": r.ci_high,
            "p_value": r.p_value, "p_holm": r.p_adjusted, "mdd_80": r.mdd, "examples": r.examples,
            "paired_answers": r.n, "a_only": r.a_only, "b_only": r.b_only, "significant": r.significant}
        return {"a": self.a, "b": self.b, "factor": self.factor, "matched_evaluations": self.contexts,
                "holm_family": self.family, "flagged_a": self.flagged_a, "flagged_b": self.flagged_b,
                **numbers}

    def sentence(self) -> str:
        if self.result is None:
            return (f"{self.a} vs {self.b}: not measured on this run (no evaluations of both on the "
                    "same examples).")
        r = self.result
        maj = f", majority-label rate {100 * self.majority:.1f}%" if self.majority is not None else ""
        accs = f"{self.a} {100 * r.acc_a:.1f}% vs {self.b} {100 * r.acc_b:.1f}%{maj}; "
        adjusted = "" if r.p_adjusted is None else \
            f", Holm-adjusted over the {self.family} findings of this section p = {r.p_adjusted:.3g}"
        detectable = (f"at 80% power this comparison detects a true difference of {100 * r.mdd:.1f} "
                      "points" if r.mdd is not None else "the two never disagree, so no spread to "
                      "size a detectable difference")
        nums = (f"{accs}{_pp(r.diff)} points (95% cluster-bootstrap CI {_pp(r.ci_low)} to {_pp(r.ci_high)}; "
                f"exact sign-flip test over {r.examples} examples p = {r.p_value:.3g}{adjusted}; "
                f"{r.n} paired answers from {self.contexts} matched evaluation"
                f"{'s' if self.contexts != 1 else ''}; {r.a_only} won by {self.a} only, {r.b_only} by "
                f"{self.b} only; {detectable})")
        if r.significant:
            verb = "beat" if r.diff > 0 else "lost to"
            return f"{self.degenerate()}**{self.a} {verb} {self.b}** on this run: {nums}."
        return (f"{self.degenerate()}**No clear difference between {self.a} and {self.b}** on this run: "
                f"{nums}. The data cannot tell them apart at this size.")


def _pp(x: float) -> str:
    return f"{100 * x:+.1f}"


def pairs(df, preds, factor: str, a: str, b: str, match_also: str | None):
    """Pooled paired correctness (a, b, example keys), the matched (eval_key_a, eval_key_b,
    convention) and the majority-label rate of the paired examples."""
    keys = list(MATCH) + ([match_also] if match_also else [])
    side_a = df[df[factor] == a]
    side_b = df[df[factor] == b]
    joined = side_a.merge(side_b, on=keys, suffixes=("_a", "_b"))
    va, vb, ex, maj, matched = [], [], [], [], []
    by_eval = {k: g.set_index("example_id")["correct"] for k, g in preds.groupby(["eval_key", "convention"])}
    for _, row in joined.iterrows():
        pa = by_eval.get((row["eval_key_a"], row["convention"]))
        pb = by_eval.get((row["eval_key_b"], row["convention"]))
        if pa is None or pb is None:
            continue
        common = pa.index.intersection(pb.index)
        if not len(common):
            continue
        matched.append((row["eval_key_a"], row["eval_key_b"], row["convention"]))
        if row["majority_rate_a"] is not None and row["majority_rate_a"] == row["majority_rate_a"]:
            maj += [float(row["majority_rate_a"])] * len(common)
        va += list(pa[common])
        vb += list(pb[common])
        ex += [f"{row['model']}|{row['target']}|{i}" for i in common]
    majority = float(np.mean(maj)) if len(maj) == len(va) and maj else None
    return np.array(va, dtype=int), np.array(vb, dtype=int), ex, matched, majority


def finding(df, preds, factor: str, a: str, b: str, flagged: dict | None = None) -> Finding:
    match_also = "selection" if factor == "method" else "method"
    va, vb, ex, matched, majority = pairs(df, preds, factor, a, b, match_also)
    if not len(va):
        return Finding(a, b, factor, None, 0)
    flagged = flagged or {}
    return Finding(a, b, factor, compare(va, vb, ex), len(matched), majority,
                   flagged_a=sum((ka, conv) in flagged for ka, _, conv in matched),
                   flagged_b=sum((kb, conv) in flagged for _, kb, conv in matched))


SELECTION_QUESTIONS = [("selection", "manual", "ppl"), ("selection", "manual", "random")]


def questions(methods, order: list[str] | None = None) -> list[tuple[str, str, str]]:
    """The paper's four questions (its method comparisons are each method's `compared_with`), plus
    each trained method in `methods` vs the training-free baseline (`Method.baseline`: the same
    experts averaged, what a trained method must beat to be worth its training) when the run
    evaluated it; trained methods in `order` (the study's), then as given."""
    from loraocean.moe.registry import all_methods

    registered = all_methods()
    paper = [("method", m.name, other) for m in registered.values() for other in m.compared_with]
    present = [m for m in dict.fromkeys(list(order or []) + list(methods)) if m in set(methods)]
    baselines = [m for m in present if m in registered and registered[m].baseline]
    trained = [m for m in present if m in registered and registered[m].trains]
    return paper + SELECTION_QUESTIONS + [("method", m, b) for b in baselines for m in trained]


def findings(df, preds, convention: str, order: list[str] | None = None) -> list[Finding]:
    """The questions on this run's results (one convention); the measured ones form one Holm family.
    `order`: the study's method order (the order of the baseline questions)."""
    df = df[df["convention"] == convention]
    flagged = flags(df, preds)
    out = [finding(df, preds, factor, a, b, flagged)
           for factor, a, b in questions(df["method"].unique(), order)]
    measured = [f for f in out if f.result is not None]
    for f, p in zip(measured, holm([f.result.p_value for f in measured])):
        f.result.p_adjusted = p
        f.family = len(measured)
    return out


def _clearing_base(df) -> list:
    """Rows whose 95% CI lies wholly above the base model's on the same target, seed and
    convention (non-overlapping CIs: an effect the run shows without any test)."""
    from loraocean.moe.registry import base_model_name

    keys = ["model", "target", "seed", "convention"]
    name = base_model_name()
    base = df[df["method"] == name].set_index(keys)["ci_high"].to_dict()
    out = []
    for _, row in df[df["method"] != name].iterrows():
        top = base.get(tuple(row[k] for k in keys))
        if top is not None and row["ci_low"] is not None and row["ci_low"] > top:
            out.append(row)
    return out


def _cells(rows) -> list[str]:
    """Rows of `_clearing_base` as `method (selection) on target`, each once."""
    out = []
    for row in rows:
        sel = "" if row["selection"] == "none" else f" ({row['selection']})"
        out.append(f"{row['method']}{sel} on {row['target']}")
    return list(dict.fromkeys(out))


def above_base(df) -> list[str]:
    """The cells whose 95% CI lies wholly above the base model's (`_clearing_base`)."""
    return _cells(_clearing_base(df))


def can_show(df) -> str:
    """One plain line: which cells beat the base model with non-overlapping CIs and which methods
    did so nowhere, or that none did."""
    from loraocean.moe.registry import base_model_name

    rows = _clearing_base(df)
    if rows:
        cleared = {row["method"] for row in rows}
        base = base_model_name()
        missed = [m for m in dict.fromkeys(df["method"]) if m != base and m not in cleared]
        rest = (f" It shows no such effect for {', '.join(missed)}: their 95% CIs do not lie above the "
                "base model's on any target." if missed else "")
        return (f"This run shows a real effect: {', '.join(_cells(rows))} scored above the base model with "
                f"non-overlapping 95% CIs.{rest}")
    return ("This run shows no effect: no method's 95% CI lies above the base model's on any target, "
            "so its tables and findings exercise the pipeline and cannot support any claim about "
            "the methods.")
