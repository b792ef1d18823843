"""The plain-language findings: did LoRAMoE beat Rocket and X-LoRA, did Manual selection beat PPL
and Random, and (when the run has it) did each trained LoRA-MoE method beat the uniform average of
the same experts, on this run, as measured.

Each comparison pairs evaluations that differ only in the compared factor (same model, target,
seed, convention, and the same selection for a method comparison / the same method for a
selection comparison), joins their per-example correctness on the example id, and pools the pairs.
McNemar's exact test runs on the pooled pairs; the bootstrap CI resamples distinct examples (an
example that appears in several pairs moves as one), so repeated examples do not narrow the CI.
A difference is called a win only when the CI excludes 0 and p < 0.05.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loraocean.report.stats import Paired, compare, mcnemar_exact, paired_bootstrap

MATCH = ("model", "target", "seed", "convention")


@dataclass
class Finding:
    a: str
    b: str
    factor: str          # "method" or "selection"
    result: Paired | None
    contexts: int        # matched evaluation pairs pooled
    majority: float | None = None  # majority-label rate of the paired examples (weighted by pairs)

    def sentence(self) -> str:
        if self.result is None:
            return (f"{self.a} vs {self.b}: not measured on this run (no evaluations of both on the "
                    "same examples).")
        r = self.result
        maj = f", majority-label rate {100 * self.majority:.1f}%" if self.majority is not None else ""
        accs = f"{self.a} {100 * r.acc_a:.1f}% vs {self.b} {100 * r.acc_b:.1f}%{maj}; "
        nums = (f"{accs}{_pp(r.diff)} points (95% CI {_pp(r.ci_low)} to {_pp(r.ci_high)}; McNemar exact "
                f"p = {r.p_value:.3g}; {r.n} paired answers from {self.contexts} matched evaluation"
                f"{'s' if self.contexts != 1 else ''}; {r.a_only} won by {self.a} only, {r.b_only} by "
                f"{self.b} only)")
        if r.significant:
            verb = "beat" if r.diff > 0 else "lost to"
            return f"**{self.a} {verb} {self.b}** on this run: {nums}."
        return (f"**No clear difference between {self.a} and {self.b}** on this run: {nums}. "
                "The data cannot tell them apart at this size.")


def _pp(x: float) -> str:
    return f"{100 * x:+.1f}"


def pairs(df, preds, factor: str, a: str, b: str, match_also: str | None):
    """Pooled paired correctness (a, b, example keys) and the number of matched evaluations."""
    keys = list(MATCH) + ([match_also] if match_also else [])
    side_a = df[df[factor] == a]
    side_b = df[df[factor] == b]
    joined = side_a.merge(side_b, on=keys, suffixes=("_a", "_b"))
    va, vb, ex, maj = [], [], [], []
    contexts = 0
    by_eval = {k: g.set_index("example_id")["correct"] for k, g in preds.groupby(["eval_key", "convention"])}
    for _, row in joined.iterrows():
        pa = by_eval.get((row["eval_key_a"], row["convention"]))
        pb = by_eval.get((row["eval_key_b"], row["convention"]))
        if pa is None or pb is None:
            continue
        common = pa.index.intersection(pb.index)
        if not len(common):
            continue
        contexts += 1
        if row["majority_rate_a"] is not None and row["majority_rate_a"] == row["majority_rate_a"]:
            maj += [float(row["majority_rate_a"])] * len(common)
        va += list(pa[common])
        vb += list(pb[common])
        ex += [f"{row['model']}|{row['target']}|{i}" for i in common]
    majority = float(np.mean(maj)) if len(maj) == len(va) and maj else None
    return np.array(va, dtype=int), np.array(vb, dtype=int), ex, contexts, majority


def compare_pooled(a, b, examples, seed: int = 0) -> Paired:
    """McNemar on all pairs; bootstrap CI over distinct examples (their mean correctness)."""
    a_only = int(((a == 1) & (b == 0)).sum())
    b_only = int(((a == 0) & (b == 1)).sum())
    order = {e: i for i, e in enumerate(dict.fromkeys(examples))}
    idx = np.array([order[e] for e in examples])
    counts = np.bincount(idx)
    ma = np.bincount(idx, weights=a) / counts
    mb = np.bincount(idx, weights=b) / counts
    _, low, high = paired_bootstrap(ma, mb, seed=seed)
    return Paired(n=len(a), acc_a=float(a.mean()), acc_b=float(b.mean()), diff=float(a.mean() - b.mean()),
                  ci_low=low, ci_high=high, a_only=a_only, b_only=b_only,
                  p_value=mcnemar_exact(a_only, b_only))


def finding(df, preds, factor: str, a: str, b: str) -> Finding:
    match_also = "selection" if factor == "method" else "method"
    va, vb, ex, contexts, majority = pairs(df, preds, factor, a, b, match_also)
    if not len(va):
        return Finding(a, b, factor, None, 0)
    if len(set(ex)) == len(ex):
        result = compare(va, vb)
    else:
        result = compare_pooled(va, vb, ex)
    return Finding(a, b, factor, result, contexts, majority)


QUESTIONS = [("method", "loramoe", "rocket"), ("method", "loramoe", "xlora"),
             ("selection", "manual", "ppl"), ("selection", "manual", "random")]
# The training-free baseline every trained method must beat to be worth its training: the same
# experts averaged. Asked only when the run evaluated it.
BASELINE = "uniform"
TRAINED = ("loramoe", "xlora", "rocket")


def questions(methods) -> list[tuple[str, str, str]]:
    """The paper's four questions, plus trained method vs `BASELINE` for those in `methods`."""
    methods = set(methods)
    extra = [("method", m, BASELINE) for m in TRAINED if m in methods] if BASELINE in methods else []
    return QUESTIONS + extra


def findings(df, preds, convention: str) -> list[Finding]:
    """The questions on this run's results (one convention)."""
    df = df[df["convention"] == convention]
    return [finding(df, preds, factor, a, b) for factor, a, b in questions(df["method"].unique())]
