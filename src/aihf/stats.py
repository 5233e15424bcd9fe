"""Statistics over seeds: bootstrap confidence intervals of the mean and of the interquartile mean (IQM), and the
probability of improvement (Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice"), with scipy."""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

CONFIDENCE = 0.95
RESAMPLES = 10_000


def _finite(values) -> np.ndarray:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    return v[np.isfinite(v)]


def _no_spread(d: np.ndarray) -> bool:
    """No spread beyond float rounding (differences that are all one value, up to the last bits)."""
    return bool(d.std(ddof=1) <= 1e-12 * max(1.0, float(np.abs(d).max())))


def t_interval(values) -> tuple[float, float, float]:
    """(mean, low, high): the 95 % Student-t interval of the mean over seeds (NaN bounds with one seed)."""
    v = _finite(values)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if len(v) == 1:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def t_interval_with(values, extra_variance: float) -> tuple[float, float, float]:
    """`t_interval` with a second, independent source of error added to the mean's: SE² = s²/n + extra_variance,
    Student's t on n − 1 degrees of freedom (say the held-out set's, estimated by resampling it with the seeds
    fixed). Conservative where that estimate already holds part of the seeds' own spread."""
    v = _finite(values)
    if len(v) < 2:
        return (float(v.mean()) if len(v) else math.nan), math.nan, math.nan
    mean = float(v.mean())
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, len(v) - 1)
                 * math.sqrt(v.var(ddof=1) / len(v) + max(extra_variance, 0.0)))
    return mean, mean - half, mean + half


def t_test_p_with(values, extra_variance: float) -> float:
    """Two-sided p of the t-test that the mean is 0, its standard error that of `t_interval_with` (NaN below 2
    values or with no error at all)."""
    v = _finite(values)
    if len(v) < 2:
        return math.nan
    se = math.sqrt(v.var(ddof=1) / len(v) + max(extra_variance, 0.0))
    if se == 0:
        return math.nan
    return float(2 * stats.t.sf(abs(v.mean()) / se, len(v) - 1))


def iqm(values) -> float:
    """The mean of the middle half (25 % trimmed at each end): robust to one wild seed, unlike the mean."""
    v = _finite(values)
    return float(stats.trim_mean(v, 0.25)) if len(v) else math.nan


def bootstrap_ci(values, statistic=np.mean, seed: int = 0) -> tuple[float, float, float]:
    """(statistic, low, high): a 95 % percentile-bootstrap interval over seeds (statistic(x, axis) vectorised) (NaN bounds with one seed, where no
    interval exists; and with all seeds equal, the point itself)."""
    v = _finite(values)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    point = float(statistic(v, axis=-1))
    if len(v) == 1:
        return point, math.nan, math.nan
    if np.ptp(v) == 0:
        return point, point, point
    res = stats.bootstrap((v,), statistic, confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile",
                          random_state=np.random.default_rng(seed), vectorized=True)
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


def iqm_ci(values, seed: int = 0) -> tuple[float, float, float]:
    return bootstrap_ci(values, lambda x, axis=-1: stats.trim_mean(x, 0.25, axis=axis), seed)


def probability_of_improvement(x, y) -> float:
    """P(X > Y) for a random run of each (ties count half): 0.5 means neither is better."""
    x, y = _finite(x), _finite(y)
    if not len(x) or not len(y):
        return math.nan
    diff = x[:, None] - y[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def probability_of_improvement_ci(x, y, seed: int = 0) -> tuple[float, float, float]:
    """P(X > Y) with a 95 % bootstrap interval, each sample resampled on its own (stratified by method)."""
    x, y = _finite(x), _finite(y)
    point = probability_of_improvement(x, y)
    if len(x) < 2 or len(y) < 2:
        return point, math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = [probability_of_improvement(rng.choice(x, len(x)), rng.choice(y, len(y))) for _ in range(2000)]
    low, high = np.quantile(draws, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return point, float(low), float(high)


def paired_difference(a, b) -> tuple[float, float, float]:
    """(mean, low, high) of a − b over items scored by both (the same held-out pairs): the 95 % Student-t interval
    of the mean per-item difference, which, unlike two independent intervals, removes what the items share."""
    return t_interval(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))


def corrected_resampled_t(deltas, n_test: int, n_train: int) -> tuple[float, float, float]:
    """(mean, low, high) of a difference measured on J random train/test splits of one dataset, with Nadeau and
    Bengio's correction ("Inference for the Generalization Error", 2003): the splits overlap, so their differences
    are correlated and the plain t-interval is too narrow; the variance is scaled by (1/J + n_test/n_train)."""
    d = _finite(deltas)
    if len(d) < 2:
        return (float(d.mean()) if len(d) else math.nan), math.nan, math.nan
    se = math.sqrt((1 / len(d) + n_test / n_train) * d.var(ddof=1))
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, len(d) - 1) * se)
    return float(d.mean()), float(d.mean()) - half, float(d.mean()) + half


def wilson_interval(successes: float, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion (an accuracy on n items)."""
    if n == 0:
        return math.nan, math.nan
    z = stats.norm.ppf((1 + CONFIDENCE) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def t_test_p(differences) -> float:
    """Two-sided p-value of Student's one-sample t-test that the mean difference is 0 (NaN below 2 values or
    without spread)."""
    d = _finite(differences)
    if len(d) < 2 or d.std(ddof=1) == 0:
        return math.nan
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def sign_flip_p(differences) -> float:
    """Two-sided p-value of the exact sign-flip (paired permutation) test that the differences are symmetric about 0:
    every assignment of signs, up to 16 values (a fixed-seed Monte Carlo draw above). It assumes no normality, and
    with n values it cannot go below 2 / 2^n (0.0625 at 5), which is what the t-test's p leans on its normality to
    pass. NaN below 2 values."""
    d = _finite(differences)
    if len(d) < 2:
        return math.nan
    result = stats.permutation_test((d,), np.mean, permutation_type="samples", alternative="two-sided",
                                    n_resamples=2 ** 16, random_state=np.random.default_rng(0), vectorized=True)
    return float(result.pvalue)


def smallest_significant_difference(differences, family: int, alpha: float = 1 - CONFIDENCE) -> float:
    """The smallest mean paired difference that Holm's first step could call significant in a family of `family`
    tests, at these differences' spread and count: t_{1 − α/(2·family), n−1} · sd / √n (NaN below 2 values). A
    contrast below it is not evidence of no difference: with 5 seeds and 8 contrasts it is 2.35 standard deviations
    of the per-seed differences."""
    d = _finite(differences)
    if len(d) < 2 or family < 1 or _no_spread(d):
        return math.nan
    return float(stats.t.ppf(1 - alpha / (2 * family), len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))


def difference_for_power(differences, family: int, power: float = 0.8, alpha: float = 1 - CONFIDENCE) -> float:
    """The true mean paired difference that Holm's first step (a two-sided t-test at α/family) would find with
    probability `power`, at these differences' spread and count, from the noncentral t distribution (NaN below 2
    values). The spread is the sample's own, itself uncertain with few seeds, so this is a planning figure: a
    contrast smaller than it had little chance of being found, whatever its sign."""
    d = _finite(differences)
    if len(d) < 2 or family < 1 or _no_spread(d):  # (a family of 0: no contrast had a p-value)
        return math.nan
    if not alpha / family < power < 1:
        raise ValueError(f"power must lie between α/family ({alpha / family:g}) and 1, not {power}")
    n, sd = len(d), float(d.std(ddof=1))
    crit = stats.t.ppf(1 - alpha / (2 * family), n - 1)
    found = lambda delta: (stats.nct.sf(crit, n - 1, delta * math.sqrt(n) / sd)  # noqa: E731
                           + stats.nct.sf(crit, n - 1, -delta * math.sqrt(n) / sd) - power)  # (P(T < −crit))
    high = sd
    while found(high) < 0:
        high *= 2
    return float(optimize.brentq(found, 0.0, high, xtol=1e-10 * sd))


def holm(p_values) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error rate): the k-th smallest
    of m is multiplied by m − k + 1, made monotone, capped at 1; NaN values are left out of the family."""
    p = [(v, i) for i, v in enumerate(p_values) if not math.isnan(v)]
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (v, i) in enumerate(sorted(p)):
        running = max(running, min(1.0, (len(p) - rank) * v))
        adjusted[i] = running
    return adjusted
