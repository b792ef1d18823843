"""Paired statistics against hand computations and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from loraocean.report.findings import compare_pooled
from loraocean.report.stats import compare, mcnemar_exact, paired_bootstrap


def test_mcnemar_exact_hand_values():
    # b=0, c=5: n=5, P[X<=0] = 1/32, two-sided 2/32
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    # b=2, c=8: n=10, P[X<=2] = (1 + 10 + 45) / 1024
    assert mcnemar_exact(2, 8) == pytest.approx(2 * 56 / 1024)
    assert mcnemar_exact(8, 2) == mcnemar_exact(2, 8)
    # equal counts: the two-sided p-value is capped at 1
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 0) == 1.0


@pytest.mark.parametrize("b, c", [(3, 11), (20, 35), (1, 1), (0, 7), (40, 61)])
def test_mcnemar_matches_scipy_binomial_test(b, c):
    assert mcnemar_exact(b, c) == pytest.approx(sps.binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


def test_paired_bootstrap_is_the_quantile_of_resampled_differences():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, 50)
    b = rng.integers(0, 2, 50)
    diff, low, high = paired_bootstrap(a, b, n_resamples=500, seed=3)
    assert diff == pytest.approx(a.mean() - b.mean())
    # the same computation written out: same index draws for both systems
    idx = np.random.default_rng(3).integers(0, 50, size=(500, 50))
    d = np.array([a[i].mean() - b[i].mean() for i in idx])
    assert (low, high) == pytest.approx(tuple(np.quantile(d, [0.025, 0.975])))


def test_paired_bootstrap_identical_systems_has_zero_width():
    a = [1, 0, 1, 1, 0]
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0)


def test_compare_counts_and_verdict():
    # 30 examples: A right on 25, B right on 10; discordant: A-only 16, B-only 1
    a = [1] * 9 + [1] * 16 + [0] * 1 + [0] * 4
    b = [1] * 9 + [0] * 16 + [1] * 1 + [0] * 4
    r = compare(a, b)
    assert (r.n, r.a_only, r.b_only) == (30, 16, 1)
    assert r.acc_a == pytest.approx(25 / 30) and r.acc_b == pytest.approx(10 / 30)
    assert r.p_value == pytest.approx(2 * (1 + 17) / 2 ** 17)
    assert r.significant and r.ci_low > 0
    tie = compare([1, 0, 1, 0], [0, 1, 0, 1])
    assert not tie.significant and tie.p_value == 1.0


def test_pooled_bootstrap_resamples_examples_not_pairs():
    """The same 10 examples paired 3 times: McNemar sees 30 pairs, the CI only 10 examples, so
    it equals the CI of one copy (cluster means are the per-example values)."""
    a = np.array([1, 1, 1, 1, 1, 1, 0, 1, 0, 1])
    b = np.array([0, 1, 0, 1, 0, 0, 0, 1, 1, 0])
    ex = [f"e{i}" for i in range(10)]
    pooled = compare_pooled(np.tile(a, 3), np.tile(b, 3), ex * 3)
    single = compare(a, b)
    assert (pooled.ci_low, pooled.ci_high) == pytest.approx((single.ci_low, single.ci_high))
    assert (pooled.a_only, pooled.b_only) == (3 * single.a_only, 3 * single.b_only)
    assert pooled.p_value == pytest.approx(mcnemar_exact(15, 3))
    assert math.isclose(pooled.diff, single.diff)
