"""The MuJoCo LightningModule: the AIHF loop of DESIGN.md §1 with manual optimisation.

One `training_step` advances the loop by `loop.steps_per_iteration` environment steps. Each env step stores a
transition and takes `policy.updates_per_step` SAC updates on rewards computed *now* by the algorithm's reward
(the current r_θ, or the environment's for the oracle). Every `algo.reward_every` env steps the reward takes
`algo.reward_steps` gradient steps on λ_D·(demonstration contrast) + λ_P·(Bradley–Terry), weighted as
`algo.weighting` says. The presets only change which of these parts are switched on.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from aihf import objectives
from aihf.errors import ConfigError
from aihf.mujoco.buffer import ReplayBuffer
from aihf.mujoco.data_mix import DataMix
from aihf.mujoco.datasets import load_dataset, shipped_path
from aihf.resume import Continuable, StepIndices
from aihf.mujoco.envs import env_dims, env_versions, make_env

REWARD_SOURCES = ("learned", "env")
POLICY_UPDATES = ("sac", "bc")
SCHEDULES = ("alternating", "sequential")


def validate_algo(cfg: DictConfig) -> None:
    a = cfg.algo
    for key, value, allowed in (("algo.reward_source", a.reward_source, REWARD_SOURCES),
                                ("algo.policy_update", a.policy_update, POLICY_UPDATES),
                                ("algo.schedule", a.schedule, SCHEDULES),
                                ("algo.weighting", a.weighting, objectives.WEIGHTINGS)):
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}: expected one of {allowed}")
    if a.reward_source == "learned" and a.policy_update == "sac" and a.demo_weight == 0 and a.pref_weight == 0:
        raise ConfigError("algo.demo_weight and algo.pref_weight are both 0: the learned reward has no data")
    if a.demo_replay_fraction > 0 and (a.reward_source != "learned" or a.policy_update != "sac"):
        raise ConfigError("algo.demo_replay_fraction > 0 needs a learned reward: demonstrations carry no env reward")
    if not 0 <= a.demo_replay_fraction < 1:
        raise ConfigError(f"algo.demo_replay_fraction={a.demo_replay_fraction}: expected a value in [0, 1)")
    if a.schedule == "sequential" and a.reward_pretrain_steps <= 0:
        raise ConfigError("algo.schedule=sequential fits the reward before RL: set algo.reward_pretrain_steps > 0")


class MuJoCoAIHF(Continuable, pl.LightningModule):
    STATE_KEY, DOMAIN = "aihf", "MuJoCo"

    def __init__(self, cfg: DictConfig):
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        validate_algo(cfg)
        self.save_hyperparameters({"cfg": OmegaConf.to_container(cfg, resolve=True)})
        a, loop = cfg.algo, cfg.loop
        self.env = make_env(cfg.env.id, cfg.env.max_episode_steps,
                            **OmegaConf.to_container(cfg.env.train_kwargs))
        self.eval_env = make_env(cfg.env.id, cfg.env.max_episode_steps)
        self.obs_dim, self.act_dim = env_dims(self.env)

        self.data = self._load_data()
        self.expert_return, self.random_return = self._normalisation_anchors()

        low, high = self.env.action_space.low, self.env.action_space.high
        self.policy = hydra.utils.instantiate(cfg.policy, obs_dim=self.obs_dim, act_dim=self.act_dim,
                                              action_low=low.tolist(), action_high=high.tolist(), _convert_="all")
        self.learns_reward = a.reward_source == "learned" and a.policy_update == "sac"
        self.reward = (hydra.utils.instantiate(cfg.reward, obs_dim=self.obs_dim, act_dim=self.act_dim,
                                               _convert_="all") if self.learns_reward else None)
        capacity = max(1, min(cfg.policy.buffer_size, loop.total_env_steps))
        self.buffer = ReplayBuffer(capacity, self.obs_dim, self.act_dim)

        # Every source of randomness is owned here and checkpointed with the module.
        self.torch_gen = torch.Generator().manual_seed(cfg.seed)
        self.np_rng = np.random.default_rng(cfg.seed)
        self.env_steps = 0
        self.episodes = 0
        self.reward_updates = 0
        self.policy_updates = 0
        self._update_credit = 0.0
        self._obs = None
        self._episode_return = 0.0
        self._episode_len = 0
        self.last_episode_return = float("nan")
        self.history: list[dict] = []
        self._t0 = time.perf_counter()
        self._sps_mark = (0, time.perf_counter())
        self.run_dir = Path(cfg.run_dir)

    # -- setup -------------------------------------------------------------------------------------------
    def _load_data(self) -> DataMix | None:
        cfg = self.cfg
        path = cfg.data.path or shipped_path(cfg.env.id)
        a = cfg.algo
        needs_demos = (a.needs_demos and a.demo_weight != 0 or a.policy_update == "bc" or a.bc_warmstart_steps > 0
                       or a.demo_replay_fraction > 0)
        needs_prefs = a.needs_prefs and a.pref_weight != 0 and a.policy_update != "bc"
        if cfg.data.path is None and not Path(path).exists() and not (needs_demos or needs_prefs):
            return None  # e.g. training the first expert: no dataset exists yet, and none is needed
        dataset = load_dataset(path, self.obs_dim, self.act_dim, cfg.env.id)
        return DataMix(dataset, cfg.data.num_demos, cfg.data.num_prefs, cfg.data.policy_window,
                       needs_demos, needs_prefs)

    def _normalisation_anchors(self) -> tuple[float | None, float | None]:
        meta = self.data.dataset.metadata if self.data is not None else {}
        expert = self.cfg.env.expert_return if self.cfg.env.expert_return is not None else meta.get("expert_return")
        rand = self.cfg.env.random_return if self.cfg.env.random_return is not None else meta.get("random_return")
        return expert, rand

    def configure_optimizers(self):
        p = self.policy
        opts = [torch.optim.Adam(p.actor_parameters(), lr=p.actor_lr),
                torch.optim.Adam(p.critic_parameters(), lr=p.critic_lr),
                torch.optim.Adam(p.alpha_parameters(), lr=p.alpha_lr)]
        if self.reward is not None:
            opts.append(torch.optim.Adam(self.reward.parameters(), lr=self.reward.lr,
                                         weight_decay=self.reward.weight_decay))
        return opts

    def num_iterations(self) -> int:
        loop = self.cfg.loop
        if self.cfg.algo.policy_update == "bc":
            remaining = loop.bc_steps - self.policy_updates
        else:
            remaining = loop.total_env_steps - self.env_steps
        return max(0, math.ceil(remaining / loop.steps_per_iteration))

    def train_dataloader(self):
        return torch.utils.data.DataLoader(StepIndices(self.num_iterations()), batch_size=None)

    def on_train_start(self) -> None:
        torch.set_num_threads(self.cfg.loop.torch_threads)
        self._opts = self.optimizers(use_pl_optimizer=False)
        self.restore_pending_optimizers(self._opts)
        if self.cfg.algo.bc_warmstart_steps > 0 and self.policy_updates == 0:
            for _ in range(self.cfg.algo.bc_warmstart_steps):
                self.policy.bc_update(*self.data.demo_batch(self.policy.batch_size, self.torch_gen), self._opts[0])

    # -- the loop ----------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        metrics: dict[str, float] = {}
        if self.cfg.algo.policy_update == "bc":
            for _ in range(self.cfg.loop.steps_per_iteration):
                metrics = self.policy.bc_update(*self.data.demo_batch(self.policy.batch_size, self.torch_gen),
                                                self._opts[0])
                self.policy_updates += 1
                if self.policy_updates % self.cfg.loop.eval_every == 0:
                    self.evaluate_and_log(self.policy_updates)
        else:
            for _ in range(self.cfg.loop.steps_per_iteration):
                metrics = self.env_step() or metrics
                if self.env_steps % self.cfg.loop.eval_every == 0:
                    self.evaluate_and_log(self.env_steps)
        now = time.perf_counter()
        steps, mark = self._sps_mark
        progress = self.policy_updates if self.cfg.algo.policy_update == "bc" else self.env_steps
        sps = (progress - steps) / max(now - mark, 1e-9)
        self._sps_mark = (progress, now)
        metrics = {k: float(v) for k, v in metrics.items()}
        metrics.update({"charts/SPS": sps, "charts/episodic_return": self.last_episode_return})
        self._log(metrics, progress)
        self.log_dict({"env_steps": float(self.env_steps), "return": self.last_episode_return, "sps": sps},
                      prog_bar=True, on_step=True, batch_size=1)

    def env_step(self) -> dict | None:
        p = self.policy
        if self._obs is None:
            self._obs, _ = self.env.reset(seed=int(self.np_rng.integers(2**31)))
        warm = self.cfg.algo.bc_warmstart_steps > 0
        if self.env_steps < p.learning_starts and not warm:
            action = self.np_rng.uniform(self.env.action_space.low, self.env.action_space.high).astype(np.float32)
        else:
            obs_t = torch.as_tensor(self._obs, dtype=torch.float32).unsqueeze(0)
            action = p.act(obs_t, generator=self.torch_gen)[0].numpy()
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        self.buffer.add(self._obs, action, next_obs, reward, terminated)
        self._episode_return += float(reward)
        self._episode_len += 1
        self._obs = next_obs
        if terminated or truncated:
            self.last_episode_return = self._episode_return
            self.episodes += 1
            self._obs, self._episode_return, self._episode_len = None, 0.0, 0
        self.env_steps += 1

        if self.env_steps < p.learning_starts:
            return None
        metrics: dict = {}
        if self.reward is not None:
            if self.env_steps == p.learning_starts:
                for _ in range(self.cfg.algo.reward_pretrain_steps):
                    metrics.update(self.reward_step())
            elif self.cfg.algo.schedule == "alternating" and self.env_steps % self.cfg.algo.reward_every == 0:
                for _ in range(self.cfg.algo.reward_steps):
                    metrics.update(self.reward_step())
        self._update_credit += p.updates_per_step
        while self._update_credit >= 1:
            self._update_credit -= 1
            metrics.update(self.policy_step())
        return metrics

    def batch_rewards(self, batch: dict) -> torch.Tensor:
        if self.reward is None:
            return batch["env_reward"]
        with torch.no_grad():
            return self.reward(batch["obs"], batch["act"])

    def policy_step(self) -> dict:
        n_demo = int(round(self.cfg.algo.demo_replay_fraction * self.policy.batch_size))
        batch = self.buffer.sample(self.policy.batch_size - n_demo, self.torch_gen)
        if n_demo:  # demonstrations in SAC's batch, scored by the same reward as the agent's own steps
            demo = self.data.demo_replay_batch(n_demo, self.torch_gen)
            batch = {k: torch.cat([batch[k], demo[k]]) for k in batch}
        actor_opt, critic_opt, alpha_opt = self._opts[:3]
        out = self.policy.update(batch["obs"], batch["act"], self.batch_rewards(batch), batch["next_obs"],
                                 batch["terminated"], actor_opt, critic_opt, alpha_opt, self.torch_gen)
        self.policy_updates += 1
        return out

    @property
    def beta(self) -> float:
        b = self.cfg.algo.beta
        return float(self.policy.alpha) if b is None else float(b)

    def reward_loss(self, demo: tuple | None, policy_samples: tuple | None, prefs: dict | None
                    ) -> tuple[torch.Tensor, dict]:
        """The reward step's loss (DESIGN.md §1), on explicit batches so tests can hand-make them."""
        a = self.cfg.algo
        logs: dict = {}
        demo_loss = pref_loss = None
        if a.demo_weight != 0:
            r_demo = self.reward(*demo)
            r_pol = self.reward(*policy_samples)
            demo_loss = objectives.demonstration_contrast_loss(r_demo, r_pol, self.beta)
            logs.update({"reward/demo_mean": r_demo.mean().detach(), "reward/policy_mean": r_pol.mean().detach()})
        if a.pref_weight != 0:
            ra = self.reward.segment_return(prefs["obs_a"], prefs["act_a"], prefs["mask_a"])
            rb = self.reward.segment_return(prefs["obs_b"], prefs["act_b"], prefs["mask_b"])
            pref_loss = objectives.bradley_terry_loss(ra, rb, prefs["label"])
            logs["reward/bt_loss"] = pref_loss.detach()
        loss = objectives.weighted_objective(demo_loss, pref_loss, a.demo_weight, a.pref_weight, a.weighting,
                                             num_demos=self.data.num_demos, num_prefs=self.data.num_prefs)
        logs["reward/loss"] = loss.detach()
        return loss, logs

    def reward_step(self) -> dict:
        a, r = self.cfg.algo, self.reward
        demo = policy_samples = prefs = None
        if a.demo_weight != 0:
            demo = self.data.demo_batch(r.batch_size, self.torch_gen)
            recent = self.buffer.recent(self.cfg.data.policy_window)
            idx = torch.randint(0, len(recent["obs"]), (r.batch_size,), generator=self.torch_gen)
            policy_samples = (recent["obs"][idx], recent["act"][idx])
        if a.pref_weight != 0:
            prefs = self.data.pref_batch(r.pref_batch_size, self.torch_gen)
        loss, logs = self.reward_loss(demo, policy_samples, prefs)
        opt = self._opts[3]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.reward_updates += 1
        return logs

    # -- evaluation --------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate_policy(self, episodes: int) -> tuple[float, float]:
        returns = []
        for k in range(episodes):
            obs, _ = self.eval_env.reset(seed=10_000 + 1000 * self.cfg.seed + k)
            done, total = False, 0.0
            while not done:
                act = self.policy.act(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0), deterministic=True)
                obs, rew, terminated, truncated, _ = self.eval_env.step(act[0].numpy())
                total += float(rew)
                done = terminated or truncated
            returns.append(total)
        return float(np.mean(returns)), float(np.std(returns))

    def normalised(self, ret: float) -> float | None:
        if self.expert_return is None or self.random_return is None:
            return None
        return (ret - self.random_return) / (self.expert_return - self.random_return)

    @torch.no_grad()
    def reward_metrics(self) -> dict:
        """Held-out preference accuracy and learned-vs-true return correlation of r_θ."""
        if self.reward is None or self.data is None:
            return {}
        out = {}
        pairs = self.data.heldout_pair_batch
        if pairs is not None:
            ra = self.reward.segment_return(pairs["obs_a"], pairs["act_a"], pairs["mask_a"])
            rb = self.reward.segment_return(pairs["obs_b"], pairs["act_b"], pairs["mask_b"])
            decided = pairs["true_a"] != pairs["true_b"]
            correct = ((ra > rb) == (pairs["true_a"] > pairs["true_b"]))[decided]
            out["eval/pref_accuracy"] = float(correct.float().mean()) if len(correct) else float("nan")
        trajs = self.data.heldout_trajectories
        if len(trajs) >= 2:
            learned = [float(self.reward(o, a).sum()) for o, a, _ in trajs]
            true = [g for _, _, g in trajs]
            out["eval/return_correlation"] = float(np.corrcoef(learned, true)[0, 1])
        return out

    def evaluate_and_log(self, step: int, episodes: int | None = None) -> dict:
        mean, std = self.evaluate_policy(episodes or self.cfg.loop.eval_episodes)
        out = {"eval/return_mean": mean, "eval/return_std": std}
        score = self.normalised(mean)
        if score is not None:
            out["eval/normalised_score"] = score
        out.update(self.reward_metrics())
        out["time/wall_s"] = time.perf_counter() - self._t0
        self._log(out, step)
        self.history.append({"step": step, **out})
        if self.cfg.loop.save_ladder:
            self.save_rung(step, mean)
        return out

    def save_rung(self, step: int, eval_return: float) -> None:
        """One rung of the expert quality ladder: the actor and what is needed to rebuild it."""
        ladder = self.run_dir / "ladder"
        ladder.mkdir(parents=True, exist_ok=True)
        torch.save({"actor": self.policy.actor.state_dict(), "env_id": self.cfg.env.id, "env_steps": step,
                    "eval_return": eval_return, "hidden": list(self.cfg.policy.hidden),
                    "obs_dim": self.obs_dim, "act_dim": self.act_dim,
                    "action_low": self.env.action_space.low.tolist(),
                    "action_high": self.env.action_space.high.tolist()},
                   ladder / f"step_{step:08d}.pt")

    def _log(self, metrics: dict, step: int) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        for logger in self.loggers:
            logger.log_metrics(clean, step=step)

    def on_train_end(self) -> None:
        step = self.policy_updates if self.cfg.algo.policy_update == "bc" else self.env_steps
        final = self.evaluate_and_log(step, self.cfg.loop.final_eval_episodes)
        result = {"env_id": self.cfg.env.id, "algo": self.cfg.algo.name, "seed": self.cfg.seed,
                  "env_steps": self.env_steps, "policy_updates": self.policy_updates,
                  "reward_updates": self.reward_updates, "episodes": self.episodes,
                  "num_demos": self.data.num_demos if self.data else 0,
                  "num_prefs": self.data.num_prefs if self.data else 0, "weighting": self.cfg.algo.weighting,
                  "final_eval_episodes": self.cfg.loop.final_eval_episodes,
                  "expert_return": self.expert_return, "random_return": self.random_return,
                  "versions": env_versions(), **final, "history": self.history}
        (self.run_dir / "metrics.json").write_text(json.dumps(result, indent=2))
        self.final_metrics = result

    # -- state -------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["aihf"] = {"buffer": self.buffer.state_dict(), "torch_gen": self.torch_gen.get_state(),
                              "np_rng": self.np_rng.bit_generator.state, "env_steps": self.env_steps,
                              "episodes": self.episodes, "reward_updates": self.reward_updates,
                              "policy_updates": self.policy_updates, "update_credit": self._update_credit,
                              "history": self.history}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        s = checkpoint["aihf"]
        self.buffer.load_state_dict(s["buffer"])
        self.torch_gen.set_state(s["torch_gen"])
        self.np_rng.bit_generator.state = s["np_rng"]
        self.env_steps, self.episodes = s["env_steps"], s["episodes"]
        self.reward_updates, self.policy_updates = s["reward_updates"], s["policy_updates"]
        self._update_credit, self.history = s["update_credit"], s["history"]
