"""The MuJoCo LightningModule: the AIHF loop of docs/design.md §1 with manual optimisation.

One `training_step` advances the loop by `loop.steps_per_iteration` environment steps, taken by `env.num_envs`
sub-envs at once (one batched action per vector step). Each vector step stores `num_envs` transitions and takes
`policy.updates_per_step × num_envs` SAC updates (the update-to-data ratio does not change with `num_envs`) on
rewards computed *now* by the algorithm's reward (the current r_θ, or the environment's for the oracle). Every
`algo.reward_every` env steps the reward takes `algo.reward_steps` gradient steps on
λ_D·(demonstration contrast) + λ_P·(Bradley–Terry), weighted as `algo.weighting` says. The presets only change
which of these parts are switched on; the recipe (`recipe.*`: BC warm start, demonstration replay, the reward's
schedule, β) is applied alike to every preset that learns a reward.

Every tensor the loop makes lives on the module's device (replay buffer, data mix, generator, noise); only the
environments' observations and actions cross to the host. Optimisers come from `self.optimizers()` and step after
`self.manual_backward`. Metrics are logged with `self.log_dict` against one x-axis, `step` = env steps (gradient
steps for behaviour cloning). Evaluation and checkpoints are scheduled by the callbacks in `aihf.callbacks`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from aihf import objectives
from aihf.callbacks import CheckpointEvery, EvaluateEvery
from aihf.errors import ConfigError, TrainingDiverged
from aihf.mujoco.buffer import ReplayBuffer
from aihf.mujoco.data_mix import DataMix
from aihf.mujoco.datasets import load_dataset, run_data_path
from aihf.mujoco.envs import env_dims, env_versions, make_vector_env
from aihf.mujoco.evaluation import PolicyEvaluator
from aihf.mujoco.reward_metrics import HeldoutRewardMetrics
from aihf.mujoco.rollout import VectorRollout
from aihf.mujoco.video import check_video_support, log_video, record_episode
from aihf.nonfinite import FiniteWatch, update_is_finite
from aihf.paths import written_whole
from aihf.provenance import commit_record, git_commit, platform_record
from aihf.resume import BudgetStream, Continuable
from aihf.run_dir import save_metrics
from aihf.teachers import SimulatedTeacher

REWARD_SOURCES = ("learned", "env", "constant")
POLICY_UPDATES = ("sac", "bc")
SCHEDULES = ("alternating", "sequential")
MULTI_PROCESS = ("ddp", "fsdp", "deepspeed")
log = logging.getLogger(__name__)


def validate_algo(cfg: DictConfig) -> None:
    a = cfg.algo
    for key, value, allowed in (("algo.reward_source", a.reward_source, REWARD_SOURCES),
                                ("algo.policy_update", a.policy_update, POLICY_UPDATES),
                                ("algo.schedule", a.schedule, SCHEDULES),
                                ("algo.weighting", a.weighting, objectives.WEIGHTINGS)):
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}: expected one of {allowed}")
    if learns_reward(a) and a.demo_weight == 0 and a.pref_weight == 0:
        raise ConfigError("algo.demo_weight and algo.pref_weight are both 0: the learned reward has no data")
    if a.reward_source == "learned" and a.schedule == "alternating" and a.reward_every < 1:
        raise ConfigError(f"algo.reward_every={a.reward_every}: the alternating schedule needs at least 1 env step "
                          f"between reward phases")
    if a.schedule == "sequential" and a.reward_pretrain_steps <= 0:
        raise ConfigError("algo.schedule=sequential fits the reward before RL: set algo.reward_pretrain_steps > 0")


def learns_reward(algo: DictConfig) -> bool:
    """The preset fits r_θ and runs SAC on it (irl, rlhf, aihf; not the sac oracle or bc)."""
    return algo.reward_source == "learned" and algo.policy_update == "sac"


def takes_recipe(algo: DictConfig) -> bool:
    """The recipe's tricks apply: SAC on a reward that is not the env's (the learned-reward presets, and the
    constant-reward control, which must get exactly what they get but r_θ), or on the env's reward where the preset
    asks for them (`algo.with_recipe`: `sac_recipe`, the oracle under the same recipe)."""
    return algo.policy_update == "sac" and (algo.reward_source in ("learned", "constant") or algo.with_recipe)


@dataclass(frozen=True)
class Recipe:
    """The recipe as this run applies it: its tricks for a preset that learns a reward with SAC (and the
    constant-reward control, and the oracle under the recipe), none otherwise (the `sac` oracle learns from the env
    alone; bc takes no RL steps)."""
    name: str
    bc_warmstart_steps: int
    demo_replay_fraction: float
    demo_replay_actor: bool  # the actor and α also on the replayed demonstration's states
    reward_every: int
    reward_steps: int
    beta: float | str  # a number or "alpha"

    @classmethod
    def of(cls, cfg: DictConfig) -> "Recipe":
        a, r = cfg.algo, cfg.recipe
        learns, applies = learns_reward(a), takes_recipe(a)
        beta = r.beta if r.beta is not None and learns else a.beta
        return cls(r.name, r.bc_warmstart_steps if applies else 0, r.demo_replay_fraction if applies else 0.0,
                   bool(r.demo_replay_actor), r.reward_every or a.reward_every, r.reward_steps or a.reward_steps,
                   "alpha" if beta is None else beta)


def validate_loop(cfg: DictConfig) -> None:
    loop, n = cfg.loop, cfg.env.num_envs
    if n < 1:
        raise ConfigError(f"env.num_envs={n}: expected at least 1")
    if loop.keep_checkpoints < 1:
        raise ConfigError(f"loop.keep_checkpoints={loop.keep_checkpoints}: expected at least 1")
    if cfg.algo.policy_update != "bc":
        if loop.steps_per_iteration % n:
            raise ConfigError(f"loop.steps_per_iteration={loop.steps_per_iteration} is not a multiple of "
                              f"env.num_envs={n}: one vector step is {n} env steps")
        if loop.total_env_steps % n:
            raise ConfigError(f"loop.total_env_steps={loop.total_env_steps} is not a multiple of env.num_envs={n}")
    strategy = str(cfg.trainer.strategy)
    if any(s in strategy for s in MULTI_PROCESS):
        raise ConfigError(f"trainer.strategy={strategy}: the MuJoCo domain trains in one process (its envs, replay "
                          f"buffer and SAC updates are sequential); scale with env.num_envs, a GPU, or seeds in "
                          f"parallel (--multirun)")


class MuJoCoAIHF(Continuable, pl.LightningModule):
    STATE_KEY, DOMAIN = "aihf", "MuJoCo"
    INIT_FROM_SAME = ("env.id", "algo.reward_source", "algo.policy_update")
    EXACT_RESUME = True  # loop.resume: the checkpoint holds the complete state (tests/test_resume.py)

    @classmethod
    def resumable(cls, cfg) -> tuple[str, ...]:
        # the teacher labels the run's training pairs when they are relabelled at load: then it is part of the run
        return tuple(k for k in cls.RESUMABLE if k != "teacher.") if cfg.data.relabel else cls.RESUMABLE

    def __init__(self, cfg: DictConfig):
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        validate_algo(cfg)
        validate_loop(cfg)
        self.recipe = Recipe.of(cfg)
        self.save_hyperparameters({"cfg": OmegaConf.to_container(cfg, resolve=True)})
        a, loop, env = cfg.algo, cfg.loop, cfg.env
        train_kwargs = OmegaConf.to_container(env.train_kwargs)
        self.rollout = VectorRollout(make_vector_env(env.id, env.num_envs, env.max_episode_steps,
                                                     env.vectorization_mode, **train_kwargs), seed=cfg.seed)
        self.obs_dim, self.act_dim = env_dims(self.rollout.envs)
        self.evaluator = PolicyEvaluator(env.id, env.max_episode_steps, seed=cfg.seed)
        if loop.video:
            check_video_support()  # before any training: a missing GL backend or moviepy is one line now

        space = self.rollout.envs.single_action_space
        self.action_low, self.action_high = space.low.copy(), space.high.copy()
        self.data = self._load_data()
        self.expert_return, self.random_return = self._normalisation_anchors()

        self.policy = hydra.utils.instantiate(cfg.policy, obs_dim=self.obs_dim, act_dim=self.act_dim,
                                              action_low=self.action_low.tolist(),
                                              action_high=self.action_high.tolist(), _convert_="all")
        self.learns_reward = learns_reward(a)
        self.reward = (hydra.utils.instantiate(cfg.reward, obs_dim=self.obs_dim, act_dim=self.act_dim,
                                               _convert_="all") if self.learns_reward else None)
        capacity = max(1, min(cfg.policy.buffer_size, loop.total_env_steps))
        self.buffer = ReplayBuffer(capacity, self.obs_dim, self.act_dim)

        # Every source of randomness is owned here and checkpointed with the module. The torch generator is
        # remade on the module's device when training starts (`on_fit_start`).
        self.torch_gen = torch.Generator().manual_seed(cfg.seed)
        self._pending_gen_state: tuple[str, torch.Tensor] | None = None
        self.np_rng = np.random.default_rng(cfg.seed)
        self.env_steps = 0
        self.episodes = 0
        self.reward_updates = 0
        self.policy_updates = 0
        self.warmstart_done = self.recipe.bc_warmstart_steps == 0
        self._update_credit = 0.0
        self.last_episode_return = float("nan")
        self.history: list[dict] = []
        self.final_metrics: dict | None = None
        self.wall_s = 0.0  # training wall time, carried across resumes
        self.started_commit = git_commit()  # the code this run starts with (provenance.commit_record)
        self._watch = FiniteWatch()
        self.skipped_updates = 0  # loop.nonfinite=skip: updates dropped for a non-finite loss or gradient
        self.run_dir = Path(cfg.run_dir)
        self._heldout: HeldoutRewardMetrics | None = None
        self._critic_loss, self._actor_loss = self.policy.critic_loss, self.policy.actor_loss

    # -- setup -------------------------------------------------------------------------------------------
    def _load_data(self) -> DataMix | None:
        cfg = self.cfg
        path = run_data_path(cfg)
        a = cfg.algo
        needs_demos = (a.needs_demos and a.demo_weight != 0 or a.policy_update == "bc"
                       or self.recipe.bc_warmstart_steps > 0 or self.recipe.demo_replay_fraction > 0)
        needs_prefs = a.needs_prefs and a.pref_weight != 0 and a.policy_update != "bc"
        if cfg.data.path is None and not Path(path).exists() and not (needs_demos or needs_prefs):
            return None  # e.g. training the first expert: no dataset exists yet, and none is needed
        anchors_given = cfg.env.expert_return is not None and cfg.env.random_return is not None
        dataset = load_dataset(path, self.obs_dim, self.act_dim, cfg.env.id, (self.action_low, self.action_high),
                               anchors_given)
        subset_seed = cfg.seed if cfg.data.subset_seed is None else cfg.data.subset_seed
        teacher = SimulatedTeacher(**OmegaConf.to_container(cfg.teacher)) if cfg.data.relabel else None
        return DataMix(dataset, cfg.data.num_demos, cfg.data.num_prefs, cfg.data.policy_window,
                       needs_demos, needs_prefs, subset_seed, cfg.data.demo_policy, teacher)

    def _normalisation_anchors(self) -> tuple[float | None, float | None]:
        meta = self.data.dataset.metadata if self.data is not None else {}
        expert = self.cfg.env.expert_return if self.cfg.env.expert_return is not None else meta.get("expert_return")
        rand = self.cfg.env.random_return if self.cfg.env.random_return is not None else meta.get("random_return")
        if expert is not None and expert == rand:
            source = "env.expert_return / env.random_return" if self.cfg.env.expert_return is not None or \
                self.cfg.env.random_return is not None else f"the metadata of {self.data.dataset.path}"
            raise ConfigError(f"{source}: expert and random returns are both {expert}; the normalised score "
                              f"(R - R_random) / (R_expert - R_random) needs two different anchors")
        return expert, rand

    def configure_optimizers(self):
        p = self.policy
        # The fused (single-kernel) Adam runs on CPU and CUDA alike; on other devices the default implementation.
        fused = {"fused": True} if self.device.type in ("cpu", "cuda") else {}
        # The temperature shares the actor's optimiser (its own parameter group and learning rate): the actor loss
        # treats α as a constant and the temperature loss treats log π as one, so one backward of their sum gives
        # each exactly its own gradient, for one optimiser step instead of two.
        actor_groups = [{"params": list(p.actor_parameters()), "lr": p.actor_lr}]
        if p.learn_alpha:
            actor_groups.append({"params": list(p.alpha_parameters()), "lr": p.alpha_lr})
        opts = [torch.optim.Adam(actor_groups, **fused),
                torch.optim.Adam(p.critic_parameters(), lr=p.critic_lr, **fused)]
        if self.reward is not None:
            opts.append(torch.optim.Adam(self.reward.parameters(), lr=self.reward.lr,
                                         weight_decay=self.reward.weight_decay, **fused))
        return opts

    @property
    def progress(self) -> int:
        """The loop's x-axis: env steps, or gradient steps for behaviour cloning."""
        return self.policy_updates if self.cfg.algo.policy_update == "bc" else self.env_steps

    @property
    def budget(self) -> int:
        return self.budget_of(self.cfg)

    @staticmethod
    def budget_of(cfg: DictConfig, state: dict | None = None) -> int:
        return cfg.loop.bc_steps if cfg.algo.policy_update == "bc" else cfg.loop.total_env_steps

    def train_dataloader(self):
        return torch.utils.data.DataLoader(BudgetStream(self), batch_size=None)

    def configure_callbacks(self):
        loop = self.cfg.loop
        callbacks = [EvaluateEvery(loop.eval_every)]
        if self.cfg.trainer.enable_checkpointing:
            callbacks.append(CheckpointEvery(self.run_dir / "checkpoints", loop.checkpoint_every,
                                             loop.keep_checkpoints))
        return callbacks

    def setup(self, stage: str) -> None:
        if self.trainer is not None and self.trainer.world_size > 1:
            raise ConfigError(f"the MuJoCo domain trains in one process, but the trainer has "
                              f"{self.trainer.world_size}: set trainer.devices=1")

    def on_fit_start(self) -> None:
        torch.set_num_threads(self.cfg.loop.torch_threads)
        if self.data is not None:
            self.data.to(self.device)
        if self.torch_gen.device != self.device:
            self.torch_gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        if self._pending_gen_state is not None:
            device_type, state = self._pending_gen_state
            if device_type != self.device.type:
                raise ConfigError(f"the checkpoint's generator is a {device_type} generator, this run is on "
                                  f"{self.device.type}: resume on the device the run started on")
            self.torch_gen.set_state(state)
            self._pending_gen_state = None
        self.restore_pending_optimizers(self.optimizers(use_pl_optimizer=False))
        if self.policy.compile:
            self._critic_loss = torch.compile(self.policy.critic_loss, mode=self.policy.compile_mode)
            self._actor_loss = torch.compile(self.policy.actor_loss, mode=self.policy.compile_mode)
        self._t_start = time.perf_counter()
        self._wall_at_start = self.wall_s

    # -- the loop ----------------------------------------------------------------------------------------
    def on_train_batch_start(self, batch, batch_idx) -> None:
        # Lightning re-logs a step-level value at every later step until the epoch ends (here: the whole run),
        # so an evaluation at 10k would reappear at 11k, 12k, ...: each row holds what its own step logged.
        self.trainer._results.reset(metrics=False)

    def training_step(self, batch, batch_idx):
        t0, start = time.perf_counter(), self.progress
        if start >= self.budget:
            return  # Lightning fetched one item past the budget
        metrics: dict[str, torch.Tensor] = {}
        episodes: list[float] = []
        if not self.warmstart_done:
            for _ in range(self.recipe.bc_warmstart_steps):
                metrics.update(self.bc_step())
            self.warmstart_done = True
        target = min(start + self.cfg.loop.steps_per_iteration, self.budget)
        if self.cfg.algo.policy_update == "bc":
            while self.policy_updates < target:
                metrics.update(self.bc_step())
                self.policy_updates += 1
        else:
            while self.env_steps < target:
                metrics.update(self.env_step(episodes))
        self.wall_s = self._wall_at_start + time.perf_counter() - self._t_start
        logs = {k: float(v) for k, v in metrics.items()}
        logs["charts/SPS"] = (self.progress - start) / max(time.perf_counter() - t0, 1e-9)
        if episodes:
            self.last_episode_return = float(np.mean(episodes))
            logs["charts/episodic_return"] = self.last_episode_return
            logs["charts/episodes"] = float(self.episodes)
        logs["time/wall_s"] = self.wall_s
        if self.cfg.loop.nonfinite == "skip":
            logs["charts/skipped_updates"] = float(self.skipped_updates)
        self.check_finite(logs)
        self.log_dict({"step": float(self.progress), **logs}, on_step=True, on_epoch=False, batch_size=1)
        self.log_dict({"env_steps": float(self.env_steps), "return": self.last_episode_return},
                      prog_bar=True, on_step=True, on_epoch=False, batch_size=1, logger=False)

    def check_finite(self, logs: dict) -> None:
        """Stop the run at the first NaN or infinity in this iteration's losses or in any parameter, naming the
        term, the step and the term's last finite value (the last checkpoint is the last good state)."""
        bad = self._watch.first_bad(logs)
        if bad is None:
            params = dict(self.named_parameters())
            finite = torch.stack([torch.isfinite(p).all() for p in params.values()])
            if not bool(finite.all()):
                name = list(params)[int((~finite).nonzero()[0])]
                bad = (f"parameter {name}", float("nan"))
        if bad is not None:
            self.diverged(f"{self._watch.message(*bad, self.progress)}; the last checkpoint in "
                          f"{self.run_dir / 'checkpoints'} (if any) is the last good state")
        self._watch.last.update(logs)

    def _update(self, opt, loss: torch.Tensor) -> bool:
        """Backward and step. Under loop.nonfinite=skip an update whose loss or gradients are not finite is dropped
        and counted instead (False: the caller logs nothing for it)."""
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.cfg.loop.nonfinite == "skip" and not update_is_finite(loss, opt):
            opt.zero_grad(set_to_none=True)
            if self.skipped_updates == 0:
                log.warning("a non-finite loss or gradient at step %d: the update is skipped (loop.nonfinite=skip); "
                            "skipped updates are counted in charts/skipped_updates", self.progress)
            self.skipped_updates += 1
            return False
        opt.step()
        return True

    def diverged(self, message: str) -> None:
        """Record the failure in metrics.json (valid JSON, with the history so far) and stop the run."""
        self.final_metrics = {**self._result({}), "status": "diverged", "error": message}
        self.write_metrics()
        raise TrainingDiverged(message)

    def select_actions(self, obs: np.ndarray) -> np.ndarray:
        n = len(obs)
        if self.env_steps < self.policy.learning_starts and self.recipe.bc_warmstart_steps == 0:
            return self.np_rng.uniform(self.action_low, self.action_high, (n, self.act_dim)).astype(np.float32)
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        return self.policy.act(obs_t, generator=self.torch_gen).cpu().numpy()

    def env_step(self, episodes: list[float]) -> dict:
        """One vector step (num_envs env steps), then the reward and policy updates that fall due."""
        p, a = self.policy, self.cfg.algo
        actions = self.select_actions(self.rollout.current_obs())
        transitions, finished = self.rollout.step(actions)
        self.buffer.add(**transitions)
        before = self.env_steps
        self.env_steps += self.rollout.num_envs
        self.episodes += len(finished)
        episodes.extend(ret for ret, _ in finished)

        if self.env_steps < p.learning_starts:
            return {}
        metrics: dict = {}
        if self.reward is not None:
            if before < p.learning_starts:
                for _ in range(a.reward_pretrain_steps):
                    metrics.update(self.reward_step())
            elif a.schedule == "alternating":
                every = self.recipe.reward_every
                phases = self.env_steps // every - before // every
                for _ in range(phases * self.recipe.reward_steps):
                    metrics.update(self.reward_step())
        self._update_credit += p.updates_per_step * self.rollout.num_envs
        while self._update_credit >= 1:
            self._update_credit -= 1
            metrics.update(self.policy_step())
        return metrics

    def batch_rewards(self, batch: dict) -> torch.Tensor:
        if self.cfg.algo.reward_source == "constant":
            return torch.full_like(batch["env_reward"], self.cfg.algo.constant_reward)
        if self.reward is None:
            return batch["env_reward"]
        with torch.no_grad():
            return self.reward(batch["obs"], batch["act"])

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn((n, self.act_dim), generator=self.torch_gen, device=self.device)

    def policy_step(self) -> dict:
        """One SAC update: critics, then actor and temperature, then the target critics."""
        p = self.policy
        n_demo = int(round(self.recipe.demo_replay_fraction * p.batch_size))
        batch = self.buffer.sample(p.batch_size - n_demo, self.torch_gen)
        if n_demo:  # demonstrations in SAC's batch, scored by the same reward as the agent's own steps
            demo = self.data.demo_replay_batch(n_demo, self.torch_gen)
            batch = {k: torch.cat([batch[k], demo[k]]) for k in batch}
        actor_opt, critic_opt = self.optimizers()[:2]

        qf_loss, q = self._critic_loss(batch["obs"], batch["act"], self.batch_rewards(batch), batch["next_obs"],
                                       batch["terminated"], self._noise(p.batch_size))
        logs = {}
        if self._update(critic_opt, qf_loss):
            logs.update({"losses/qf_loss": qf_loss.detach(), "losses/q_mean": q.mean()})
        actor_obs = batch["obs"] if self.recipe.demo_replay_actor else batch["obs"][:p.batch_size - n_demo]
        actor_loss, log_pi = self._actor_loss(actor_obs, self._noise(len(actor_obs)))
        if self._update(actor_opt, actor_loss + p.alpha_loss(log_pi) if p.learn_alpha else actor_loss):
            logs.update({"losses/actor_loss": actor_loss.detach(), "losses/entropy": -log_pi.mean()})
        p.update_targets()
        self.policy_updates += 1
        return {**logs, "losses/alpha": p.alpha}

    def bc_step(self) -> dict:
        actor_opt = self.optimizers()[0]
        loss = self.policy.bc_loss(*self.data.demo_batch(self.policy.batch_size, self.torch_gen))
        return {"losses/bc_nll": loss.detach()} if self._update(actor_opt, loss) else {}

    @property
    def beta(self) -> float:
        b = self.recipe.beta
        return float(self.policy.alpha) if b == "alpha" else float(b)

    def reward_loss(self, demo: tuple | None, policy_samples: tuple | None, prefs: dict | None
                    ) -> tuple[torch.Tensor, dict]:
        """The reward step's loss (docs/design.md §1), on explicit batches so tests can hand-make them."""
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
        # The demonstration contrast is a per-transition mean: its log-likelihood terms are transitions.
        loss = objectives.weighted_objective(demo_loss, pref_loss, a.demo_weight, a.pref_weight, a.weighting,
                                             num_demos=self.data.num_demo_steps, num_prefs=self.data.num_prefs)
        logs["reward/loss"] = loss.detach()
        return loss, logs

    def reward_batches(self) -> tuple[tuple | None, tuple | None, dict | None]:
        a, r = self.cfg.algo, self.reward
        demo = policy_samples = prefs = None
        if a.demo_weight != 0:
            demo = self.data.demo_batch(r.batch_size, self.torch_gen)
            recent = self.buffer.recent(self.cfg.data.policy_window)
            idx = torch.randint(0, len(recent["obs"]), (r.batch_size,), generator=self.torch_gen, device=self.device)
            policy_samples = (recent["obs"][idx], recent["act"][idx])
        if a.pref_weight != 0:
            prefs = self.data.pref_batch(r.pref_batch_size, self.torch_gen)
        return demo, policy_samples, prefs

    def reward_step(self) -> dict:
        loss, logs = self.reward_loss(*self.reward_batches())
        applied = self._update(self.optimizers()[2], loss)
        self.reward_updates += 1
        return logs if applied else {}

    # -- evaluation (scheduled by aihf.callbacks.EvaluateEvery) -------------------------------------------
    def normalised(self, ret: float) -> float | None:
        if self.expert_return is None or self.random_return is None:
            return None
        return (ret - self.random_return) / (self.expert_return - self.random_return)

    @property
    def heldout_metrics(self) -> HeldoutRewardMetrics | None:
        """The held-out reward metrics, prepared at the first evaluation (their own random stream and simulator,
        so training's randomness is untouched)."""
        if self._heldout is None and self.reward is not None and self.data is not None:
            loop = self.cfg.loop
            names = [p["name"] for p in self.data.dataset.metadata.get("policies", [])]
            demo_policy = names.index(self.data.demo_policy) if self.data.demo_policy in names else None
            demos = None
            if self.data.num_demos:
                demos = (self.data.demo_obs.cpu().numpy(), self.data.demo_act.cpu().numpy())
            self._heldout = HeldoutRewardMetrics(self.data.dataset, self.cfg.env.id, self.action_low,
                                                 self.action_high, self.cfg.policy.gamma, self.cfg.seed,
                                                 loop.epic_transitions, loop.epic_coverage, demo_policy=demo_policy,
                                                 demos=demos, mlp_classifier=loop.demo_mlp_classifier)
        return self._heldout

    @torch.no_grad()
    def learned_reward(self, obs: np.ndarray, act: np.ndarray, terminal: np.ndarray) -> np.ndarray:
        out = [self.reward(torch.as_tensor(obs[i:i + 65536], device=self.device),
                           torch.as_tensor(act[i:i + 65536], device=self.device)).double().cpu()
               for i in range(0, len(obs), 65536)]
        return torch.cat(out).numpy() if out else np.zeros(0)

    def reward_metrics(self) -> dict:
        """The learned reward against the true one on held-out data (aihf.mujoco.reward_metrics), and its level."""
        metrics = self.heldout_metrics
        return {} if metrics is None else {**{f"eval/{k}": v for k, v in metrics(self.learned_reward).items()},
                                           **self.reward_level()}

    @torch.no_grad()
    def reward_level(self) -> dict:
        """The learned reward's mean per step on the demonstrations and on the agent's latest steps. Neither reward
        loss pins the level (the demonstration term ignores a constant offset, Bradley–Terry sees it only through
        pairs of unequal length), yet in an env that terminates (Hopper) the level decides whether staying alive
        pays: a gap in return between presets can be a gap in level, which EPIC cannot see. (No random draw: the
        runs' streams are unchanged.)"""
        out = {}
        if self.data is not None and self.data.num_demos:
            out["eval/reward_level_demos"] = float(self.reward(self.data.demo_obs, self.data.demo_act).mean())
        if self.buffer.size:
            recent = self.buffer.recent(self.cfg.data.policy_window)
            out["eval/reward_level_agent"] = float(self.reward(recent["obs"], recent["act"]).mean())
        return out

    def evaluate(self, final: bool = False) -> dict:
        """Deterministic episodes of the current policy (their own seeds, untouched by training's randomness),
        the learned reward's held-out metrics, recorded in the history and returned for logging."""
        loop = self.cfg.loop
        mean, std = self.evaluator.evaluate(self.policy, loop.final_eval_episodes if final else loop.eval_episodes,
                                            self.device)
        out = {"eval/return_mean": mean, "eval/return_std": std}
        if not math.isfinite(mean):
            self.diverged(self._watch.message("eval/return_mean", mean, self.progress))
        self._watch.last["eval/return_mean"] = mean
        score = self.normalised(mean)
        if score is not None:
            out["eval/normalised_score"] = score
        out.update(self.reward_metrics())
        self.history.append({"step": self.progress, **out, "time/wall_s": self.wall_s, "final": final})
        if loop.save_ladder:
            self.save_rung(self.progress, mean)
        if final:
            self.final_metrics = {**self._result(out), "status": "finished"}
            if self.heldout_metrics is not None:  # EPIC under resamplings of the held-out trajectories (the report's)
                self.final_metrics["heldout_resampled"] = self.heldout_metrics.resampled(self.learned_reward)
            if loop.video:
                self.final_metrics["video"] = self.record_video()
        return out

    @rank_zero_only
    def record_video(self) -> str:
        path, _, fps = record_episode(self.policy, self.cfg.env.id, self.cfg.env.max_episode_steps,
                                 seed=10_000 + 1000 * self.cfg.seed, folder=self.run_dir / "videos",
                                 name=f"eval-step{self.progress}", device=self.device)
        log_video(self.loggers, path, self.progress, fps)
        return str(path)

    @rank_zero_only
    def save_rung(self, step: int, eval_return: float) -> None:
        """One rung of the expert quality ladder: the actor and what is needed to rebuild it."""
        ladder = self.run_dir / "ladder"
        ladder.mkdir(parents=True, exist_ok=True)
        with written_whole(ladder / f"step_{step:08d}.pt") as tmp:  # `collect` trusts every rung it finds
            torch.save({"actor": {k: v.cpu() for k, v in self.policy.actor.state_dict().items()},
                        "env_id": self.cfg.env.id, "env_steps": step,
                        "eval_return": eval_return, "hidden": list(self.cfg.policy.hidden),
                        "obs_dim": self.obs_dim, "act_dim": self.act_dim,
                        "action_low": self.action_low.tolist(), "action_high": self.action_high.tolist()}, tmp)

    def _result(self, final: dict) -> dict:
        return {"env_id": self.cfg.env.id, "algo": self.cfg.algo.name, "seed": self.cfg.seed, "budget": self.budget,
                "env_steps": self.env_steps, "num_envs": self.rollout.num_envs,
                "policy_updates": self.policy_updates, "reward_updates": self.reward_updates,
                "skipped_updates": self.skipped_updates, "episodes": self.episodes,
                "num_demos": self.data.num_demos if self.data else 0,
                "num_prefs": self.data.num_prefs if self.data else 0, "weighting": self.cfg.algo.weighting,
                "demo_weight": self.cfg.algo.demo_weight, "pref_weight": self.cfg.algo.pref_weight,
                "data_subset": self.data.subset() if self.data else None, **commit_record(self.started_commit),
                "platform": platform_record(),
                "teacher": OmegaConf.to_container(self.cfg.teacher) if self.cfg.data.relabel else "the dataset's",
                "recipe": asdict(self.recipe), "alpha_learned": bool(self.cfg.policy.learn_alpha),
                "final_eval_episodes": self.cfg.loop.final_eval_episodes,
                "expert_return": self.expert_return, "random_return": self.random_return,
                "train_wall_s": self.wall_s, "versions": env_versions(), **final,
                # the same held-out metrics for a constant reward and the length proxy: what "no learning" scores
                "baselines": self.heldout_metrics.baselines() if self.heldout_metrics is not None else {},
                "history": self.history}

    def on_train_end(self) -> None:
        if self.final_metrics is not None:
            self.write_metrics()

    @rank_zero_only
    def write_metrics(self) -> None:
        # Valid JSON: an undefined metric (e.g. pair accuracy with no decided pairs) is null, never NaN.
        save_metrics(self.run_dir / "metrics.json", self.final_metrics)

    def teardown(self, stage: str) -> None:
        self.rollout.close()
        self.evaluator.close()

    # -- state -------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["aihf"] = {"buffer": self.buffer.state_dict_filled(), "rollout": self.rollout.state_dict(),
                              "torch_gen": (self.torch_gen.device.type, self.torch_gen.get_state()),
                              "np_rng": self.np_rng.bit_generator.state, "env_steps": self.env_steps,
                              "episodes": self.episodes, "reward_updates": self.reward_updates,
                              "policy_updates": self.policy_updates, "update_credit": self._update_credit,
                              "warmstart_done": self.warmstart_done, "last_episode_return": self.last_episode_return,
                              "skipped_updates": self.skipped_updates, "history": self.history,
                              "final_metrics": self.final_metrics, "wall_s": self.wall_s,
                              "progress": self.progress, "git_commit": self.started_commit,
                              "dataset_sha256": self.data.dataset.sha256 if self.data else None}

    def check_resume(self, state: dict) -> None:
        """Before a resumed run writes anything: the data it learned from is the data it will go on with (the
        config may be the same while the file under data.path, e.g. the shipped one, was replaced). A run that
        draws no demonstrations or pairs (an expert, which reads the dataset for its score anchors only) may go on
        after its dataset was collected again from it."""
        learns_from_data = self.data is not None and (self.data.num_demos > 0 or self.data.num_prefs > 0)
        saved = state.get("dataset_sha256")
        if learns_from_data and saved is not None and saved != (now := self.data.dataset.sha256):
            raise ConfigError(f"loop.resume: the run learned from a dataset with sha256 {saved[:12]}, but "
                              f"{self.data.dataset.path} now has {now[:12]}: resume with the file it started on")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        s = checkpoint["aihf"]
        self.buffer.load_state_dict_filled(s["buffer"])
        self.rollout.load_state_dict(s["rollout"])
        self._pending_gen_state = s["torch_gen"]
        self.np_rng.bit_generator.state = s["np_rng"]
        self.env_steps, self.episodes = s["env_steps"], s["episodes"]
        self.reward_updates, self.policy_updates = s["reward_updates"], s["policy_updates"]
        self._update_credit, self.history = s["update_credit"], s["history"]
        self.warmstart_done, self.last_episode_return = s["warmstart_done"], s["last_episode_return"]
        self.final_metrics, self.wall_s = s["final_metrics"], s["wall_s"]
        self.skipped_updates = s.get("skipped_updates", 0)  # absent from checkpoints written before loop.nonfinite
        self.started_commit = s.get("git_commit")  # absent (None: unknown) from checkpoints before this record
