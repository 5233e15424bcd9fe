"""Reward-comparison metrics, pure functions of arrays shared by both domains.

A learned reward is only as good as a metric that a trivial reward cannot pass: each metric here is reported
beside the same metric for a constant reward and for an episode-length proxy (`aihf.mujoco.reward_metrics`).

- EPIC distance (Gleave et al. 2021, "Quantifying Differences in Reward Functions"): the Pearson distance
  sqrt((1 − ρ)/2) ∈ [0, 1] between two rewards after canonicalisation, which removes potential shaping; 0 means
  equivalent up to shaping and positive scale. A constant reward canonicalises to 0 and gets ρ = 0: distance
  1/√2 ≈ 0.707, "no information".
- Pearson and Spearman correlation of per-transition rewards.
- Pair accuracy, optionally on pairs of equal-length segments only, where a reward cannot win by counting steps.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import stats


def canonicalise(reward: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray], obs: np.ndarray,
                 act: np.ndarray, next_obs: np.ndarray, coverage_obs: np.ndarray, coverage_act: np.ndarray,
                 gamma: float) -> np.ndarray:
    """EPIC's canonically shaped reward of N transitions (s, a, s'), for reward(obs, act, next_obs) -> (N,):

        C(R)(s, a, s') = R(s, a, s') + E[γ R(s', A, S') − R(s, A, S') − γ R(S, A, S')]

    with S, S' ~ D_S and A ~ D_A independent, estimated on M coverage states and M coverage actions: the pairs
    (A_j, S'_j) take S'_j from the same M states as S (shifted by one), so the estimate removes any potential
    shaping γΦ(s') − Φ(s) exactly, not only in expectation.
    """
    m = len(coverage_act)
    if len(coverage_obs) != m:
        raise ValueError(f"EPIC needs as many coverage states as actions, got {len(coverage_obs)} and {m}")
    cov_next = coverage_obs[np.roll(np.arange(m), 1)]
    n = len(obs)
    acts, nexts = np.tile(coverage_act, (n, 1)), np.tile(cov_next, (n, 1))
    r = np.asarray(reward(obs, act, next_obs), dtype=np.float64)
    future = np.asarray(reward(np.repeat(next_obs, m, axis=0), acts, nexts), dtype=np.float64).reshape(n, m)
    here = np.asarray(reward(np.repeat(obs, m, axis=0), acts, nexts), dtype=np.float64).reshape(n, m)
    anywhere = np.asarray(reward(np.repeat(coverage_obs, m, axis=0), np.tile(coverage_act, (m, 1)),
                                 np.tile(cov_next, (m, 1))), dtype=np.float64)
    return r + gamma * future.mean(1) - here.mean(1) - gamma * anywhere.mean()


def epic_distance(reward_a, reward_b, obs, act, next_obs, coverage_obs, coverage_act, gamma: float) -> float:
    """EPIC pseudometric between two rewards of (obs, act, next_obs) on the given transitions."""
    args = (obs, act, next_obs, coverage_obs, coverage_act, gamma)
    return pearson_distance(canonicalise(reward_a, *args), canonicalise(reward_b, *args))


def pearson_distance(a: np.ndarray, b: np.ndarray) -> float:
    """sqrt((1 − ρ)/2); a reward with no variance (a constant) is uncorrelated with everything: ρ = 0."""
    rho = pearson(a, b)
    return math.sqrt((1.0 - (0.0 if math.isnan(rho) else rho)) / 2.0)


def weighted_pearson_distance(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    """`pearson_distance` with a weight per transition (a resampling's counts): NaN where fewer than two
    transitions carry weight, and, as there, ρ = 0 for a reward with no variance among them."""
    a, b, w = (np.asarray(x, dtype=np.float64) for x in (a, b, w))
    used = w > 0
    if used.sum() < 2:
        return float("nan")
    if np.ptp(a[used]) <= 1e-12 * max(1.0, np.abs(a[used]).max()) or np.ptp(b[used]) == 0:
        return math.sqrt(0.5)
    da, db = a - np.average(a, weights=w), b - np.average(b, weights=w)
    rho = float(np.clip(np.sum(w * da * db) / math.sqrt(np.sum(w * da * da) * np.sum(w * db * db)), -1.0, 1.0))
    return math.sqrt((1.0 - rho) / 2.0)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) <= 1e-12 * max(1.0, np.abs(a).max()) or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def pair_accuracy(pred_a: np.ndarray, pred_b: np.ndarray, true_a: np.ndarray, true_b: np.ndarray,
                  mask: np.ndarray | None = None) -> float:
    """Share of decided pairs (true returns differ) whose order the predicted returns get right; a predicted tie
    counts one half (a constant reward scores 0.5, not 0 or 1)."""
    pred_a, pred_b, true_a, true_b = (np.asarray(x, dtype=np.float64) for x in (pred_a, pred_b, true_a, true_b))
    keep = true_a != true_b
    if mask is not None:
        keep &= np.asarray(mask, dtype=bool)
    if not keep.any():
        return float("nan")
    right = np.sign(pred_a - pred_b) == np.sign(true_a - true_b)
    tie = pred_a == pred_b
    return float(np.where(tie, 0.5, right.astype(np.float64))[keep].mean())
