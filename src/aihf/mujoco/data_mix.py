"""The data mix: demonstrations, preference pairs and held-out evaluation data drawn from one dataset.

Everything a training step draws from is gathered into tensors once and moved to the module's device with
`to(device)`; batches are then indexed there with the module's (device) generator."""

from __future__ import annotations

import numpy as np
import torch

from aihf.errors import ConfigError
from aihf.mujoco.datasets import DEMO, TRAIN, TrajectoryDataset
from aihf.teachers import SimulatedTeacher


class DataMix:
    def __init__(self, dataset: TrajectoryDataset, num_demos: int, num_prefs: int, policy_window: int,
                 needs_demos: bool, needs_prefs: bool, subset_seed: int = 0, demo_policy: str | None = None,
                 relabel_teacher: SimulatedTeacher | None = None):
        self.dataset = dataset
        name = dataset.path or "the dataset"
        demo_trajs, self.demo_policy = self._demo_candidates(demo_policy)
        if needs_demos and num_demos <= 0:
            raise ConfigError("this preset learns from demonstrations, but data.num_demos=0")
        if needs_demos and len(demo_trajs) < num_demos:
            what = "demonstrations" if demo_policy is None else f"train trajectories of policy {self.demo_policy}"
            raise ConfigError(f"data.num_demos={num_demos}, but {name} holds {len(demo_trajs)} {what}")
        train_pairs = dataset.pairs(TRAIN)
        if needs_prefs and num_prefs <= 0:
            raise ConfigError("this preset learns from preferences, but data.num_prefs=0 (give it preference pairs)")
        if needs_prefs and len(train_pairs) < num_prefs:
            raise ConfigError(f"data.num_prefs={num_prefs}, but {name} holds {len(train_pairs)} training pairs")
        # Which demonstrations and which pairs: a random subset drawn with subset_seed (by default the run's seed),
        # so seeds vary the data as well as the learner, and a fixed data.subset_seed holds the data still. Each
        # source has its own stream and takes a prefix of one permutation: with the same seed, every preset gets
        # the same pairs whatever its demonstrations, and N pairs are the first N of any larger N (nested).
        self.subset_seed = subset_seed
        demo_order = np.random.default_rng([subset_seed, 0]).permutation(demo_trajs)
        pair_order = np.random.default_rng([subset_seed, 1]).permutation(train_pairs)
        demo_trajs = np.sort(demo_order[:num_demos if needs_demos else 0])
        train_pairs = np.sort(pair_order[:num_prefs if needs_prefs else 0])
        self.demo_trajs = demo_trajs
        self.demo_obs, self.demo_act = dataset.transitions(self.demo_trajs)
        self.demo_transitions = self._demo_transitions()
        self.train_pairs = train_pairs
        # Padded to the longest segment; padding is masked, so a pair's learned return is the same as when it
        # is gathered alone.
        self.train_pair_batch = dataset.segments(self.train_pairs) if len(self.train_pairs) else None
        self.relabelled = relabel_teacher is not None and self.train_pair_batch is not None
        if self.relabelled:
            # the teacher's labels redrawn on the pairs' true segment returns, with its own stream of the subset seed
            labels_rng = np.random.default_rng([subset_seed, 1])
            true_a = self.train_pair_batch["true_a"].double().numpy()
            true_b = self.train_pair_batch["true_b"].double().numpy()
            self.train_pair_batch["label"] = torch.tensor(
                [relabel_teacher.label(a, b, labels_rng) for a, b in zip(true_a, true_b)], dtype=torch.float32)
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

    def subset(self) -> dict:
        """Which data this run learned from, for its metrics.json."""
        return {"seed": self.subset_seed, "demos": self.demo_trajs.tolist(), "demo_policy": self.demo_policy,
                "pairs": self.train_pairs.tolist(), "relabelled": self.relabelled, "dataset": str(self.dataset.path),
                "dataset_sha256": self.dataset.sha256}

    def _demo_candidates(self, demo_policy: str | None) -> tuple[np.ndarray, str]:
        """The trajectories demonstrations are drawn from: the dataset's (the expert's), or the train trajectories
        of another ladder policy (by name, or `middle`: the median-return rung between random and expert)."""
        meta = self.dataset.metadata
        if demo_policy is None:
            return self.dataset.trajectories(DEMO), meta.get("expert", "expert")
        names = [p["name"] for p in meta.get("policies", [])]
        if demo_policy == "middle":
            rungs = [i for i, p in enumerate(meta.get("policies", []))
                     if p.get("eval_return") is not None and p["name"] != meta.get("expert")]
            if not rungs:
                raise ConfigError(f"data.demo_policy=middle: {self.dataset.path} lists no ladder rungs besides the "
                                  f"expert")
            rungs.sort(key=lambda i: meta["policies"][i]["eval_return"])
            index = rungs[len(rungs) // 2]
        elif demo_policy in names:
            index = names.index(demo_policy)
        else:
            raise ConfigError(f"data.demo_policy={demo_policy}: not a policy of {self.dataset.path} "
                              f"(its policies: {', '.join(names)}; or middle)")
        trajs = self.dataset.trajectories(TRAIN)
        return trajs[self.dataset.arrays["traj_policy"][trajs] == index], names[index]

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
        """(s, a, r, s') of the demonstrations for SAC's replay; each trajectory's last step has no s' and is dropped.
        `env_reward` is the dataset's true reward, which only the oracle under the recipe (`sac_recipe`) reads: a
        preset that learns a reward, and the constant control, score these transitions as they score their own."""
        parts = {"obs": [], "act": [], "next_obs": [], "env_reward": []}
        for t in self.demo_trajs:
            obs, act = self.dataset.transitions(np.array([t]))
            parts["obs"].append(obs[:-1])
            parts["act"].append(act[:-1])
            parts["next_obs"].append(obs[1:])
            parts["env_reward"].append(torch.from_numpy(self.dataset.rewards(np.array([t]))[:-1]))
        out = {k: torch.cat(v) if v else torch.zeros(0) for k, v in parts.items()}
        out["terminated"] = torch.zeros(len(out["obs"]))
        return out

    def demo_replay_batch(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, len(self.demo_transitions["obs"]), (batch_size,), generator=generator,
                            device=self.device)
        return {k: v[idx] for k, v in self.demo_transitions.items()}

    def pref_batch(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        pick = torch.randint(0, len(self.train_pairs), (min(batch_size, len(self.train_pairs)),),
                             generator=generator, device=self.device)
        return {k: v[pick] for k, v in self.train_pair_batch.items()}
