"""Paired statistics on per-example correctness (two systems scored on the same examples).

The unit is the test example. When a comparison pools several matched evaluations (selection
strategies, seeds: the strata), an example appears once per stratum; it still counts as one unit:

- Sign-flip permutation test, exact: for each example, k = sum over its strata of (A right - B
  right). Under "no difference" A and B are exchangeable on every example, so each k keeps or
  flips its sign with probability 1/2, independently across examples. The p-value is
  P[|sum of signed k| >= |observed sum|], computed exactly by convolving the (binomial) null of
  each distinct |k|. With one stratum, k is -1, 0 or +1 and this is McNemar's exact test.
- Cluster bootstrap CI: resample examples with all their strata and take the 2.5% and 97.5%
  quantiles of the pooled difference sum(k) / sum(pairs).
- Holm's step-down correction across a family of p-values.
- Minimum detectable difference at 80% power: the true difference a two-sided test at level
  alpha finds with that power, for n examples whose per-example differences have spread sd
  (normal approximation: (z[1 - alpha/2] + z[power]) * sd / sqrt(n)).

Written with numpy and the standard library so no extra runtime dependency is needed; the tests
check each against scipy, statsmodels and hand-computed values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass
class Paired:
    n: int            # paired answers (examples x strata)
    acc_a: float
    acc_b: float
    diff: float       # acc_a - acc_b over all paired answers
    ci_low: float     # cluster bootstrap 95% CI of diff
    ci_high: float
    a_only: int       # answers A got right and B wrong
    b_only: int       # answers B got right and A wrong
    p_value: float    # exact sign-flip test over examples, two-sided
    examples: int = 0          # distinct examples (the test's units)
    mdd: float | None = None   # minimum detectable difference at 80% power (None: no spread)
    p_adjusted: float | None = None  # Holm-adjusted p within the report's family, when set

    @property
    def significant(self) -> bool:
        """p < 0.05 (Holm-adjusted when adjusted) and a bootstrap CI that excludes 0."""
        p = self.p_value if self.p_adjusted is None else self.p_adjusted
        return p < 0.05 and (self.ci_low > 0 or self.ci_high < 0)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2.0 * tail)


def sign_flip_exact(k) -> float:
    """Exact two-sided p-value of the paired sign-flip test on integer per-example differences."""
    k = np.asarray(k, dtype=np.int64)
    observed = abs(int(k.sum()))
    values, counts = np.unique(np.abs(k[k != 0]), return_counts=True)
    null = np.ones(1)  # distribution of the signed sum over the grid -K..K, built up value by value
    for v, c in zip(values.tolist(), counts.tolist()):
        part = np.zeros(2 * c * v + 1)  # c copies of +-v: v * (2j - c), j ~ Binomial(c, 1/2)
        part[::2 * v] = [math.comb(c, j) / 2 ** c for j in range(c + 1)]
        null = np.convolve(null, part)
    total = (len(null) - 1) // 2
    grid = np.abs(np.arange(-total, total + 1))
    return float(min(1.0, null[grid >= observed].sum()))


def by_example(a, b, examples=None) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct example: (k = sum of A right - B right over its strata, number of strata)."""
    d = np.asarray(a, dtype=np.int64) - np.asarray(b, dtype=np.int64)
    if examples is None:
        return d, np.ones(len(d), dtype=np.int64)
    order = {e: i for i, e in enumerate(dict.fromkeys(examples))}
    idx = np.array([order[e] for e in examples], dtype=np.int64)
    return (np.bincount(idx, weights=d, minlength=len(order)).round().astype(np.int64),
            np.bincount(idx, minlength=len(order)))


def cluster_bootstrap(k, m, n_resamples: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:
    """(sum(k) / sum(m), low, high): resample examples with all their strata."""
    k = np.asarray(k, dtype=float)
    m = np.asarray(m, dtype=float)
    if k.shape != m.shape or k.ndim != 1 or len(k) == 0:
        raise ValueError("cluster_bootstrap needs two equally long, non-empty 1-d sequences")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(k), size=(n_resamples, len(k)))
    diffs = k[idx].sum(axis=1) / m[idx].sum(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return float(k.sum() / m.sum()), float(low), float(high)


def paired_bootstrap(a, b, n_resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high) with the same resampled indices for both systems."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired_bootstrap needs two equally long, non-empty 1-d sequences")
    return cluster_bootstrap(a - b, np.ones(len(a)), n_resamples, seed, level)


def mdd(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference a two-sided level-`alpha` test over `n` examples whose per-example
    differences have standard deviation `sd` detects with probability `power` (normal approx.)."""
    z = NormalDist()
    return (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * sd / math.sqrt(n)


def examples_needed(difference: float, sd: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Examples a paired comparison needs to detect `difference` (the inverse of `mdd`)."""
    z = NormalDist()
    return math.ceil(((z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * sd / difference) ** 2)


def holm(p_values) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def compare(a, b, examples=None, n_resamples: int = 2000, seed: int = 0) -> Paired:
    """Both tests on paired 0/1 correctness vectors; `examples` names each pair's example (pairs
    sharing an example are its strata), default: every pair its own example."""
    a = np.asarray(a, dtype=int)
    b = np.asarray(b, dtype=int)
    k, m = by_example(a, b, examples)
    diff, low, high = cluster_bootstrap(k, m, n_resamples, seed)
    per_example = k / m
    sd = float(per_example.std(ddof=1)) if len(k) > 1 else 0.0
    a_only = int(((a == 1) & (b == 0)).sum())
    b_only = int(((a == 0) & (b == 1)).sum())
    return Paired(n=len(a), acc_a=float(a.mean()), acc_b=float(b.mean()), diff=diff, ci_low=low,
                  ci_high=high, a_only=a_only, b_only=b_only, p_value=sign_flip_exact(k),
                  examples=len(k), mdd=mdd(sd, len(k)) if sd > 0 else None)
