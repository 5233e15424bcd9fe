"""Statistics over seeds: bootstrap confidence intervals of the mean and of the interquartile mean (IQM), and the
probability of improvement (Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice"), with scipy."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 10_000


def _finite(values) -> np.ndarray:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    return v[np.isfinite(v)]


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
