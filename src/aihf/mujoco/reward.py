"""Reward models r_θ(s, a) or r_θ(s), and the learned return R_θ(τ) of a (padded) batch of segments."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from aihf.errors import ConfigError

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU}


class RewardNet(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, input: str = "sa", hidden: Sequence[int] = (64, 64),
                 activation: str = "relu", clamp: float = 10.0, lr: float = 1e-4, weight_decay: float = 1e-3,
                 batch_size: int = 1000, pref_batch_size: int = 32, discount: float = 1.0):
        super().__init__()
        if input not in ("sa", "s"):
            raise ConfigError(f"reward.input={input!r}: expected 'sa' (r(s, a)) or 's' (r(s))")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"reward.activation={activation!r}: expected one of {sorted(ACTIVATIONS)}")
        self.uses_action = input == "sa"
        sizes = [obs_dim + (act_dim if self.uses_action else 0), *hidden, 1]
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)
        self.clamp, self.lr, self.weight_decay = clamp, lr, weight_decay
        self.batch_size, self.pref_batch_size, self.discount = batch_size, pref_batch_size, discount

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Per-step rewards, shape obs.shape[:-1]."""
        x = torch.cat([obs, act], dim=-1) if self.uses_action else obs
        r = self.net(x).squeeze(-1)
        return r.clamp(-self.clamp, self.clamp) if self.clamp > 0 else r

    def segment_return(self, obs: torch.Tensor, act: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """R_θ(τ) = Σ_t γ^t r_θ(s_t, a_t) over (B, T, ·) padded segments; `mask` (B, T) marks real steps."""
        r = self(obs, act) * mask
        if self.discount != 1.0:
            t = torch.arange(r.shape[1], device=r.device, dtype=r.dtype)
            r = r * self.discount ** t
        return r.sum(-1)
