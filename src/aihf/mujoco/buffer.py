"""A replay buffer of transitions that stores no rewards of its own: rewards are computed at sampling time
by whichever reward the algorithm uses (the current r_θ, or the environment's, kept for the oracle).

The storage tensors are (non-persistent) buffers of an `nn.Module`, so they live on the LightningModule's
device and move with it; sampling indexes them there. The checkpoint holds only the filled part
(`state_dict`/`load_state_dict` below, called from the LightningModule's checkpoint hooks).
"""

from __future__ import annotations

import torch
import torch.nn as nn


class ReplayBuffer(nn.Module):
    FIELDS = ("obs", "act", "next_obs", "env_reward", "terminated")

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        super().__init__()
        self.capacity = int(capacity)
        shapes = {"obs": (obs_dim,), "act": (act_dim,), "next_obs": (obs_dim,), "env_reward": (), "terminated": ()}
        for k, s in shapes.items():
            self.register_buffer(k, torch.zeros((self.capacity, *s)), persistent=False)
        self.pos = 0
        self.size = 0

    @property
    def data(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in self.FIELDS}

    def __len__(self) -> int:
        return self.size

    def add(self, obs, act, next_obs, env_reward, terminated) -> None:
        """Store a batch of n transitions (one per sub-env), each field with a leading dimension n."""
        fields = {"obs": obs, "act": act, "next_obs": next_obs, "env_reward": env_reward, "terminated": terminated}
        n = len(obs)
        idx = (self.pos + torch.arange(n, device=self.obs.device)) % self.capacity
        for k, v in fields.items():
            getattr(self, k)[idx] = torch.as_tensor(v, dtype=torch.float32, device=self.obs.device)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.size, (batch_size,), generator=generator, device=self.obs.device)
        return {k: v[idx] for k, v in self.data.items()}

    def recent(self, n: int) -> dict[str, torch.Tensor]:
        """The last n transitions added: approximately samples of the current policy."""
        n = min(n, self.size)
        idx = (self.pos - 1 - torch.arange(n, device=self.obs.device)) % self.capacity
        return {k: v[idx] for k, v in self.data.items()}

    def state_dict_filled(self) -> dict:
        return {"pos": self.pos, "size": self.size, "capacity": self.capacity,
                "data": {k: v[: self.size].cpu().clone() for k, v in self.data.items()}}

    def load_state_dict_filled(self, state: dict) -> None:
        data = {k: v.to(self.obs.device) for k, v in state["data"].items()}
        if state["capacity"] == self.capacity:
            self.pos, self.size = state["pos"], state["size"]
            for k, v in data.items():
                getattr(self, k)[: self.size] = v
            return
        # A different capacity (a continued run with a new budget): keep the newest transitions, oldest first.
        size = state["size"]
        order = torch.arange(size, device=self.obs.device)
        if size == state["capacity"]:
            order = (order + state["pos"]) % size
        keep = order[-self.capacity:]
        self.size = len(keep)
        self.pos = self.size % self.capacity
        for k, v in data.items():
            getattr(self, k)[: self.size] = v[keep]
