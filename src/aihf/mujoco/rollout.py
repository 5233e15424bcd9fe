"""The training environments and their episodes in progress.

`VectorRollout` steps `num_envs` sub-envs as one batch. Under same-step autoreset a finished sub-env returns the
first observation of its next episode, so the transition stored for its last step uses the true final observation
(`info["final_obs"]`); `terminated` (a true end: no bootstrap) and `truncated` (the time limit: bootstrap) stay
apart. Its state (every sub-env's physics, elapsed steps and reset generator, the current observations, the
returns and lengths of the episodes in progress) goes into the checkpoint, so a resumed run continues exactly.
"""

from __future__ import annotations

import numpy as np
import torch


class VectorRollout:
    def __init__(self, envs, seed: int):
        self.envs = envs
        self.num_envs = envs.num_envs
        self.seed = seed
        self.obs: np.ndarray | None = None
        self.episode_return = np.zeros(self.num_envs)
        self.episode_length = np.zeros(self.num_envs, dtype=np.int64)

    def current_obs(self) -> np.ndarray:
        if self.obs is None:
            self.obs, _ = self.envs.reset(seed=[self.seed + i for i in range(self.num_envs)])
        return self.obs

    def step(self, actions: np.ndarray) -> tuple[dict, list[tuple[float, int]]]:
        """One step of every sub-env: the transitions (obs, act, next_obs, env_reward, terminated), and the
        (return, length) of each episode that ended."""
        obs = self.current_obs()
        next_obs, reward, terminated, truncated, info = self.envs.step(actions)
        done = terminated | truncated
        final_next = next_obs
        self.episode_return += reward
        self.episode_length += 1
        finished = []
        if done.any():
            final_next = next_obs.copy()
            for i in np.flatnonzero(done):
                final_next[i] = info["final_obs"][i]
                finished.append((float(self.episode_return[i]), int(self.episode_length[i])))
            self.episode_return[done] = 0.0
            self.episode_length[done] = 0
        self.obs = next_obs
        return {"obs": obs, "act": actions, "next_obs": final_next, "env_reward": reward,
                "terminated": terminated}, finished

    def state_dict(self) -> dict:
        if self.obs is None:
            return {"started": False}
        return {"started": True, "envs": list(self.envs.get_attr("resume_state")), "obs": torch.from_numpy(self.obs),
                "episode_return": torch.from_numpy(self.episode_return),
                "episode_length": torch.from_numpy(self.episode_length)}

    def load_state_dict(self, state: dict) -> None:
        if not state["started"]:
            self.obs = None
            return
        self.envs.reset(seed=self.seed)  # gymnasium wants a reset before stepping; the states below replace it
        self.envs.set_attr("resume_state", state["envs"])
        self.obs = state["obs"].numpy().copy()
        self.episode_return = state["episode_return"].numpy().copy()
        self.episode_length = state["episode_length"].numpy().copy()

    def close(self) -> None:
        self.envs.close()
