"""Deterministic evaluation of a policy on the standard env: all episodes stepped as one batch.

Episode k is reset with its own seed (10,000 + 1,000·seed + k), the same at every evaluation and independent of
training's random streams, so evaluating never changes what training does next and curves compare like with like.
"""

from __future__ import annotations

import numpy as np
import torch

from aihf.mujoco.envs import make_vector_env


class PolicyEvaluator:
    def __init__(self, env_id: str, max_episode_steps: int | None, seed: int):
        self.env_id, self.max_episode_steps, self.seed = env_id, max_episode_steps, seed
        self._envs = {}

    def _vector_env(self, episodes: int):
        if episodes not in self._envs:
            self._envs[episodes] = make_vector_env(self.env_id, episodes, self.max_episode_steps)
        return self._envs[episodes]

    @torch.no_grad()
    def evaluate(self, policy, episodes: int, device: torch.device) -> tuple[float, float]:
        """Mean and standard deviation of the true return over `episodes` deterministic episodes."""
        envs = self._vector_env(episodes)
        obs, _ = envs.reset(seed=[10_000 + 1000 * self.seed + k for k in range(episodes)])
        returns = np.zeros(episodes)
        running = np.ones(episodes, dtype=bool)
        while running.any():
            act = policy.act(torch.as_tensor(obs, dtype=torch.float32, device=device), deterministic=True)
            obs, reward, terminated, truncated, _ = envs.step(act.cpu().numpy())
            returns += reward * running  # a finished env has autoreset into an episode that is not counted
            running &= ~(terminated | truncated)
        return float(returns.mean()), float(returns.std())

    def close(self) -> None:
        for envs in self._envs.values():
            envs.close()
