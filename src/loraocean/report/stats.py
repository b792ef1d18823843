"""Paired statistics on per-example correctness.

Two questions, two tools:

1. **A claim about methods** (`claim_test`): does method A beat method B, as methods, on this
   study's (model, target) cells? Both training randomness and the test examples are units. Each
   cell holds, per arm, a 0/1 matrix seeds x examples (the arm's fits with different seeds, scored
   on the same examples). The claim's difference D = sum over cells of w_c * (mean accuracy of A -
   mean accuracy of B), w_c giving every (model, target) the same weight. Its variance has two
   parts, estimated by the method of moments for crossed random effects (seeds x examples, the
   ANOVA estimators, which equal REML on a balanced design):
   - seeds: per arm and cell, sigma_u^2 = var over seeds of the seed accuracies - MS_residual / n
     (the seed-to-seed variance of a method's accuracy, cleaned of the binomial noise the row
     means carry; at least 0), entering as w_c^2 * sigma_u^2 / S;
   - examples: per target, z_i = sum over the target's cells of w_c * (seed-mean of A - seed-mean
     of B) on example i; var over examples of z / n. Cells of one target share their examples, so
     they are summed per example before the variance (a method x example effect shared by models
     or selection strategies is counted once, not as independent).
   The arms' seeds are treated as independent (a seed shared by both arms, e.g. the same random
   expert draw, only makes them positively correlated, so this is conservative). t = D / sqrt(V)
   with Satterthwaite's degrees of freedom over those components; the 95% CI is D +- t * sqrt(V).
   An arm with one seed borrows the seed variance pooled over the claim's arms that have several;
   with no arm of two seeds the seed variance is unknown and the claim cannot be judged.
   Targets are fixed: the claim is about the average over this study's targets.
   `tests/test_report_power.py` simulates thousands of studies whose arms differ only by seed.
2. **Two trained models** (`compare`): exact sign-flip test and cluster bootstrap over examples.
   It asks whether two particular trained models differ on this test distribution, not whether two
   methods do (a second seed of the same method "differs" often); the report uses it for nothing
   that reads as a verdict on methods.

And power before compute (`Design`, `mdd_claim`, `power_claim`): the smallest difference a claim
detects with 80% power at the level it is judged (Holm over the study's claims: alpha / m for the
first), from the variance above with McNemar's paired-binary form for the examples (Connor 1987:
spread sqrt(psi) under the null, sqrt(psi - delta^2) under the alternative, psi the share of
examples two runs answer differently) and t quantiles at Satterthwaite's degrees of freedom.

Written with numpy and scipy.stats; the tests check each against statsmodels, scipy and
hand-computed values.
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


# --- claims: seeds and examples as units ------------------------------------------------------------

SEED_SD = 0.03      # design assumption: seed-to-seed sd of a fitted method's accuracy (3 points)
DISCORDANCE = 0.20  # design assumption: share of test examples two runs answer differently


@dataclass
class Cell:
    """One (model, target, matched level) of a claim: each arm's 0/1 answers, seeds x examples,
    on the same examples (columns in the same order). `group`: cells sharing their test examples
    (the target); `weight`: the cell's share of the claim (the weights of a claim sum to 1)."""
    group: str
    weight: float
    a: np.ndarray    # (..., seeds of A, examples)
    b: np.ndarray    # (..., seeds of B, examples)


@dataclass
class ClaimTest:
    diff: float | np.ndarray       # D: weighted mean accuracy of A - of B
    se: float | np.ndarray         # sqrt(V)
    df: float | np.ndarray         # Satterthwaite degrees of freedom
    p_value: float | np.ndarray    # two-sided t test
    ci_low: float | np.ndarray     # 95% CI of D
    ci_high: float | np.ndarray
    seed_var: float | np.ndarray   # the seed part of V
    example_var: float | np.ndarray  # the example part of V
    seeds_known: bool = True       # False: no arm had two seeds, the seed part is missing
    p_adjusted: float | None = None  # Holm-adjusted within the study's claims, when set

    @property
    def significant(self) -> bool:
        """Adjusted (else raw) p < 0.05 with the seed variance known."""
        p = self.p_value if self.p_adjusted is None else self.p_adjusted
        return bool(self.seeds_known and p < 0.05)


def arm_moments(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(variance of the seed accuracies, residual mean square) of one arm's seeds x examples 0/1
    matrix (..., S, n), crossed seeds x examples; nan with one seed. The first estimates
    sigma_u^2 + sigma_r^2 / n, the second sigma_r^2 (the seed x example noise)."""
    y = np.asarray(y, dtype=float)
    s, n = y.shape[-2:]
    if s < 2:
        return np.full(y.shape[:-2], np.nan), np.full(y.shape[:-2], np.nan)
    rows = y.mean(-1)
    cols = y.mean(-2)
    grand = rows.mean(-1)
    resid = y - rows[..., :, None] - cols[..., None, :] + grand[..., None, None]
    return rows.var(-1, ddof=1), (resid ** 2).sum((-2, -1)) / ((s - 1) * max(n - 1, 1))


def seed_variance(y: np.ndarray) -> np.ndarray:
    """sigma_u^2 of one arm: the seed-to-seed variance of its accuracy, cleaned of the binomial
    noise its seed accuracies carry (method of moments, at least 0); nan with one seed."""
    rows, resid = arm_moments(y)
    return np.maximum(rows - resid / np.shape(y)[-1], 0.0)


def satterthwaite(parts: list[tuple[np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(sum of the variance parts, Satterthwaite's degrees of freedom) of independent parts
    (variance, its degrees of freedom); inf degrees of freedom when every part is 0."""
    total = np.asarray(sum(np.asarray(v, dtype=float) for v, _ in parts), dtype=float)
    denom = np.asarray(sum(np.asarray(v, dtype=float) ** 2 / d for v, d in parts if d > 0), dtype=float)
    safe = np.where(denom > 0, denom, 1.0)
    return total, np.where(denom > 0, total ** 2 / safe, np.inf)


def claim_test(cells: list[Cell], level: float = 0.95) -> ClaimTest:
    """The difference of two methods over a claim's cells with seeds and examples as units (see the
    module docstring). Works elementwise over leading batch axes of the cells' matrices (the power
    simulation runs thousands of studies in one call)."""
    from scipy import stats as sps

    if not cells:
        raise ValueError("claim_test needs at least one cell")
    diff = sum(c.weight * (np.asarray(c.a, float).mean((-2, -1)) - np.asarray(c.b, float).mean((-2, -1)))
               for c in cells)
    # the seed part: the variance of the seed accuracies (seed effect + its binomial noise),
    # pooled over every arm of every cell with several seeds (degrees of freedom: sum of S - 1),
    # times sum of w_c^2 / S over the arms; arms with one seed use the pooled value
    arms = [(c, y, np.shape(y)[-2], np.shape(y)[-1]) for c in cells for y in (c.a, c.b)]
    seed_df = sum(s - 1 for _, _, s, _ in arms)
    seeds_known = seed_df > 0
    moments = [arm_moments(y) for _, y, _, _ in arms]
    if seeds_known:
        rows = sum((s - 1) * np.nan_to_num(m[0]) for (_, _, s, _), m in zip(arms, moments)) / seed_df
        resid_df = sum((s - 1) * (n - 1) for _, _, s, n in arms)
        resid = sum((s - 1) * (n - 1) * np.nan_to_num(m[1]) for (_, _, s, n), m in zip(arms, moments)) / resid_df
        seed_var = rows * sum(c.weight ** 2 / s for c, _, s, _ in arms)
        parts = [(seed_var, seed_df)]
    else:  # one seed everywhere: nothing tells the seed variance; the example part alone
        resid = 0.0
        seed_var, parts = np.zeros(np.shape(diff)), []
    # the example part (a method x example effect): per group, the weighted per-example differences
    # summed over its cells (they share the examples); a group adds mean_i z_i to D, variance
    # var(z) / n, of which the seed x example noise is already in the seed part and comes off
    groups: dict[str, list] = {}
    for c, _, s, n in arms[::2]:
        z = c.weight * (np.asarray(c.a, float).mean(-2) - np.asarray(c.b, float).mean(-2))
        g = groups.setdefault(c.group, [0.0, 0.0, n])
        if g[2] != n:
            raise ValueError(f"cells of group {c.group!r} are scored on different examples")
        g[0] = g[0] + z
        g[1] += c.weight ** 2 * (1 / np.shape(c.a)[-2] + 1 / np.shape(c.b)[-2])
    ex_parts = []
    for z, noise, n in groups.values():
        if n < 2:
            continue
        ex_parts.append((np.maximum(z.var(-1, ddof=1) - noise * resid, 0.0) / n, n - 1))
    example_var = sum(v for v, _ in ex_parts)
    total, df = satterthwaite(parts + ex_parts)
    se = np.sqrt(total)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, np.abs(diff) / np.where(se > 0, se, 1), np.where(np.asarray(diff) != 0, np.inf, 0.0))
    p = np.where(np.isinf(t), 0.0, 2 * sps.t.sf(t, df))
    q = sps.t.ppf(0.5 + level / 2, df)
    half = np.where(se > 0, q * se, 0.0)
    out = [diff, se, df, p, diff - half, diff + half, seed_var, example_var]
    if np.ndim(diff) == 0:
        out = [float(x) for x in out]
    return ClaimTest(*out, seeds_known=seeds_known)


def holm_level(alpha: float, family: int) -> float:
    """The level the first (smallest-p) test of a Holm family of `family` tests is judged at."""
    return alpha / max(family, 1)


def power_claim(delta: float, se0: float, se1: float, df: float, alpha: float) -> float:
    """Power of the two-sided t test at level `alpha` against a true difference `delta`, with
    standard error se0 under the null and se1 under the alternative (noncentral t)."""
    from scipy import stats as sps

    q = sps.t.ppf(1 - alpha / 2, df) * se0 / se1
    nc = delta / se1
    if nc - q > 12:  # far past the critical value (the noncentral t's tail is 1 to double precision)
        return 1.0
    upper = sps.nct.sf(q, df, nc)
    lower = sps.nct.cdf(-q, df, nc)  # the far tail, where scipy can return nan for ~0
    if not np.isfinite(upper):
        upper = sps.norm.sf(q - nc)
    return float(upper + (lower if np.isfinite(lower) else 0.0))


@dataclass
class Design:
    """What a claim is made of before anything runs: `cells` fits per arm whose mean is the claim
    (model x target x matched level), in `groups` groups that share test examples (targets),
    `seeds` seeds per fit, `examples` test examples per group. Assumptions: `seed_sd` (the
    seed-to-seed sd of a method's accuracy) and `discordance` (the share of examples on which two
    runs answer differently). Conservative on examples: fits on the same examples are taken to
    disagree on the same ones (the example part shrinks with groups, not with fits or seeds)."""
    cells: int
    groups: int
    seeds: int
    examples: int
    seed_sd: float = SEED_SD
    discordance: float = DISCORDANCE

    def variance(self, delta: float = 0.0) -> float:
        """V of D: the seed part 2 sigma_u^2 / (S cells) and the example part psi / (groups n),
        with psi - delta^2 under the alternative (McNemar's paired-binary spread)."""
        seed = 2 * self.seed_sd ** 2 / (self.seeds * self.cells)
        return seed + max(self.discordance - delta ** 2, 1e-9) / (self.groups * self.examples)

    def df(self) -> float:
        """The seed part's degrees of freedom: the test's Satterthwaite df is at least about this."""
        return float(2 * self.cells * (self.seeds - 1))

    def power(self, delta: float, alpha: float) -> float:
        if self.seeds < 2:
            return 0.0
        return power_claim(delta, math.sqrt(self.variance()), math.sqrt(self.variance(delta)), self.df(), alpha)

    def mdd(self, alpha: float, power: float = 0.8) -> float:
        """The smallest true difference detected with `power` at level `alpha`."""
        from scipy.optimize import brentq

        if self.seeds < 2:
            return math.inf  # one seed: the seed variance is unknown, no claim can be judged
        top = math.sqrt(self.discordance)  # beyond it the examples' spread is used up
        if self.power(top, alpha) < power:
            return math.inf
        return float(brentq(lambda d: self.power(d, alpha) - power, 1e-6, top, xtol=1e-6))


def needed(design: Design, delta: float, alpha: float, power: float = 0.8,
           most: int = 1_000_000) -> tuple[int | None, int | None]:
    """(test examples per group at the design's seeds, seeds at the design's examples) to detect
    `delta`; None where no amount of that alone reaches it (the other part's floor is too high)."""
    from dataclasses import replace

    def smallest(field: str, low: int, high: int) -> int | None:
        if replace(design, **{field: high}).power(delta, alpha) < power:
            return None
        while low < high:
            mid = (low + high) // 2
            if replace(design, **{field: mid}).power(delta, alpha) >= power:
                high = mid
            else:
                low = mid + 1
        return low

    return smallest("examples", 2, most), smallest("seeds", 2, 1000)


def fewest_seeds(design: Design, delta: float, alpha: float, power: float = 0.8,
                 most_seeds: int = 100) -> tuple[int, int] | None:
    """(seeds, test examples per group): the fewest seeds (at least the design's) at which some
    number of examples detects `delta`, with the examples it then needs; None beyond `most_seeds`."""
    from dataclasses import replace

    for seeds in range(max(design.seeds, 2), most_seeds + 1):
        examples, _ = needed(replace(design, seeds=seeds), delta, alpha, power)
        if examples is not None:
            return seeds, examples
    return None
