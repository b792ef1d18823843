"""The claim test with seeds and examples as units (`report.stats.claim_test`), checked by
simulating whole studies, against statsmodels' mixed model and by hand, and the design's power
(`report.stats.Design`) against the simulated power.

A simulated study: for each target, n test examples with difficulties p_i ~ U(0.25, 0.75); each
arm is fitted S times per cell, seed s shifting its accuracy by u_s ~ N(0, spread); an answer is
right with probability p_i + u_s (+ the arm's true difference). Thousands of studies run in one
vectorised call of the production function.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from loraocean.report.stats import (Cell, Design, arm_moments, claim_test, holm_level, needed,
                                    power_claim, seed_variance)

# (targets, matched levels per target, seeds per fit, test examples per target)
SHAPES = [(1, 1, 2, 80), (1, 1, 3, 300), (2, 3, 3, 80), (4, 1, 2, 200), (2, 3, 2, 500)]
SPREADS = [0.0, 0.01, 0.02, 0.03, 0.05]  # seed-to-seed sd of an arm's accuracy: 0 to 5 points
E_P = 0.5 - (0.5 ** 2 + 1 / 48)          # E[p(1 - p)] for p ~ U(0.25, 0.75): binomial noise per answer


def simulate(studies, targets, levels, seeds, n, spread, delta=0.0, em=0.0, rng=None):
    """One `claim_test` over `studies` simulated studies (batch axis 0). `em`: sd of a per-example
    method effect with population mean 0 (A better on some examples, B on others)."""
    cells = []
    for g in range(targets):
        p = rng.uniform(0.25, 0.75, size=(studies, 1, n))
        d = rng.normal(0.0, em, size=(studies, 1, n)) if em else 0.0
        for _ in range(levels):
            ua = rng.normal(0.0, spread, size=(studies, seeds, 1))
            ub = rng.normal(0.0, spread, size=(studies, seeds, 1))
            a = rng.random((studies, seeds, n)) < np.clip(p + ua + (delta + d) / 2, 0, 1)
            b = rng.random((studies, seeds, n)) < np.clip(p + ub - (delta + d) / 2, 0, 1)
            cells.append(Cell(f"t{g}", 1 / (targets * levels), a, b))
    return claim_test(cells)


def test_arms_that_differ_only_by_seed_come_out_equal_at_the_stated_rate():
    """25 designs x 100 studies = 2,500 studies whose two arms differ only by seed, seed spreads 0
    to 5 points: false-positive rate at most 0.06 and CI coverage at least 0.93 overall, no design
    far off (the old per-example test, which pooled seeds as strata of an example, declared a
    difference 29-50% of the time at a 3-point spread)."""
    rng = np.random.default_rng(20261201)
    rejected, covered, total = 0, 0, 0
    for shape in SHAPES:
        for spread in SPREADS:
            r = simulate(100, *shape, spread, rng=rng)
            rejected += int((r.p_value < 0.05).sum())
            covered += int(((r.ci_low <= 0) & (r.ci_high >= 0)).sum())
            total += 100
            assert (r.p_value < 0.05).mean() <= 0.15, (shape, spread)  # 100 studies: binomial slack
    print(f"\n{total} null studies: false-positive rate {rejected / total:.3f}, CI coverage {covered / total:.3f}")
    assert total >= 2000
    assert rejected / total <= 0.06
    assert covered / total >= 0.93


def test_a_method_by_example_effect_keeps_the_rate_and_the_coverage():
    """Arms equal on average but each better on its own examples (sd 15 points per example), and
    the same with a true 5-point difference: the example part of the variance carries it."""
    rng = np.random.default_rng(7)
    null = simulate(800, 2, 3, 3, 80, 0.02, em=0.15, rng=rng)
    assert (null.p_value < 0.05).mean() <= 0.07
    alt = simulate(800, 2, 3, 3, 80, 0.02, delta=0.05, em=0.15, rng=rng)
    assert ((alt.ci_low <= 0.05) & (alt.ci_high >= 0.05)).mean() >= 0.93


@pytest.mark.parametrize("shape, spread", [((2, 3, 3, 80), 0.02), ((4, 1, 2, 200), 0.0),
                                           ((2, 3, 2, 500), 0.03), ((3, 3, 3, 150), 0.03)])
def test_power_against_a_true_five_point_difference(shape, spread):
    """Simulated power against 5 points vs the noncentral-t power of the same variance at the seed
    part's degrees of freedom (the formula `Design` uses); both printed."""
    targets, levels, seeds, n = shape
    rng = np.random.default_rng(11)
    r = simulate(1500, *shape, spread, delta=0.05, rng=rng)
    simulated = float((r.p_value < 0.05).mean())
    cells = targets * levels
    var = 2 * (spread ** 2 + E_P / n) / (seeds * cells)  # seed accuracies carry their binomial noise
    predicted = power_claim(0.05, math.sqrt(var), math.sqrt(var), 2 * cells * (seeds - 1), 0.05)
    print(f"\n{shape}, spread {spread}: power against 5 points {simulated:.3f} (formula {predicted:.3f})")
    assert simulated == pytest.approx(predicted, abs=0.05)
    coverage = ((r.ci_low <= 0.05) & (r.ci_high >= 0.05)).mean()
    assert coverage >= 0.93


def test_seed_variance_is_the_mixed_model_variance_component():
    """On a balanced seeds x examples matrix the moment estimate equals REML's seed variance
    component (statsmodels MixedLM, crossed seed and example effects)."""
    import warnings

    import pandas as pd
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(3)
    s, n = 5, 40
    p = rng.uniform(0.2, 0.8, n)
    y = (rng.random((s, n)) < np.clip(p[None] + rng.normal(0, 0.15, s)[:, None], 0, 1)).astype(float)
    data = pd.DataFrame([(i, j, y[i, j], 1) for i in range(s) for j in range(n)], columns=["seed", "ex", "y", "g"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.mixedlm("y ~ 1", data, groups="g", re_formula="0",
                          vc_formula={"seed": "0 + C(seed)", "ex": "0 + C(ex)"}).fit(reml=True)
    names = list(fit.model.exog_vc.names)
    assert float(seed_variance(y)) > 0
    assert float(seed_variance(y)) == pytest.approx(fit.vcomp[names.index("seed")], rel=1e-3)
    rows, resid = arm_moments(y)
    assert float(resid) == pytest.approx(fit.scale, rel=1e-3)
    assert float(rows) == pytest.approx(np.var(y.mean(1), ddof=1))


def test_claim_test_by_hand():
    """One cell, two seeds each, four examples: every number written out."""
    a = np.array([[1, 1, 0, 1], [1, 0, 0, 1]], dtype=float)
    b = np.array([[0, 1, 0, 0], [1, 1, 0, 0]], dtype=float)
    r = claim_test([Cell("t", 1.0, a, b)])
    assert r.diff == pytest.approx(a.mean() - b.mean())  # 0.625 - 0.375
    # seed part: pooled var of the seed accuracies (0.75, 0.5 | 0.25, 0.5) over 2 df, times 1/2 + 1/2
    rows_var = (np.var([0.75, 0.5], ddof=1) + np.var([0.25, 0.5], ddof=1)) / 2
    assert r.seed_var == pytest.approx(rows_var)
    # example part: z = seed-mean of a - of b per example, minus the residual noise already counted
    z = a.mean(0) - b.mean(0)
    resid = (arm_moments(a)[1] + arm_moments(b)[1]) / 2
    assert r.example_var == pytest.approx(max(np.var(z, ddof=1) - resid, 0) / 4)
    from scipy import stats as sps

    se = math.sqrt(r.seed_var + r.example_var)
    assert r.se == pytest.approx(se)
    if r.example_var == 0:  # only the seed part: a t test on the seed accuracies, 2 df
        assert r.df == pytest.approx(2)
        assert r.p_value == pytest.approx(2 * sps.t.sf(abs(r.diff) / se, 2))
    assert (r.ci_low, r.ci_high) == pytest.approx((r.diff - sps.t.ppf(0.975, r.df) * se,
                                                   r.diff + sps.t.ppf(0.975, r.df) * se))


def test_one_seed_leaves_the_seed_variance_unknown():
    a = np.ones((1, 10))
    b = np.zeros((1, 10))
    r = claim_test([Cell("t", 1.0, a, b)])
    assert not r.seeds_known and not r.significant


def test_cells_of_one_target_share_their_examples():
    """Two strategies on the same examples with the same per-example differences: summed per
    example as one group (a shared method x example effect counts fully), not as two independent
    halves; the seed x example noise of each cell comes off once per cell."""
    rng = np.random.default_rng(0)
    a = (rng.random((3, 50)) < 0.6).astype(float)
    b = (rng.random((3, 50)) < 0.5).astype(float)
    z = a.mean(0) - b.mean(0)
    resid = (arm_moments(a)[1] + arm_moments(b)[1]) / 2
    noise = 2 * 0.5 ** 2 * (1 / 3 + 1 / 3)  # sum over the 2 cells of w^2 (1/S_a + 1/S_b)
    one = claim_test([Cell("t", 0.5, a, b), Cell("t", 0.5, a, b)])
    assert one.example_var == pytest.approx(max(np.var(z, ddof=1) - noise * resid, 0) / 50)
    apart = claim_test([Cell("t", 0.5, a, b), Cell("u", 0.5, a, b)])
    half = max(np.var(0.5 * z, ddof=1) - noise / 2 * resid, 0) / 50
    assert apart.example_var == pytest.approx(2 * half)
    assert one.example_var > 1.9 * apart.example_var
    assert one.diff == apart.diff and one.seed_var == apart.seed_var


def test_design_detectable_difference_and_what_it_needs():
    d = Design(cells=6, groups=2, seeds=3, examples=80, seed_sd=0.03, discordance=0.2)
    level = holm_level(0.05, 4)
    mdd = d.mdd(level)
    assert d.power(mdd, level) == pytest.approx(0.8, abs=1e-4)
    # more examples and seeds each shrink it; one seed cannot judge a claim
    from dataclasses import replace

    assert replace(d, examples=800).mdd(level) < mdd and replace(d, seeds=6).mdd(level) < mdd
    assert math.isinf(replace(d, seeds=1).mdd(level))
    # by hand at large df: V = 2 sd^2 / (S cells) + psi / (groups n), McNemar's psi - delta^2 under H1
    big = Design(cells=60, groups=20, seeds=30, examples=2000, seed_sd=0.03, discordance=0.2)
    v0 = 2 * 0.03 ** 2 / (30 * 60) + 0.2 / (20 * 2000)
    delta = big.mdd(0.05)
    v1 = 2 * 0.03 ** 2 / (30 * 60) + (0.2 - delta ** 2) / (20 * 2000)
    assert delta == pytest.approx(1.959964 * math.sqrt(v0) + 0.841621 * math.sqrt(v1), rel=2e-3)
    wide = replace(d, examples=400)
    n, s = needed(wide, 0.06, level)
    assert replace(wide, examples=n).power(0.06, level) >= 0.8 > replace(wide, examples=n - 1).power(0.06, level)
    assert replace(wide, seeds=s).power(0.06, level) >= 0.8 > replace(wide, seeds=s - 1).power(0.06, level)
    # a seed floor no number of examples gets under
    assert needed(replace(d, cells=1, seeds=2, seed_sd=0.05), 0.01, level)[0] is None
