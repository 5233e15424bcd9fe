"""The data mix: demonstrations, preference pairs and held-out evaluation data drawn from one dataset.

Everything a training step draws from is gathered into tensors once and moved to the module's device with
`to(device)`; batches are then indexed there with the module's (device) generator."""

from __future__ import annotations

import numpy as np
import torch

from aihf.errors import ConfigError
from aihf.mujoco.datasets import DEMO, TRAIN, TrajectoryDataset


class DataMix:
    def __init__(self, dataset: TrajectoryDataset, num_demos: int, num_prefs: int, policy_window: int,
                 needs_demos: bool, needs_prefs: bool):
        self.dataset = dataset
        name = dataset.path or "the dataset"
        demo_trajs = dataset.trajectories(DEMO)
        if needs_demos and num_demos <= 0:
            raise ConfigError("this preset learns from demonstrations, but data.num_demos=0")
        if needs_demos and len(demo_trajs) < num_demos:
            raise ConfigError(f"data.num_demos={num_demos}, but {name} holds {len(demo_trajs)} demonstrations")
        train_pairs = dataset.pairs(TRAIN)
        if needs_prefs and num_prefs <= 0:
            raise ConfigError("this preset learns from preferences, but data.num_prefs=0 (give it preference pairs)")
        if needs_prefs and len(train_pairs) < num_prefs:
            raise ConfigError(f"data.num_prefs={num_prefs}, but {name} holds {len(train_pairs)} training pairs")
        self.demo_trajs = demo_trajs[:num_demos] if needs_demos else demo_trajs[:0]
        self.demo_obs, self.demo_act = dataset.transitions(self.demo_trajs)
        self.demo_transitions = self._demo_transitions()
        self.train_pairs = train_pairs[:num_prefs] if needs_prefs else train_pairs[:0]
        # Padded to the longest segment; padding is masked, so a pair's learned return is the same as when it
        # is gathered alone.
        self.train_pair_batch = dataset.segments(self.train_pairs) if len(self.train_pairs) else None
        self.policy_window = policy_window
        self.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> "DataMix":
        device = torch.device(device)
        move = lambda d: None if d is None else {k: v.to(device) for k, v in d.items()}  # noqa: E731
        self.demo_obs, self.demo_act = self.demo_obs.to(device), self.demo_act.to(device)
        self.demo_transitions = move(self.demo_transitions)
        self.train_pair_batch = move(self.train_pair_batch)
        self.device = device
        return self

    @property
    def num_demos(self) -> int:
        return len(self.demo_trajs)

    @property
    def num_demo_steps(self) -> int:
        """Demonstration transitions: the unit of the demonstration log-likelihood under weighting=sum."""
        return len(self.demo_obs)

    @property
    def num_prefs(self) -> int:
        return len(self.train_pairs)

    def demo_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(self.demo_obs), (batch_size,), generator=generator, device=self.device)
        return self.demo_obs[idx], self.demo_act[idx]

    def _demo_transitions(self) -> dict[str, torch.Tensor]:
        """(s, a, s') of the demonstrations for SAC's replay; each trajectory's last step has no s' and is dropped."""
        parts = {"obs": [], "act": [], "next_obs": []}
        for t in self.demo_trajs:
            obs, act = self.dataset.transitions(np.array([t]))
            parts["obs"].append(obs[:-1])
            parts["act"].append(act[:-1])
            parts["next_obs"].append(obs[1:])
        out = {k: torch.cat(v) if v else torch.zeros(0) for k, v in parts.items()}
        out["terminated"] = torch.zeros(len(out["obs"]))
        out["env_reward"] = torch.full((len(out["obs"]),), float("nan"))  # unknown: only r_θ may score these
        return out

    def demo_replay_batch(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, len(self.demo_transitions["obs"]), (batch_size,), generator=generator,
                            device=self.device)
        return {k: v[idx] for k, v in self.demo_transitions.items()}

    def pref_batch(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        pick = torch.randint(0, len(self.train_pairs), (min(batch_size, len(self.train_pairs)),),
                             generator=generator, device=self.device)
        return {k: v[pick] for k, v in self.train_pair_batch.items()}
