"""A replay buffer of transitions that stores no rewards of its own: rewards are computed at sampling time
by whichever reward the algorithm uses (the current r_θ, or the environment's, kept for the oracle)."""

from __future__ import annotations

import torch


class ReplayBuffer:
    FIELDS = ("obs", "act", "next_obs", "env_reward", "terminated")

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        self.capacity = int(capacity)
        shapes = {"obs": (obs_dim,), "act": (act_dim,), "next_obs": (obs_dim,), "env_reward": (), "terminated": ()}
        self.data = {k: torch.zeros((self.capacity, *s)) for k, s in shapes.items()}
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, act, next_obs, env_reward, terminated) -> None:
        i = self.pos
        self.data["obs"][i] = torch.as_tensor(obs)
        self.data["act"][i] = torch.as_tensor(act)
        self.data["next_obs"][i] = torch.as_tensor(next_obs)
        self.data["env_reward"][i] = float(env_reward)
        self.data["terminated"][i] = float(terminated)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.size, (batch_size,), generator=generator)
        return {k: v[idx] for k, v in self.data.items()}

    def recent(self, n: int) -> dict[str, torch.Tensor]:
        """The last n transitions added: approximately samples of the current policy."""
        n = min(n, self.size)
        idx = (self.pos - 1 - torch.arange(n)) % self.capacity
        return {k: v[idx] for k, v in self.data.items()}

    def state_dict(self) -> dict:
        return {"pos": self.pos, "size": self.size, "capacity": self.capacity,
                "data": {k: v[: self.size].clone() for k, v in self.data.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] == self.capacity:
            self.pos, self.size = state["pos"], state["size"]
            for k, v in state["data"].items():
                self.data[k][: self.size] = v
            return
        # A different capacity (a continued run with a new budget): keep the newest transitions, oldest first.
        size = state["size"]
        order = torch.arange(size)
        if size == state["capacity"]:
            order = (order + state["pos"]) % size
        keep = order[-self.capacity:]
        self.size = len(keep)
        self.pos = self.size % self.capacity
        for k, v in state["data"].items():
            self.data[k][: self.size] = v[keep]
