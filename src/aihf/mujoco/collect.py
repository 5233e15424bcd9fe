"""task=collect: demonstrations from an expert and labelled trajectory pairs from its quality ladder.

The ladder is the folder of actors an `experiment=expert` run saved at each evaluation. The best rung is the
expert: its deterministic rollouts are the demonstrations. Every rung (and a uniform random policy) yields
stochastic rollouts; they are split into train and held-out trajectories, and pairs within each split are
labelled by the simulated teacher on their true (segment) returns.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from aihf.errors import ConfigError
from aihf.mujoco.datasets import DEMO, HELDOUT, TRAIN, TrajectoryDataset, metadata_path, validate
from aihf.mujoco.envs import env_dims, env_versions, make_env
from aihf.mujoco.sac import TanhGaussianActor
from aihf.provenance import git_commit
from aihf.teachers import SimulatedTeacher


def ladder_files(ladder_dir: str) -> list[Path]:
    """The rung files of one ladder folder, or of several joined by the path separator (an expert trained in parts,
    each continued from the last with loop.init_from into its own run), folder by folder."""
    files = []
    for folder in ladder_dir.split(os.pathsep):
        if not Path(folder).is_dir():
            raise ConfigError(f"collect.ladder_dir: {folder} is not a folder (expected <run>/ladder, several joined "
                              f"by {os.pathsep!r})")
        found = sorted(Path(folder).glob("step_*.pt"))
        if not found:
            raise ConfigError(f"collect.ladder_dir: {folder} holds no step_*.pt rungs (train one with "
                              f"experiment=expert)")
        files += found
    return files


def load_ladder(ladder_dir: str, env_id: str) -> list[dict]:
    """The rungs in env-step order, one per step: where folders overlap, a later folder's rung (the continuation)
    replaces an earlier folder's."""
    by_step = {}
    for f in ladder_files(str(ladder_dir)):
        rung = torch.load(f, map_location="cpu", weights_only=True)
        if rung["env_id"] != env_id:
            raise ConfigError(f"{f} was trained on {rung['env_id']}, but env.id={env_id}")
        actor = TanhGaussianActor(rung["obs_dim"], rung["act_dim"], rung["hidden"],
                                  torch.tensor(rung["action_low"]), torch.tensor(rung["action_high"]))
        actor.load_state_dict(rung["actor"])
        by_step[rung["env_steps"]] = {"name": f"{f.stem}", "actor": actor.eval(), "env_steps": rung["env_steps"],
                                      "eval_return": rung["eval_return"], "file": str(f)}
    return [by_step[step] for step in sorted(by_step)]


def actor_policy(actor: TanhGaussianActor, deterministic: bool, generator: torch.Generator):
    """An aihf actor as a function observation -> action."""
    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        o = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)
        return (actor.deterministic(o) if deterministic else actor.sample(o, generator)[0])[0].numpy()
    return act


def rollout(env, policy, seed: int) -> dict[str, np.ndarray]:
    """One episode of `policy` (observation -> action; None = uniform random actions) from a seeded reset."""
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    steps = {"obs": [], "act": [], "reward": []}
    done, terminated = False, False
    while not done:
        act = env.action_space.sample() if policy is None else policy(obs)
        act = np.asarray(act, dtype=np.float32)
        steps["obs"].append(obs)
        steps["act"].append(act)
        obs, rew, terminated, truncated, _ = env.step(act)
        steps["reward"].append(rew)
        done = terminated or truncated
    out = {k: np.asarray(v, dtype=np.float32) for k, v in steps.items()}
    out["terminated"] = bool(terminated)
    out["seed"] = seed
    return out


def make_pairs(trajs: list[int], lengths: np.ndarray, rewards: list[np.ndarray], n: int, segment: int,
               teacher: SimulatedTeacher, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    index, labels = [], []
    for _ in range(n):
        a, b = rng.choice(trajs, size=2, replace=False)
        if segment > 0:
            la, lb = min(segment, lengths[a]), min(segment, lengths[b])
            sa, sb = rng.integers(0, lengths[a] - la + 1), rng.integers(0, lengths[b] - lb + 1)
        else:
            la, lb, sa, sb = lengths[a], lengths[b], 0, 0
        ga = teacher.segment_return(rewards[a][sa:sa + la])
        gb = teacher.segment_return(rewards[b][sb:sb + lb])
        index.append([a, sa, la, b, sb, lb])
        labels.append(teacher.label(ga, gb, rng))
    return np.asarray(index, dtype=np.int64).reshape(-1, 6), np.asarray(labels, dtype=np.float32)


def dataset_output(cfg: DictConfig) -> Path:
    """collect.output, checked before any work: a new .npz path (nothing is ever overwritten)."""
    if cfg.collect.output is None:
        raise ConfigError(f"task={cfg.task} needs collect.output=<file>.npz")
    output = Path(cfg.collect.output)
    if output.suffix != ".npz":
        raise ConfigError(f"collect.output={output} must end in .npz")
    if output.exists() or metadata_path(output).exists():
        raise ConfigError(f"collect.output={output} already exists: nothing was overwritten; choose another path")
    return output


def random_rollouts(env, count: int, first_seed: int) -> list[dict]:
    return [rollout(env, None, first_seed + k) for k in range(count)]


def assemble(cfg: DictConfig, env, demos: list[dict], ladder: list[list[dict]], policies: list[dict],
             expert: int, provenance: dict) -> TrajectoryDataset:
    """The dataset from episodes: demonstrations, then the ladder's episodes (one list per policy, policy 0 the
    random one) split into train and held-out, then teacher-labelled pairs of segments within each split.

    Shared by task=collect (aihf's own ladder) and task=import (external episodes), so both build the same thing.
    `policies[i]` describes policy i (name, env_steps, eval_return, ...); `expert` is the demonstrators' index.
    """
    c = cfg.collect
    obs_dim, act_dim = env_dims(env)
    teacher = SimulatedTeacher(**OmegaConf.to_container(cfg.teacher))
    rng = np.random.default_rng(cfg.seed)
    trajs = [{**t, "policy": expert, "split": DEMO} for t in demos]
    every = round(1 / c.heldout_fraction)
    n = 0
    for policy, episodes in enumerate(ladder):
        for t in episodes:
            # Alternate splits along the ladder so both splits span every quality level; whole episodes only.
            trajs.append({**t, "policy": policy, "split": HELDOUT if n % every == 0 else TRAIN})
            n += 1

    lengths = np.array([len(t["reward"]) for t in trajs])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rewards = [t["reward"] for t in trajs]
    splits = np.array([t["split"] for t in trajs])
    train_ids, held_ids = list(np.flatnonzero(splits == TRAIN)), list(np.flatnonzero(splits == HELDOUT))
    for name, ids, count in (("train", train_ids, c.num_pairs), ("held-out", held_ids, c.num_heldout_pairs)):
        if count and len(ids) < 2:
            raise ConfigError(f"the {name} split has {len(ids)} trajectories, too few for pairs: raise "
                              f"collect.rollouts_per_rung or collect.random_rollouts (or set its pair count to 0)")
    tr_index, tr_label = make_pairs(train_ids, lengths, rewards, c.num_pairs, c.segment_length, teacher, rng)
    ho_index, ho_label = make_pairs(held_ids, lengths, rewards, c.num_heldout_pairs, c.segment_length, teacher, rng)
    arrays = {
        "obs": np.concatenate([t["obs"] for t in trajs]).astype(np.float32),
        "act": np.concatenate([t["act"] for t in trajs]).astype(np.float32),
        "reward": np.concatenate(rewards).astype(np.float32), "traj_start": starts.astype(np.int64),
        "traj_len": lengths.astype(np.int64),
        "traj_return": np.array([r.astype(np.float64).sum() for r in rewards]),
        "traj_policy": np.array([t["policy"] for t in trajs], dtype=np.int64), "traj_split": splits.astype(np.int64),
        "pair_index": np.concatenate([tr_index, ho_index]), "pair_label": np.concatenate([tr_label, ho_label]),
        "pair_split": np.array([TRAIN] * len(tr_label) + [HELDOUT] * len(ho_label), dtype=np.int64),
    }
    demo_returns = arrays["traj_return"][splits == DEMO]
    random_returns = arrays["traj_return"][arrays["traj_policy"] == 0]
    metadata = {
        "env_id": cfg.env.id, "env_version": cfg.env.id.rsplit("-", 1)[-1], "obs_dim": obs_dim, "act_dim": act_dim,
        "max_episode_steps": cfg.env.max_episode_steps, "policies": policies, "expert": policies[expert]["name"],
        "expert_return": float(demo_returns.mean()), "expert_return_std": float(demo_returns.std()),
        "random_return": float(random_returns.mean()) if len(random_returns) else None,
        "teacher": teacher.to_dict(), "segment_length": c.segment_length, "seed": cfg.seed,
        "trajectory_seeds": [t.get("seed") for t in trajs], "trajectory_terminated": [t["terminated"] for t in trajs],
        "collect": OmegaConf.to_container(c), "versions": env_versions(), "task": cfg.task, **provenance,
        "git_commit": git_commit(),  # the code that collected it (experts table)
        "counts": {"demos": int((splits == DEMO).sum()), "train_trajectories": len(train_ids),
                   "heldout_trajectories": len(held_ids), "train_pairs": len(tr_label),
                   "heldout_pairs": len(ho_label)},
    }
    return TrajectoryDataset(arrays, metadata)


def save_dataset(dataset: TrajectoryDataset, output: Path, env, t0: float) -> dict:
    """Validate what was built exactly as training will load it, then write it (never over an existing file)."""
    low, high = env.action_space.low, env.action_space.high
    validate(dataset.arrays, dataset.metadata, str(output), action_bounds=(low, high))
    dataset.save(output)
    meta = dataset.metadata
    rand = "none" if meta["random_return"] is None else f"{meta['random_return']:.1f}"
    print(f"wrote {output}: {meta['counts']}; expert return {meta['expert_return']:.1f}, random {rand}, "
          f"{time.perf_counter() - t0:.0f} s")
    return meta


def choose_expert(env, rungs: list[dict], candidates: int, episodes: int, first_seed: int
                  ) -> tuple[dict, dict]:
    """The expert rung and how it was chosen: the `candidates` rungs of best training-time evaluation, each rolled
    out deterministically from the same `episodes` start states; the best mean return wins (ties: the later rung).
    A training-time evaluation of 5 episodes picks its maximum's luck too (Hopper's swing between 800 and 3,000
    from one 10k-step evaluation to the next); the fresh episodes do not."""
    ranked = sorted(rungs, key=lambda r: (r["eval_return"], r["env_steps"]), reverse=True)[:candidates]
    if candidates == 1:
        r = ranked[0]
        return r, {"rule": "best training-time evaluation",
                   "candidates": [{"name": r["name"], "env_steps": r["env_steps"], "eval_return": r["eval_return"]}]}
    scored = []
    for r in ranked:
        policy = actor_policy(r["actor"], True, None)
        returns = [float(rollout(env, policy, first_seed + k)["reward"].astype(np.float64).sum())
                   for k in range(episodes)]
        scored.append((float(np.mean(returns)), r["env_steps"], r, returns))
    best = max(scored, key=lambda x: (x[0], x[1]))[2]
    return best, {"rule": f"best mean of {episodes} fresh deterministic episodes among the {len(ranked)} rungs of "
                          f"best training-time evaluation", "first_seed": first_seed,
                  "candidates": [{"name": r["name"], "env_steps": r["env_steps"], "eval_return": r["eval_return"],
                                  "mean_return": mean, "std_return": float(np.std(returns))}
                                 for mean, _, r, returns in scored]}


def collect(cfg: DictConfig) -> dict:
    c = cfg.collect
    if c.ladder_dir is None:
        raise ConfigError("task=collect needs collect.ladder_dir=<run>/ladder and collect.output=<file>.npz")
    output = dataset_output(cfg)
    env = make_env(cfg.env.id, cfg.env.max_episode_steps)
    rungs = load_ladder(c.ladder_dir, cfg.env.id)
    seed = 1_000_000 * (cfg.seed + 1)
    # the selection's start states lie beyond every rollout's below
    expert, selection = choose_expert(env, rungs, c.expert_candidates, c.expert_eval_episodes, seed + 500_000)
    if len(rungs) > c.max_rungs:
        keep = np.unique(np.linspace(0, len(rungs) - 1, c.max_rungs).round().astype(int))
        rungs = [rungs[i] for i in keep if rungs[i] is not expert] + [expert]
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()

    policies = [{"name": "random", "env_steps": 0, "eval_return": None}]
    policies += [{"name": r["name"], "env_steps": r["env_steps"], "eval_return": r["eval_return"]} for r in rungs]
    demos = [rollout(env, actor_policy(expert["actor"], c.demo_deterministic, gen), seed + k)
             for k in range(c.num_demos)]
    seed += c.num_demos
    ladder = [random_rollouts(env, c.random_rollouts, seed)]
    seed += c.random_rollouts
    for i, r in enumerate(rungs):
        ladder.append([rollout(env, actor_policy(r["actor"], False, gen), seed + k)
                       for k in range(c.rollouts_per_rung)])
        seed += c.rollouts_per_rung
        print(f"\rcollect: {i + 1}/{len(rungs)} rungs rolled out", end="", file=sys.stderr)
    print(file=sys.stderr)
    dataset = assemble(cfg, env, demos, ladder, policies, 1 + rungs.index(expert),
                       {"source": {"kind": "aihf ladder", "ladder_dir": str(c.ladder_dir)},
                        "expert_selection": selection})
    return save_dataset(dataset, output, env, t0)
