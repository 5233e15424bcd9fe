"""Gymnasium environments, made by id, with the version recorded next to every result."""

from __future__ import annotations

import gymnasium as gym

from aihf.errors import ConfigError


def make_env(env_id: str, max_episode_steps: int | None = None, seed: int | None = None, **kwargs) -> gym.Env:
    try:
        env = gym.make(env_id, max_episode_steps=max_episode_steps, **kwargs)
    except gym.error.Error as exc:  # unknown id, removed version, missing dependency
        raise ConfigError(f"env.id={env_id!r} cannot be made by gymnasium: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"env.train_kwargs={kwargs} rejected by {env_id}: {exc}") from None
    if not isinstance(env.action_space, gym.spaces.Box) or not isinstance(env.observation_space, gym.spaces.Box):
        raise ConfigError(f"env.id={env_id!r}: aihf's MuJoCo domain needs Box observation and action spaces")
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def env_versions() -> dict:
    import gymnasium
    import mujoco
    return {"gymnasium": gymnasium.__version__, "mujoco": mujoco.__version__}


def env_dims(env: gym.Env) -> tuple[int, int]:
    return int(env.observation_space.shape[0]), int(env.action_space.shape[0])
