"""Paired statistics against hand computations, scipy and statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from loraocean.report.stats import (by_example, cluster_bootstrap, compare, examples_needed, holm,
                                    mcnemar_exact, mdd, paired_bootstrap, sign_flip_exact)


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


def test_repeated_examples_count_once():
    """The same 10 examples paired in 3 strata: the test and the CI see 10 units, so p and CI equal
    those of one copy (the old pooled McNemar on 30 pairs gave p = 0.0075 here; one copy: 0.22)."""
    a = np.array([1, 1, 1, 1, 1, 1, 0, 1, 0, 1])
    b = np.array([0, 1, 0, 1, 0, 0, 0, 1, 1, 0])
    ex = [f"e{i}" for i in range(10)]
    pooled = compare(np.tile(a, 3), np.tile(b, 3), ex * 3)
    single = compare(a, b)
    assert (pooled.ci_low, pooled.ci_high) == pytest.approx((single.ci_low, single.ci_high))
    assert (pooled.a_only, pooled.b_only) == (3 * single.a_only, 3 * single.b_only)
    assert single.p_value == pytest.approx(mcnemar_exact(5, 1))
    assert pooled.p_value == pytest.approx(single.p_value)
    assert (pooled.n, pooled.examples, single.examples) == (30, 10, 10)
    assert math.isclose(pooled.diff, single.diff)


@pytest.mark.parametrize("b, c", [(3, 11), (20, 35), (1, 1), (0, 7), (40, 61), (0, 0)])
def test_sign_flip_with_one_stratum_is_mcnemar(b, c):
    k = [1] * b + [-1] * c + [0] * 17
    assert sign_flip_exact(k) == pytest.approx(mcnemar_exact(b, c), rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sign_flip_matches_scipy_exact_permutation_test(seed):
    """Examples in up to 3 strata (e.g. strategies): scipy's exact paired permutation test on
    per-example counts of right answers swaps A and B within an example, as ours does."""
    rng = np.random.default_rng(seed)
    strata = rng.integers(1, 4, size=12)
    right_a = rng.binomial(strata, 0.7)
    right_b = rng.binomial(strata, 0.4)
    ref = sps.permutation_test((right_a, right_b), lambda x, y: np.sum(x - y),
                               permutation_type="samples", n_resamples=np.inf,
                               alternative="two-sided").pvalue
    assert sign_flip_exact(right_a - right_b) == pytest.approx(ref, rel=1e-9)


def test_sign_flip_hand_value():
    # k = (2, 1, 1): signed sums over 8 sign patterns: 4, 2, 2, 0, 0, -2, -2, -4; |T| >= 4 in 2 of 8
    assert sign_flip_exact([2, 1, 1]) == pytest.approx(2 / 8)
    assert sign_flip_exact([2, -1, 1]) == pytest.approx(6 / 8)  # observed 2: |T| >= 2 in 6 of 8


def test_by_example_and_cluster_bootstrap_by_hand():
    a = [1, 1, 0, 1, 0]
    b = [0, 1, 1, 0, 0]
    k, m = by_example(a, b, ["x", "y", "x", "x", "z"])
    assert k.tolist() == [1, 0, 0] and m.tolist() == [3, 1, 1]
    diff, low, high = cluster_bootstrap(k, m, n_resamples=300, seed=5)
    assert diff == pytest.approx(1 / 5)
    idx = np.random.default_rng(5).integers(0, 3, size=(300, 3))
    d = [k[i].sum() / m[i].sum() for i in idx]
    assert (low, high) == pytest.approx(tuple(np.quantile(d, [0.025, 0.975])))


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.005, 0.5, 0.04]
    assert holm(p) == pytest.approx(multipletests(p, method="holm")[1].tolist())
    # by hand: sorted 0.005, 0.01, 0.03 -> 6*0.005, 5*0.01, 4*0.03
    assert holm(p)[3] == pytest.approx(0.03) and holm(p)[0] == pytest.approx(0.05)
    assert holm(p)[2] == pytest.approx(0.12)


def test_minimum_detectable_difference_matches_statsmodels_power():
    from statsmodels.stats.power import NormalIndPower

    # one-sample z-test (ratio=0): standardized effect found with 80% power at alpha 0.05
    for n, sd in [(80, 0.5), (960, 0.45), (25, 1.0)]:
        effect = NormalIndPower().solve_power(nobs1=n, alpha=0.05, power=0.8, ratio=0)
        assert mdd(sd, n) == pytest.approx(effect * sd, rel=1e-4)
    # by hand: (1.959964 + 0.841621) * 0.5 / sqrt(100)
    assert mdd(0.5, 100) == pytest.approx(2.801585 * 0.05, rel=1e-6)
    assert examples_needed(0.05, 0.5) == math.ceil((2.801585 * 0.5 / 0.05) ** 2)
    assert mdd(0.5, examples_needed(0.05, 0.5)) <= 0.05


def test_compare_reports_the_detectable_difference_of_its_examples():
    a = [1, 0, 1, 1, 0, 1, 1, 0]
    b = [0, 0, 1, 0, 1, 1, 0, 0]
    r = compare(a, b)
    d = np.array(a) - np.array(b)
    assert r.mdd == pytest.approx(mdd(d.std(ddof=1), 8))
    assert compare(a, a).mdd is None  # never disagree: no spread to size it with
