"""Simulated preference teachers (docs/design.md §4), shared by both domains.

A teacher compares two returns G(τ_1), G(τ_2) (true returns of trajectories or segments, or gold rewards of
responses) and answers P(τ_1 ≻ τ_2) ∈ {0, 0.5, 1}: Bradley–Terry with rationality β, an "equal" threshold,
a mistake probability and myopic discounting. Label noise and scarcity thereby become sweepable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class SimulatedTeacher:
    beta: float = 1.0
    mistake_prob: float = 0.0
    equal_threshold: float = 0.0
    discount: float = 1.0
    return_scale: float = 1.0

    def segment_return(self, rewards: np.ndarray) -> float:
        """The teacher's (possibly myopic) return: the last step weighs most, as in imitation's teacher."""
        rewards = np.asarray(rewards, dtype=np.float64)
        if self.discount == 1.0:
            return float(rewards.sum())
        weights = self.discount ** np.arange(len(rewards))[::-1]
        return float((weights * rewards).sum())

    def preference_prob(self, g1: float, g2: float) -> float:
        diff = (g1 - g2) * self.return_scale
        if math.isinf(self.beta):
            return float(diff > 0) if diff != 0 else 0.5
        return float(1.0 / (1.0 + math.exp(-np.clip(self.beta * diff, -50, 50))))

    def label(self, g1: float, g2: float, rng: np.random.Generator) -> float:
        if abs(g1 - g2) <= self.equal_threshold:
            return 0.5
        y = float(rng.random() < self.preference_prob(g1, g2))
        if rng.random() < self.mistake_prob:
            y = 1.0 - y
        return y

    def to_dict(self) -> dict:
        return asdict(self)
