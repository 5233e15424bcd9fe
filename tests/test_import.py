"""task=import: external episodes (Minari datasets made here with Minari's own DataCollector, the plain episode
file, stable-baselines3 model files) become aihf datasets built like task=collect's, and train."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli import run_cli  # noqa: E402

from aihf.mujoco.datasets import DEMO, HELDOUT, TRAIN, load_dataset  # noqa: E402

STEPS = 60  # short episodes keep the files and the test small
COMMON = ["task=import", f"env.max_episode_steps={STEPS}", "collect.num_demos=2", "collect.rollouts_per_rung=4",
          "collect.random_rollouts=3", "collect.num_pairs=40", "collect.num_heldout_pairs=12",
          "collect.segment_length=20", "teacher.return_scale=1.0"]


def act_stand(obs: np.ndarray) -> np.ndarray:
    """A hand-made Hopper controller that damps its joint angles: it stays upright for the whole short episode
    (return about 59 over 60 steps), where random actions fall within about 20 steps (return about 15)."""
    return (0.3 * np.tanh(-obs[2:5])).astype(np.float32)


def play(env: gym.Env, policy, episodes: int, first_seed: int) -> list[dict]:
    out = []
    for k in range(episodes):
        obs, _ = env.reset(seed=first_seed + k)
        env.action_space.seed(first_seed + k)
        rows = {"obs": [], "act": [], "rew": []}
        while True:
            act = env.action_space.sample() if policy is None else policy(obs)
            rows["obs"].append(obs)
            rows["act"].append(act)
            obs, rew, term, trunc, _ = env.step(act)
            rows["rew"].append(rew)
            if term or trunc:
                break
        out.append({**{k: np.asarray(v) for k, v in rows.items()}, "term": term, "trunc": trunc})
    return out


@pytest.fixture(scope="module")
def minari_root(tmp_path_factory):
    """Two Minari datasets on Hopper-v5, recorded with minari.DataCollector: a random and a scripted policy."""
    pytest.importorskip("minari")
    import minari
    root = tmp_path_factory.mktemp("minari")
    mp = pytest.MonkeyPatch()
    mp.setenv("MINARI_DATASETS_PATH", str(root))
    for name, policy in (("random", None), ("scripted", act_stand)):
        env = minari.DataCollector(gym.make("Hopper-v5", max_episode_steps=STEPS), record_infos=False)
        play(env, policy, 8, first_seed=100)
        env.create_dataset(dataset_id=f"test/hopper-{name}-v0", algorithm_name=name, eval_env="Hopper-v5",
                           author="aihf tests", description="tiny test data")
        env.close()
    yield root
    mp.undo()


def check_dataset(path: Path, policy_names: list[str]):
    ds = load_dataset(path, 11, 3, "Hopper-v5")
    a, meta = ds.arrays, ds.metadata
    assert [p["name"] for p in meta["policies"]] == ["random", *policy_names]
    assert meta["counts"] == {"demos": 2, "train_trajectories": a["traj_split"].tolist().count(TRAIN),
                              "heldout_trajectories": a["traj_split"].tolist().count(HELDOUT),
                              "train_pairs": 40, "heldout_pairs": 12}
    # demonstrations come from the expert policy; the random anchor from real random rollouts in the env
    demo_policy = set(a["traj_policy"][a["traj_split"] == DEMO].tolist())
    assert demo_policy == {[p["name"] for p in meta["policies"]].index(meta["expert"])}
    assert np.isclose(meta["random_return"], a["traj_return"][a["traj_policy"] == 0].mean())
    # every policy appears in both splits, and pairs stay within theirs
    for split in (TRAIN, HELDOUT):
        assert set(a["traj_policy"][a["traj_split"] == split]) == set(range(len(meta["policies"])))
        idx = a["pair_index"][a["pair_split"] == split]
        assert set(a["traj_split"][idx[:, [0, 3]].ravel()]) == {split}
    return ds


def test_minari_import_trains_end_to_end(minari_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    out = tmp_path / "imported.npz"
    code, _, err = run_cli([*COMMON, "source.minari=[test/hopper-random-v0,test/hopper-scripted-v0]",
                            f"collect.output={out}", f"hydra.run.dir={tmp_path / 'import_run'}"], tmp_path)
    assert code == 0, err
    ds = check_dataset(out, ["test/hopper-random-v0", "test/hopper-scripted-v0"])
    meta = ds.metadata
    assert meta["expert"] == "test/hopper-scripted-v0"  # the higher mean return
    assert meta["source"]["kind"] == "minari"
    assert [p["dataset_id"] for p in meta["source"]["policies"]] == ["test/hopper-random-v0",
                                                                     "test/hopper-scripted-v0"]
    # the imported steps are the recorded ones: each demonstration is one of the scripted dataset's episodes
    import minari
    recorded = [e for e in minari.load_dataset("test/hopper-scripted-v0").iterate_episodes()]
    a = ds.arrays
    for t in np.flatnonzero(a["traj_split"] == DEMO):
        s, n = a["traj_start"][t], a["traj_len"][t]
        assert any(len(e.rewards) == n and np.allclose(e.observations[:-1], a["obs"][s:s + n])
                   and np.allclose(e.actions, a["act"][s:s + n]) for e in recorded)
    # ... and a folder works as well as an id
    out2 = tmp_path / "by_folder.npz"
    code, _, err = run_cli([*COMMON, f"source.minari=[{minari_root / 'test' / 'hopper-scripted-v0'}]",
                            f"collect.output={out2}", f"hydra.run.dir={tmp_path / 'import_run2'}"], tmp_path)
    assert code == 0, err
    # end to end: a short aihf run on the imported data
    code, _, err = run_cli(["algo=aihf", "debug=fast", f"data.path={out}", "data.num_prefs=20",
                            "algo.reward_pretrain_steps=3", "loop.torch_threads=1",
                            f"hydra.run.dir={tmp_path / 'train'}"], tmp_path)
    assert code == 0, err
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert metrics["status"] == "finished"
    assert metrics["expert_return"] == pytest.approx(meta["expert_return"])


def write_episode_file(path: Path, **changes) -> list[dict]:
    env = gym.make("Hopper-v5", max_episode_steps=STEPS)
    eps = play(env, None, 6, 10) + play(env, act_stand, 8, 20)
    labels = ["random-agent"] * 6 + ["scripted"] * 8
    arrays = {"observations": np.concatenate([e["obs"] for e in eps]),  # float64, as recorded
              "actions": np.concatenate([e["act"] for e in eps]),
              "rewards": np.concatenate([e["rew"] for e in eps]),
              "terminations": np.concatenate([np.eye(len(e["rew"]), dtype=bool)[-1] & e["term"] for e in eps]),
              "truncations": np.concatenate([np.eye(len(e["rew"]), dtype=bool)[-1] & e["trunc"] for e in eps]),
              "episode_lengths": np.array([len(e["rew"]) for e in eps]), "policy": np.array(labels)}
    for k, fn in changes.items():
        arrays[k] = fn(arrays[k])
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return eps


def test_episode_file_import(tmp_path):
    src = tmp_path / "episodes.npz"
    eps = write_episode_file(src)
    out = tmp_path / "from_file.npz"
    code, _, err = run_cli([*COMMON, f"source.episodes={src}", f"collect.output={out}",
                            f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert code == 0, err
    ds = check_dataset(out, ["random-agent", "scripted"])
    a = ds.arrays
    assert ds.metadata["expert"] == "scripted"
    assert ds.metadata["source"]["policies"][0]["sha256"]
    scripted_returns = sorted(float(e["rew"].sum()) for e in eps[6:])
    assert ds.metadata["policies"][2]["eval_return"] == pytest.approx(np.mean(scripted_returns))
    for t in np.flatnonzero(a["traj_policy"] == 2):  # every scripted trajectory is a recorded episode, whole
        assert any(np.isclose(a["traj_return"][t], r, atol=1e-3) for r in scripted_returns)
    # the same seed imports the same dataset; another seed samples other episodes
    out2 = tmp_path / "again.npz"
    run_cli([*COMMON, f"source.episodes={src}", f"collect.output={out2}", f"hydra.run.dir={tmp_path / 'r2'}"],
            tmp_path)
    again = load_dataset(out2).arrays
    assert all(np.array_equal(a[k], again[k]) for k in a)


def test_sb3_models_become_a_ladder(tmp_path):
    sb3 = pytest.importorskip("stable_baselines3")
    import torch
    env = gym.make("Hopper-v5", max_episode_steps=STEPS)
    paths = []
    for i, scale in enumerate((0.1, 3.0)):
        model = sb3.SAC("MlpPolicy", env, policy_kwargs={"net_arch": [16]}, seed=i, device="cpu")
        with torch.no_grad():
            model.actor.mu.weight.mul_(scale)
        model.save(tmp_path / f"agent{i}.zip")
        paths.append(tmp_path / f"agent{i}.zip")
    out = tmp_path / "zoo.npz"
    code, _, err = run_cli([*COMMON, f"source.sb3=[{paths[0]},{paths[1]}]", f"collect.output={out}",
                            f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert code == 0, err
    ds = load_dataset(out, 11, 3, "Hopper-v5")
    names = [p["name"] for p in ds.metadata["policies"]]
    assert sorted(names[1:]) == sorted(map(str, paths)) and ds.metadata["expert"] in names
    assert ds.metadata["source"]["kind"] == "sb3" and len(ds.metadata["source"]["models"]) == 2
    assert (ds.arrays["traj_split"] == DEMO).sum() == 2
