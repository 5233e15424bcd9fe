"""Vector envs (env.num_envs), the transitions VectorRollout stores under same-step autoreset, and that the loop
creates every tensor on the module's device (checked on CPU by recording tensor factories made without one)."""

from __future__ import annotations

import inspect
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

import aihf
from aihf.app import train
from aihf.errors import ConfigError
from aihf.mujoco.buffer import ReplayBuffer
from aihf.mujoco.envs import make_env, make_vector_env
from aihf.mujoco.module import MuJoCoAIHF
from aihf.mujoco.rollout import VectorRollout
from conftest import fast_cfg, fit

PRESETS = ["aihf", "irl", "rlhf", "bc", "sac", "constant", "sac_recipe"]
# One intra-op thread: these runs are small, and two threads on a busy 2-core machine spin-wait for each other.
ONE_THREAD = "loop.torch_threads=1"


# -- every preset with 4 envs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", PRESETS)
def test_preset_runs_with_four_envs(algo, hopper_data, tmp_path):
    result = train(fast_cfg(algo, hopper_data, tmp_path, ["env.num_envs=4", ONE_THREAD]))
    assert result["num_envs"] == 4
    assert {"machine", "torch", "gymnasium", "mujoco"} <= set(result["platform"])  # where it ran
    assert [h["step"] for h in result["history"]] == ([200] if algo == "bc" else [300, 600])
    if algo == "bc":  # no env steps: 200 gradient steps on the demonstrations
        assert result["env_steps"] == 0 and result["policy_updates"] == 200 and result["episodes"] == 0
        return
    assert result["env_steps"] == 600
    # One update per env step from learning_starts=200 on. A vector step takes 4 env steps, then
    # updates_per_step × 4 = 4 updates once env_steps >= 200: the vector steps ending at 200, 204, ..., 600
    # (101 of them) update, 404 updates in all (num_envs=1: 401, the steps 200..600).
    assert result["policy_updates"] == ((600 - 200) // 4 + 1) * 4 == 404
    assert result["episodes"] > 0  # debug episodes last at most 100 steps: 4 envs × 600/4 steps end several
    # Reward steps follow env steps, not vector steps: 3 pre-fit steps at 200, then (alternating) 5 at each of
    # 300, 400, 500, 600; the sequential pipeline (rlhf) only pre-fits.
    # (sac and the two controls fit no r_θ)
    assert result["reward_updates"] == {"aihf": 3 + 4 * 5, "irl": 3 + 4 * 5, "rlhf": 3}.get(algo, 0)


def test_num_envs_must_divide_the_step_counts(hopper_data, tmp_path):
    with pytest.raises(ConfigError, match="env.num_envs=3"):
        MuJoCoAIHF(fast_cfg("sac", hopper_data, tmp_path, ["env.num_envs=3"]))  # 100 steps per iteration


# -- VectorRollout against plain gymnasium envs ----------------------------------------------------------------
def _compare_with_single_envs(max_episode_steps: int, action_fn, steps: int, n: int = 2, seed: int = 3):
    """Step a VectorRollout and n plain single envs (reset with the same seeds, reset again without a seed when an
    episode ends, as same-step autoreset does) with the same actions; check every stored transition against the
    single envs'. Returns the counts of truncated and terminated steps seen."""
    rollout = VectorRollout(make_vector_env("Hopper-v5", n, max_episode_steps), seed=seed)
    singles = [make_env("Hopper-v5", max_episode_steps) for _ in range(n)]
    single_obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    returns = [[] for _ in range(n)]  # rewards of each single env's episode in progress
    buffer = ReplayBuffer(steps * n, singles[0].observation_space.shape[0], singles[0].action_space.shape[0])
    counts = Counter()
    try:
        for t in range(steps):
            np.testing.assert_array_equal(rollout.current_obs(), np.stack(single_obs))
            actions = action_fn(t)
            transitions, finished = rollout.step(actions)
            buffer.add(**transitions)
            expected_finished = []
            for i, env in enumerate(singles):
                obs, reward, terminated, truncated, _ = env.step(actions[i])
                returns[i].append(reward)
                assert np.array_equal(transitions["obs"][i], single_obs[i])
                # the stored s' is the true next observation: on the last step of an episode its final one, not
                # the first observation of the next episode that the vector env already returned
                assert np.array_equal(transitions["next_obs"][i], obs), (t, i, terminated, truncated)
                assert transitions["env_reward"][i] == reward
                assert bool(transitions["terminated"][i]) == terminated  # truncation bootstraps: not terminated
                single_obs[i] = obs
                if terminated or truncated:
                    counts["terminated" if terminated else "truncated"] += 1
                    expected_finished.append((sum(returns[i]), len(returns[i])))
                    returns[i] = []
                    single_obs[i] = env.reset()[0]
                    assert not np.array_equal(single_obs[i], obs)  # the reset really changed the observation
            assert [ret for ret, _ in finished] == pytest.approx([ret for ret, _ in expected_finished], rel=1e-12)
            assert [length for _, length in finished] == [length for _, length in expected_finished]
        # the buffer keeps the same transitions, terminated as 1.0 exactly where an episode truly ended
        assert buffer.terminated[: steps * n].sum().item() == counts["terminated"]
        np.testing.assert_allclose(buffer.next_obs[(steps - 1) * n:].numpy(), transitions["next_obs"], rtol=1e-6)
    finally:
        rollout.close()
        for env in singles:
            env.close()
    return counts


def test_rollout_stores_final_observation_of_truncated_episodes():
    rng = np.random.default_rng(0)
    # small actions keep Hopper healthy for 20 steps: every episode ends by the time limit
    counts = _compare_with_single_envs(20, lambda t: rng.uniform(-0.1, 0.1, (2, 3)).astype(np.float32), steps=45)
    assert counts["truncated"] == 4 and counts["terminated"] == 0


def test_rollout_stores_true_terminations():
    rng = np.random.default_rng(0)
    # full-scale random bang-bang actions make Hopper fall well before its 1000-step limit
    counts = _compare_with_single_envs(1000, lambda t: rng.choice([-1.0, 1.0], (2, 3)).astype(np.float32), steps=60)
    assert counts["terminated"] >= 2 and counts["truncated"] == 0


def test_rollout_state_continues_episodes_in_progress():
    """A rollout restored from its state_dict (fresh envs) steps exactly as the original, across episode ends
    (the time limit's elapsed steps and the reset-noise generator are part of the state)."""
    rng = np.random.default_rng(1)
    actions = rng.uniform(-0.1, 0.1, (60, 2, 3)).astype(np.float32)
    a = VectorRollout(make_vector_env("Hopper-v5", 2, 20), seed=5)
    b = VectorRollout(make_vector_env("Hopper-v5", 2, 20), seed=5)
    try:
        for t in range(27):  # past the first time limit (20): the reset noise has drawn from each env's generator
            a.step(actions[t])
        b.load_state_dict(a.state_dict())
        ends = 0
        for t in range(27, 60):  # 7 steps into the second episodes: their time limit comes at 40, then at 60
            ta, fa = a.step(actions[t])
            tb, fb = b.step(actions[t])
            assert fa == fb, t
            ends += len(fa)
            for k in ta:
                assert np.array_equal(ta[k], tb[k]), (t, k)
        assert ends == 4 and np.array_equal(a.current_obs(), b.current_obs())
    finally:
        a.close()
        b.close()


# -- device placement --------------------------------------------------------------------------------------------
FACTORIES = ("zeros", "ones", "empty", "full", "rand", "randn", "randint", "randperm", "arange", "tensor",
             "as_tensor", "linspace", "eye")
FACTORY_FUNCS = {getattr(torch, name): name for name in FACTORIES}
TORCH_DIR = os.path.dirname(os.path.realpath(torch.__file__)) + os.sep
AIHF_DIR = os.path.dirname(os.path.realpath(aihf.__file__)) + os.sep


def _aihf_caller(frame) -> str | None:
    """file:line of the first frame outside torch, if it is aihf's code (Lightning's own calls do not count)."""
    while frame is not None and os.path.realpath(frame.f_code.co_filename).startswith(TORCH_DIR):
        frame = frame.f_back
    if frame is None:
        return None
    path = os.path.realpath(frame.f_code.co_filename)
    if not path.startswith(AIHF_DIR):
        return None
    return f"{Path(path).relative_to(Path(AIHF_DIR).parent)}:{frame.f_lineno} ({frame.f_code.co_name})"


class FactoryRecorder(TorchFunctionMode):
    """Records the tensor factory calls made by aihf's code: those without a device= (they would make CPU tensors
    on a GPU run), and, to show the recorder sees anything at all, those with one."""

    def __init__(self, log: dict):
        super().__init__()
        self.log = log

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = FACTORY_FUNCS.get(func)
        if name is not None:
            where = _aihf_caller(inspect.currentframe().f_back)
            if where is not None:
                if kwargs.get("device") is None:
                    self.log["missing"].add(f"torch.{name} at {where}")
                else:
                    self.log["with_device"] += 1
        return func(*args, **kwargs)


def _record_factories(module, monkeypatch) -> dict:
    log = {"missing": set(), "with_device": 0, "calls": Counter(), "active": False}
    # torch.from_numpy does not pass through torch-function modes, and always makes a CPU tensor: wrap it.
    from_numpy = torch.from_numpy

    def recording_from_numpy(array):
        if log["active"]:
            where = _aihf_caller(inspect.currentframe().f_back)
            if where is not None:
                log["missing"].add(f"torch.from_numpy at {where}")
        return from_numpy(array)

    monkeypatch.setattr(torch, "from_numpy", recording_from_numpy)
    for hook in ("training_step", "evaluate"):  # evaluate runs from the EvaluateEvery callback
        original = getattr(module, hook)

        def watched(*args, _original=original, _hook=hook, **kwargs):
            log["calls"][_hook] += 1
            log["active"] = True
            try:
                with FactoryRecorder(log):
                    return _original(*args, **kwargs)
            finally:
                log["active"] = False

        monkeypatch.setattr(module, hook, watched)
    return log


@pytest.mark.parametrize("algo", ["aihf", "sac"])
def test_loop_makes_every_tensor_on_the_module_device(algo, hopper_data, tmp_path, monkeypatch):
    """A factory call without device= inside training_step or evaluate makes a CPU tensor, which on a GPU run
    either fails (mixing devices) or silently moves data through the host. Checked here on CPU, where such a
    call still works, by recording them. aihf covers the BC warm start, demonstration replay (demo_replay_fraction
    0.25) and the learned reward's steps and held-out metrics; sac the environment reward."""
    cfg = fast_cfg(algo, hopper_data, tmp_path, ["env.num_envs=2", "loop.total_env_steps=300", ONE_THREAD])
    if algo == "aihf":
        assert cfg.recipe.demo_replay_fraction > 0 and cfg.recipe.bc_warmstart_steps > 0
    module = MuJoCoAIHF(cfg)
    log = _record_factories(module, monkeypatch)
    fit(module, tmp_path)
    assert module.env_steps == 300 and module.policy_updates > 0
    assert log["calls"]["training_step"] >= 3 and log["calls"]["evaluate"] >= 1
    assert log["with_device"] > 0, "the recorder saw no factory call at all: it is not watching"
    assert not log["missing"], "tensor factories without device=:\n" + "\n".join(sorted(log["missing"]))


def test_multi_process_strategy_is_refused_in_one_line(hopper_data, tmp_path):
    """The MuJoCo loop trains in one process: DDP would not sync its several backward passes per step."""
    with pytest.raises(ConfigError, match=r"trainer.strategy=ddp.*one process"):
        train(fast_cfg("aihf", hopper_data, tmp_path, ["trainer=ddp"]))
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_trainer_without_a_gpu_is_one_line(hopper_data, tmp_path):
    with pytest.raises(ConfigError, match=r"trainer \(accelerator=gpu.*No supported gpu backend"):
        train(fast_cfg("sac", hopper_data, tmp_path, ["trainer=gpu"]))
    assert not (tmp_path / "csv").exists()
