"""Gymnasium environments, made by id, with the version recorded next to every result.

Training uses gymnasium's vector API (`make_vector_env`) with same-step autoreset: when a sub-env's episode ends,
`step` returns the first observation of its next episode and the true last observation in `info["final_obs"]`,
so no env step is spent on a reset. Every sub-env is wrapped in `ResumableEnv`, whose complete state (physics,
elapsed steps, the reset-noise generator) goes into the run's checkpoint: a resumed run continues the episodes in
progress exactly where they were.

Nothing here imports a rendering backend: training runs on machines without OpenGL (see `video.py` for videos).
"""

from __future__ import annotations

import pickle

import gymnasium as gym
import mujoco
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from aihf.errors import ConfigError

VECTORIZATION_MODES = ("sync", "async")


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


class ResumableEnv(gym.Wrapper):
    """Exposes a MuJoCo env's complete mid-episode state, so a checkpoint can hold the episode in progress."""

    def _time_limit(self) -> gym.wrappers.TimeLimit | None:
        env = self.env
        while isinstance(env, gym.Wrapper):
            if isinstance(env, gym.wrappers.TimeLimit):
                return env
            env = env.env
        return None

    @property
    def resume_state(self) -> dict:
        """Physics (the whole mjData, so quantities an env reads before stepping, like Ant's body positions, are
        as they were), elapsed steps of the time limit, and the generator of the env's reset noise."""
        u = self.unwrapped
        limit = self._time_limit()
        return {"mjdata": torch.frombuffer(bytearray(pickle.dumps(u.data)), dtype=torch.uint8),
                "elapsed_steps": None if limit is None else limit._elapsed_steps,
                "np_random": u.np_random.bit_generator.state}

    @resume_state.setter
    def resume_state(self, state: dict) -> None:
        u = self.unwrapped
        mujoco.mj_copyData(u.data, u.model, pickle.loads(state["mjdata"].numpy().tobytes()))
        limit = self._time_limit()
        if limit is not None:
            limit._elapsed_steps = state["elapsed_steps"]
        u.np_random.bit_generator.state = state["np_random"]


def make_vector_env(env_id: str, num_envs: int, max_episode_steps: int | None = None, mode: str = "sync",
                    **kwargs) -> gym.vector.VectorEnv:
    """`num_envs` copies of `env_id` stepped as one batch (same-step autoreset; see the module docstring)."""
    if mode not in VECTORIZATION_MODES:
        raise ConfigError(f"env.vectorization_mode={mode!r}: expected one of {VECTORIZATION_MODES}")
    make_env(env_id, max_episode_steps, **kwargs).close()  # a bad id or kwargs fails here with one line

    def factory():
        return ResumableEnv(make_env(env_id, max_episode_steps, **kwargs))

    cls = SyncVectorEnv if mode == "sync" else AsyncVectorEnv
    return cls([factory] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)


def env_versions() -> dict:
    import gymnasium
    return {"gymnasium": gymnasium.__version__, "mujoco": mujoco.__version__}


def env_dims(env: gym.Env | gym.vector.VectorEnv) -> tuple[int, int]:
    obs_space = getattr(env, "single_observation_space", env.observation_space)
    act_space = getattr(env, "single_action_space", env.action_space)
    return int(obs_space.shape[0]), int(act_space.shape[0])
