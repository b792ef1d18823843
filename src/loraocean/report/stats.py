"""Paired statistics on per-example correctness (two systems scored on the same examples).

- McNemar's exact test: only the discordant pairs count; under "no difference" each discordant
  pair is equally likely to favour either system, so the count favouring A is Binomial(b + c, 1/2)
  and the two-sided p-value is min(1, 2 * P[X <= min(b, c)]).
- Paired bootstrap: resample examples (the same indices for both systems) and take the 2.5% and
  97.5% quantiles of the accuracy difference.

Written with numpy and `math.comb` (exact integers) so no extra dependency is needed; the tests
check both against scipy and hand-computed values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Paired:
    n: int            # paired examples
    acc_a: float
    acc_b: float
    diff: float       # acc_a - acc_b
    ci_low: float     # paired bootstrap 95% CI of diff
    ci_high: float
    a_only: int       # examples A got right and B wrong (McNemar b)
    b_only: int       # examples B got right and A wrong (McNemar c)
    p_value: float    # McNemar exact, two-sided

    @property
    def significant(self) -> bool:
        """p < 0.05 and a bootstrap CI that excludes 0 (both must agree before we say 'beat')."""
        return self.p_value < 0.05 and (self.ci_low > 0 or self.ci_high < 0)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2.0 * tail)


def paired_bootstrap(a, b, n_resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high) with the same resampled indices for both systems."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("paired_bootstrap needs two equally long, non-empty 1-d sequences")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_resamples, len(a)))
    diffs = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return float(a.mean() - b.mean()), float(low), float(high)


def compare(a, b, n_resamples: int = 2000, seed: int = 0) -> Paired:
    """Both tests on paired 0/1 correctness vectors."""
    a = np.asarray(a, dtype=int)
    b = np.asarray(b, dtype=int)
    diff, low, high = paired_bootstrap(a, b, n_resamples, seed)
    a_only = int(((a == 1) & (b == 0)).sum())
    b_only = int(((a == 0) & (b == 1)).sum())
    return Paired(n=len(a), acc_a=float(a.mean()), acc_b=float(b.mean()), diff=diff, ci_low=low,
                  ci_high=high, a_only=a_only, b_only=b_only, p_value=mcnemar_exact(a_only, b_only))
