"""task=import: external episodes become an aihf dataset, built exactly as task=collect builds one.

Each source policy is one rung of the quality ladder: a Minari dataset (by id from the local Minari root, or by
folder), a label of the plain episode file, or a stable-baselines3 model file (rolled out here). Recorded episodes
are sampled per policy with the run's seed: the expert's first `collect.num_demos` become the demonstrations, and
`collect.rollouts_per_rung` of every policy (plus `collect.random_rollouts` of a uniform random policy, rolled out
in `env.id`: the random anchor of the normalised score) are split by episode into train and held-out trajectories,
which the simulated teacher then labels in pairs of segments (`aihf.mujoco.collect.assemble`). The format of the
plain file and of the result is in docs/data.md.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from omegaconf import DictConfig

from aihf.errors import ConfigError
from aihf.mujoco.collect import assemble, dataset_output, random_rollouts, rollout, save_dataset
from aihf.mujoco.envs import env_dims, make_env

EPISODE_ARRAYS = {"observations": 2, "actions": 2, "rewards": 1, "terminations": 1, "truncations": 1,
                  "episode_lengths": 1}


@dataclass
class RecordedPolicy:
    """One policy's recorded episodes: their returns up front, the episodes themselves read on demand."""
    name: str
    returns: np.ndarray
    read: Callable[[list[int]], list[dict]]
    provenance: dict = field(default_factory=dict)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def episode(obs, act, reward, terminated: bool) -> dict:
    return {"obs": np.asarray(obs, dtype=np.float32), "act": np.asarray(act, dtype=np.float32),
            "reward": np.asarray(reward, dtype=np.float32), "terminated": bool(terminated), "seed": None}


# -- Minari ------------------------------------------------------------------------------------------------------
def open_minari(ref: str):
    try:
        import minari
    except ImportError:
        raise ConfigError("source.minari needs the minari package: pip install 'aihf[minari]'") from None
    folder = Path(ref)
    if folder.is_dir():
        data = folder / "data" if (folder / "data").is_dir() else folder
        try:
            return minari.MinariDataset(data)
        except Exception as exc:  # noqa: BLE001 - Minari raises several kinds for a folder that is not a dataset
            raise ConfigError(f"source.minari={ref}: not a Minari dataset folder ({exc})") from None
    try:
        return minari.load_dataset(ref, download=False)
    except Exception as exc:  # noqa: BLE001
        root = minari.storage.get_dataset_path() if hasattr(minari, "storage") else "the Minari root"
        raise ConfigError(f"source.minari={ref}: no such local Minari dataset id or folder (looked in {root}; "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def minari_policies(refs: list[str], env_id: str) -> list[RecordedPolicy]:
    out = []
    for ref in refs:
        ds = open_minari(ref)
        spec = ds.spec.env_spec
        if spec is not None and spec.id != env_id:
            raise ConfigError(f"source.minari={ref} was recorded on {spec.id}, but env.id={env_id}")
        if type(ds.observation_space).__name__ != "Box" or type(ds.action_space).__name__ != "Box":
            raise ConfigError(f"source.minari={ref}: observations and actions must be flat Box spaces, found "
                              f"{ds.observation_space} and {ds.action_space}")
        returns = np.array([float(np.sum(e.rewards, dtype=np.float64)) for e in ds.iterate_episodes()])

        def read(indices: list[int], ds=ds) -> list[dict]:
            # Minari stores T + 1 observations per episode: the last one follows the last action.
            return [episode(e.observations[:-1], e.actions, e.rewards, e.terminations[-1])
                    for e in ds.iterate_episodes(episode_indices=indices)]
        prov = {"ref": ref, "dataset_id": ds.spec.dataset_id, "minari_version": ds.spec.minari_version,
                "algorithm_name": getattr(ds.spec, "algorithm_name", None), "total_episodes": ds.total_episodes,
                "total_steps": ds.total_steps}
        out.append(RecordedPolicy(ref, returns, read, prov))
    return out


# -- the plain episode file --------------------------------------------------------------------------------------
def load_episode_file(path: Path) -> dict[str, np.ndarray]:
    """The episode file (docs/data.md), each fault one line naming the file and the array."""
    if not path.is_file():
        raise ConfigError(f"source.episodes={path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - zipfile, pickle and format errors alike
        raise ConfigError(f"source.episodes={path} is not a readable .npz without pickled objects: {exc}") from None

    def fail(msg: str):
        raise ConfigError(f"episode file {path}: {msg}")

    for key, ndim in EPISODE_ARRAYS.items():
        if key not in arrays:
            fail(f"lacks the array {key!r} (arrays: {', '.join(EPISODE_ARRAYS)}, optional policy)")
        if arrays[key].ndim != ndim:
            fail(f"{key} has {arrays[key].ndim} dims, expected {ndim}")
    for key in ("observations", "actions", "rewards"):
        if arrays[key].dtype.kind != "f":
            fail(f"{key} has dtype {arrays[key].dtype}, expected floating point")
        if not np.isfinite(arrays[key]).all():
            fail(f"{key} contains NaN or inf (first at row {int(np.argwhere(~np.isfinite(arrays[key]))[0][0])})")
    for key in ("terminations", "truncations"):
        if arrays[key].dtype != np.bool_:
            fail(f"{key} has dtype {arrays[key].dtype}, expected bool")
    if arrays["episode_lengths"].dtype.kind not in "iu":
        fail(f"episode_lengths has dtype {arrays['episode_lengths'].dtype}, expected an integer type")
    steps = len(arrays["observations"])
    for key in ("actions", "rewards", "terminations", "truncations"):
        if len(arrays[key]) != steps:
            fail(f"{key} has {len(arrays[key])} rows but observations has {steps}")
    lengths = arrays["episode_lengths"].astype(np.int64)
    if (lengths < 1).any():
        fail(f"episode_lengths row {int(np.flatnonzero(lengths < 1)[0])} is not positive")
    if lengths.sum() != steps:
        fail(f"episode_lengths sum to {lengths.sum()}, but there are {steps} steps")
    ends = np.cumsum(lengths) - 1
    done = arrays["terminations"] | arrays["truncations"]
    if not done[ends].all():
        e = int(np.flatnonzero(~done[ends])[0])
        fail(f"episode {e} (steps {ends[e] - lengths[e] + 1}..{ends[e]}) ends with neither a termination nor a "
             f"truncation: an incomplete episode")
    inner = done.copy()
    inner[ends] = False
    if inner.any():
        fail(f"step {int(np.flatnonzero(inner)[0])} ends an episode (termination or truncation) inside an episode; "
             f"episode_lengths and the flags disagree")
    if "policy" in arrays:
        if arrays["policy"].shape != lengths.shape:
            fail(f"policy has shape {arrays['policy'].shape}, expected one label per episode {lengths.shape}")
        if arrays["policy"].dtype.kind not in "iuU":
            fail(f"policy has dtype {arrays['policy'].dtype}, expected strings or integers")
    return arrays


def episode_file_policies(path: Path) -> list[RecordedPolicy]:
    arrays = load_episode_file(path)
    lengths = arrays["episode_lengths"].astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    labels = arrays["policy"].astype(str) if "policy" in arrays else np.full(len(lengths), path.stem)
    rewards = arrays["rewards"].astype(np.float64)
    digest = sha256(path)
    out = []
    for label in dict.fromkeys(labels.tolist()):  # first-appearance order
        eps = np.flatnonzero(labels == label)

        def read(indices: list[int], eps=eps) -> list[dict]:
            rows = []
            for i in indices:
                s, n = starts[eps[i]], lengths[eps[i]]
                rows.append(episode(arrays["observations"][s:s + n], arrays["actions"][s:s + n],
                                    arrays["rewards"][s:s + n], arrays["terminations"][s + n - 1]))
            return rows
        returns = np.array([rewards[starts[e]:starts[e] + lengths[e]].sum() for e in eps])
        out.append(RecordedPolicy(str(label), returns, read, {"label": str(label), "episodes": int(len(eps))}))
    for p in out:
        p.provenance.update(file=str(path), sha256=digest)
    return out


# -- stable-baselines3 -------------------------------------------------------------------------------------------
def load_sb3(path: Path, algo: str):
    try:
        import stable_baselines3
    except ImportError:
        raise ConfigError("source.sb3 needs stable-baselines3: pip install 'aihf[sb3]'") from None
    if not path.is_file():
        raise ConfigError(f"source.sb3: {path}: no such model file")
    cls = getattr(stable_baselines3, algo.upper())
    try:
        return cls.load(path, device="cpu")
    except Exception as exc:  # noqa: BLE001 - a wrong class or a corrupt zip
        raise ConfigError(f"source.sb3: {path} does not load as a stable-baselines3 {algo.upper()} model "
                          f"(source.sb3_algo={algo}): {str(exc).splitlines()[0] if str(exc) else exc!r}") from None


def sb3_policy(model, deterministic: bool):
    return lambda obs: model.predict(obs, deterministic=deterministic)[0]


# -- the task ----------------------------------------------------------------------------------------------------
def pick_expert(names: list[str], means: list[float], wanted: str | None) -> int:
    if wanted is None:
        return int(np.argmax(means))
    if wanted not in names:
        raise ConfigError(f"source.expert={wanted} is not one of the source's policies: {names}")
    return names.index(wanted)


def ladder_subset(order: list[int], expert: int, max_rungs: int) -> list[int]:
    """At most max_rungs policies, evenly spaced along the ladder (ascending mean return), the expert always in."""
    if len(order) <= max_rungs:
        return order
    keep = np.unique(np.linspace(0, len(order) - 1, max_rungs).round().astype(int))
    chosen = [order[i] for i in keep]
    if expert not in chosen:
        chosen = [p for p in chosen if p != chosen[-1]] + [expert]
    return sorted(chosen, key=order.index)


def import_episodes(cfg: DictConfig) -> dict:
    s, c = cfg.source, cfg.collect
    given = [k for k in ("minari", "episodes", "sb3") if s[k]]
    if len(given) != 1:
        raise ConfigError("task=import needs exactly one of source.minari=[<id or folder>, ...], "
                          f"source.episodes=<file>.npz or source.sb3=[<model>.zip, ...]; found {given or 'none'}")
    output = dataset_output(cfg)
    env = make_env(cfg.env.id, cfg.env.max_episode_steps)
    obs_dim, act_dim = env_dims(env)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    seed = 1_000_000 * (cfg.seed + 1)
    random_eps = random_rollouts(env, c.random_rollouts, seed)
    seed += c.random_rollouts

    if given[0] == "sb3":
        paths = [Path(p) for p in s.sb3]
        models = [load_sb3(p, s.sb3_algo) for p in paths]
        for p, m in zip(paths, models):
            shape = m.observation_space.shape, m.action_space.shape
            if shape != ((obs_dim,), (act_dim,)):
                raise ConfigError(f"source.sb3: {p} expects observations {shape[0]} and actions {shape[1]}, but "
                                  f"env {cfg.env.id} has ({obs_dim},) and ({act_dim},)")
        rungs = []
        for i, m in enumerate(models):
            rungs.append([rollout(env, sb3_policy(m, False), seed + k) for k in range(c.rollouts_per_rung)])
            seed += c.rollouts_per_rung
            print(f"\rimport: {i + 1}/{len(models)} models rolled out", end="", file=sys.stderr)
        print(file=sys.stderr)
        names = [str(p) for p in paths]
        means = [float(np.mean([e["reward"].sum(dtype=np.float64) for e in r])) for r in rungs]
        expert = pick_expert(names, means, s.expert)
        order = sorted(range(len(names)), key=lambda i: means[i])
        order = ladder_subset(order, expert, c.max_rungs)
        demos = [rollout(env, sb3_policy(models[expert], c.demo_deterministic), seed + k)
                 for k in range(c.num_demos)]
        from stable_baselines3 import __version__ as sb3_version
        provenance = {"kind": "sb3", "algo": s.sb3_algo, "stable_baselines3": sb3_version,
                      "models": [{"path": str(p), "sha256": sha256(p)} for p in paths]}
        policies = [{"name": names[i], "env_steps": None, "eval_return": means[i], "source_episodes": None,
                     "sampled_from": "rollouts of the model (stochastic)"} for i in order]
        ladder = [rungs[i] for i in order]
    else:
        recorded = (minari_policies(list(s.minari), cfg.env.id) if given[0] == "minari"
                    else episode_file_policies(Path(s.episodes)))
        names = [p.name for p in recorded]
        means = [float(p.returns.mean()) if len(p.returns) else -np.inf for p in recorded]
        expert = pick_expert(names, means, s.expert)
        order = ladder_subset(sorted(range(len(recorded)), key=lambda i: means[i]), expert, c.max_rungs)
        demos, ladder = [], []
        for i in order:
            p = recorded[i]
            need = c.rollouts_per_rung + (c.num_demos if i == expert else 0)
            if len(p.returns) < need:
                raise ConfigError(f"source policy {p.name} has {len(p.returns)} episodes, but {need} are needed "
                                  f"(collect.rollouts_per_rung{' + collect.num_demos' if i == expert else ''}): "
                                  f"lower them")
            picked = sorted(rng.permutation(len(p.returns))[:need].tolist())
            eps = p.read(picked)
            if i == expert:
                demos = eps[:c.num_demos]
                eps = eps[c.num_demos:]
            ladder.append(eps)
        for eps in [*demos, *(e for rung in ladder for e in rung)]:
            if eps["obs"].shape[1:] != (obs_dim,) or eps["act"].shape[1:] != (act_dim,):
                raise ConfigError(f"source episodes have observations {eps['obs'].shape[1:]} and actions "
                                  f"{eps['act'].shape[1:]}, but env {cfg.env.id} has ({obs_dim},) and ({act_dim},)")
        provenance = {"kind": given[0], "policies": [recorded[i].provenance for i in order]}
        policies = [{"name": names[i], "env_steps": None, "eval_return": means[i],
                     "source_episodes": int(len(recorded[i].returns)),
                     "sampled_from": "recorded episodes (mean return over all of them)"} for i in order]
    policies = [{"name": "random", "env_steps": 0, "eval_return": None}] + policies
    dataset = assemble(cfg, env, demos, [random_eps, *ladder], policies, 1 + order.index(expert),
                       {"source": provenance})
    return save_dataset(dataset, output, env, t0)
