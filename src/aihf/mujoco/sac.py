"""Soft actor-critic (Haarnoja et al. 2018): the lower-level max-entropy RL solver of docs/design.md §1.

The policy does not know where its rewards come from: `update` takes the batch's rewards as an argument, so
the same code runs on the true reward (`sac` preset) and on the current learned reward (`aihf`, `irl`, `rlhf`).
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from aihf.mujoco.layers import MLP, EnsembleLinear, EnsembleMLP, Linear

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def mlp(sizes: Sequence[int], activation=nn.ReLU, matmul: str = "auto") -> MLP:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(Linear(sizes[i], sizes[i + 1], matmul))
        if i < len(sizes) - 2:
            layers.append(activation())
    return MLP(*layers)


class TwinQ(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], num_q: int = 2, matmul: str = "auto"):
        super().__init__()
        sizes = [obs_dim + act_dim, *hidden, 1]
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(EnsembleLinear(num_q, sizes[i], sizes[i + 1], matmul))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = EnsembleMLP(*layers)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Returns (num_q, B) Q-values."""
        return self.net(torch.cat([obs, act], dim=-1)).squeeze(-1)


class TanhGaussianActor(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int],
                 action_low: torch.Tensor, action_high: torch.Tensor, matmul: str = "auto"):
        super().__init__()
        self.trunk = mlp([obs_dim, *hidden], nn.ReLU, matmul)
        self.trunk.append(nn.ReLU())
        self.mean = Linear(hidden[-1], act_dim, matmul)
        self.log_std = Linear(hidden[-1], act_dim, matmul)
        self.register_buffer("action_scale", (action_high - action_low) / 2)
        self.register_buffer("action_bias", (action_high + action_low) / 2)

    def distribution(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(obs)
        log_std = self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)
        return self.mean(h), log_std

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action and its log-probability (with the tanh change of variables). The standard
        normal `noise` may be drawn by the caller (a compiled loss takes it as an input); else from `generator`."""
        mean, log_std = self.distribution(obs)
        std = log_std.exp()
        if noise is None:
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        u = mean + std * noise
        y = torch.tanh(u)
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        log_prob = log_prob - torch.log(self.action_scale).sum()
        return y * self.action_scale + self.action_bias, log_prob

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        mean, _ = self.distribution(obs)
        return torch.tanh(mean) * self.action_scale + self.action_bias

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log π(a|s) of given actions (behaviour cloning), clipped away from the tanh asymptotes."""
        mean, log_std = self.distribution(obs)
        y = ((action - self.action_bias) / self.action_scale).clamp(-0.999999, 0.999999)
        u = torch.atanh(y)
        noise = (u - mean) / log_std.exp()
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return log_prob - torch.log(self.action_scale).sum()


class SACPolicy(nn.Module):
    """Actor, twin critics, their targets and the temperature; the loss terms of SAC.

    The LightningModule owns the optimisers (built from `actor_parameters()`, `critic_parameters()` and
    `alpha_parameters()`) and steps them after `manual_backward` on these losses, so Lightning's strategies and
    precision plugins apply and its checkpoints hold the optimiser states.
    """

    def __init__(self, obs_dim: int, act_dim: int, action_low, action_high, hidden: Sequence[int] = (256, 256),
                 actor_lr: float = 3e-4, critic_lr: float = 3e-4, alpha_lr: float = 3e-4, gamma: float = 0.99,
                 tau: float = 0.005, alpha: float = 0.2, learn_alpha: bool = True,
                 target_entropy: float | None = None, batch_size: int = 256, updates_per_step: float = 1.0,
                 learning_starts: int = 5000, buffer_size: int = 1_000_000, matmul: str = "auto",
                 compile: bool = False, compile_mode: str | None = None):
        super().__init__()
        low = torch.as_tensor(action_low, dtype=torch.float32)
        high = torch.as_tensor(action_high, dtype=torch.float32)
        self.actor = TanhGaussianActor(obs_dim, act_dim, list(hidden), low, high, matmul)
        self.critic = TwinQ(obs_dim, act_dim, list(hidden), matmul=matmul)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(alpha)), requires_grad=learn_alpha)
        self.learn_alpha = learn_alpha
        self.target_entropy = float(-act_dim if target_entropy is None else target_entropy)
        self.gamma, self.tau = gamma, tau
        self.actor_lr, self.critic_lr, self.alpha_lr = actor_lr, critic_lr, alpha_lr
        self.batch_size, self.updates_per_step = batch_size, updates_per_step
        self.learning_starts, self.buffer_size = learning_starts, buffer_size
        self.compile, self.compile_mode = compile, compile_mode

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    def actor_parameters(self):
        return self.actor.parameters()

    def critic_parameters(self):
        return self.critic.parameters()

    def alpha_parameters(self):
        return [self.log_alpha]

    @torch.inference_mode()
    def act(self, obs: torch.Tensor, deterministic: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """An action to take (no log-probability, no autograd): a ~ π(·|s), or tanh(μ(s)) when deterministic."""
        if deterministic:
            return self.actor.deterministic(obs)
        mean, log_std = self.actor.distribution(obs)
        u = mean + log_std.exp() * torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return torch.tanh(u) * self.actor.action_scale + self.actor.action_bias

    def critic_loss(self, obs, act, reward, next_obs, terminated, noise: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft Bellman residual of both critics, on rewards computed by the caller; returns (loss, Q(s, a)).
        `noise` (B, act_dim) is the standard normal draw of the next actions a' ~ π(·|s')."""
        with torch.no_grad():
            next_act, next_log_pi = self.actor.sample(next_obs, noise=noise)
            target_q = self.critic_target(next_obs, next_act).min(0).values - self.alpha * next_log_pi
            target = reward + self.gamma * (1.0 - terminated) * target_q
        q = self.critic(obs, act)
        return F.mse_loss(q, target.unsqueeze(0).expand_as(q)) * q.shape[0], q.detach()

    def actor_loss(self, obs, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E[α log π(a|s) − min Q(s, a)], a ~ π reparameterised with `noise`; the critics are constants here."""
        new_act, log_pi = self.actor.sample(obs, noise=noise)
        self.critic.requires_grad_(False)
        q_pi = self.critic(obs, new_act).min(0).values
        self.critic.requires_grad_(True)
        return (self.alpha * log_pi - q_pi).mean(), log_pi.detach()

    def alpha_loss(self, log_pi: torch.Tensor) -> torch.Tensor:
        return -(self.log_alpha * (log_pi + self.target_entropy)).mean()

    @torch.no_grad()
    def update_targets(self) -> None:
        torch._foreach_lerp_(list(self.critic_target.parameters()), list(self.critic.parameters()), self.tau)

    def bc_loss(self, obs, act) -> torch.Tensor:
        """Behaviour cloning: −log π(a^E | s^E)."""
        return -self.actor.log_prob(obs, act).mean()
