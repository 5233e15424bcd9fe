"""The collect task: demonstrations, ladder trajectories and teacher-labelled pairs, with full metadata."""

import json

import numpy as np
import pytest
import torch
from conftest import write_ladder

from aihf.errors import ConfigError
from aihf.mujoco.datasets import DEMO, HELDOUT, TRAIN, load_dataset


def test_collected_dataset_is_consistent(hopper_data):
    ds = load_dataset(hopper_data, 11, 3, "Hopper-v5")
    a, meta = ds.arrays, json.loads(hopper_data.with_suffix(".json").read_text())
    assert meta["env_id"] == "Hopper-v5" and meta["env_version"] == "v5"
    assert meta["obs_dim"] == 11 and meta["act_dim"] == 3
    assert {"gymnasium", "mujoco"} <= set(meta["versions"])
    # every trajectory's true return is the sum of its stored rewards, and its policy is recorded
    for t in range(len(a["traj_len"])):
        s, n = a["traj_start"][t], a["traj_len"][t]
        assert np.isclose(a["traj_return"][t], a["reward"][s:s + n].sum(), rtol=1e-4)
        assert 0 <= a["traj_policy"][t] < len(meta["policies"])
    assert (a["traj_split"] == DEMO).sum() == meta["counts"]["demos"] == 2
    assert np.isclose(meta["expert_return"], a["traj_return"][a["traj_split"] == DEMO].mean())
    assert np.isclose(meta["random_return"], a["traj_return"][a["traj_policy"] == 0].mean())
    # pairs stay within their split: held-out evaluation never sees training trajectories
    for split in (TRAIN, HELDOUT):
        idx = a["pair_index"][a["pair_split"] == split]
        assert set(a["traj_split"][idx[:, 0]]) | set(a["traj_split"][idx[:, 3]]) == {split}
    assert set(np.unique(a["pair_label"])) <= {0.0, 0.5, 1.0}


def test_teacher_labels_follow_true_segment_returns(hopper_data):
    """With a Bradley–Terry teacher, the preferred segment has the higher true return more often than not."""
    ds = load_dataset(hopper_data)
    seg = ds.segments(ds.pairs(TRAIN))
    decided = seg["label"] != 0.5
    agree = ((seg["true_a"] > seg["true_b"]).float() == seg["label"])[decided].float().mean()
    assert agree > 0.6


def test_a_ladder_trained_in_parts_is_read_from_its_folders(tmp_path):
    """An expert continued with loop.init_from writes its later rungs into a second run's folder; collect reads both
    in env-step order, and where both hold a step, the later folder's rung (the continuation) is the one used."""
    import os
    from aihf.mujoco.collect import load_ladder
    first = write_ladder(tmp_path / "a" / "ladder", rungs=3)          # env steps 0, 1000, 2000
    second = write_ladder(tmp_path / "b" / "ladder", rungs=2)         # other weights, moved to steps 2000, 3000
    for i, f in enumerate(sorted(second.glob("step_*.pt"))):
        torch.save({**torch.load(f, weights_only=True), "env_steps": 2000 + 1000 * i, "eval_return": 100.0 + i}, f)
    rungs = load_ladder(f"{first}{os.pathsep}{second}", "Hopper-v5")
    assert [r["env_steps"] for r in rungs] == [0, 1000, 2000, 3000]
    assert [r["eval_return"] for r in rungs] == [0.0, 1.0, 100.0, 101.0]
    assert rungs[2]["file"].startswith(str(second))
    with pytest.raises(ConfigError, match=f"collect.ladder_dir: {tmp_path / 'missing'} is not a folder"):
        load_ladder(f"{first}{os.pathsep}{tmp_path / 'missing'}", "Hopper-v5")


def test_the_expert_is_the_best_candidate_over_fresh_episodes_not_the_luckiest_evaluation(tmp_path):
    """The training-time evaluation only nominates candidates (its top k); each is rolled out from the same fresh
    start states and the best mean return is the expert, whatever their training-time order."""
    from aihf.mujoco.collect import choose_expert, load_ladder, rollout, actor_policy
    from aihf.mujoco.envs import make_env
    ladder = write_ladder(tmp_path / "ladder", rungs=4)
    env = make_env("Hopper-v5", 60)
    rungs = load_ladder(str(ladder), "Hopper-v5")
    fresh = [np.mean([rollout(env, actor_policy(r["actor"], True, None), 77 + k)["reward"].sum() for k in range(3)])
             for r in rungs]
    # training-time evaluations that rank the rungs against their fresh returns, so the choice must come from the
    # fresh episodes
    order = np.argsort(fresh)  # worst first
    for rank, i in enumerate(order):
        rungs[i]["eval_return"] = float(10 - rank)
    top3 = [rungs[i] for i in order[:3]]  # the three best by training-time evaluation: the three worst fresh
    expert, record = choose_expert(env, rungs, candidates=3, episodes=3, first_seed=77)
    assert expert is max(top3, key=lambda r: fresh[rungs.index(r)])
    assert expert is not rungs[order[-1]]  # the best rung fresh was never nominated
    assert [c["name"] for c in record["candidates"]] == [r["name"] for r in top3]
    assert [c["mean_return"] for c in record["candidates"]] == pytest.approx([fresh[i] for i in order[:3]], rel=1e-5)
    only, record = choose_expert(env, rungs, candidates=1, episodes=3, first_seed=77)
    assert only is rungs[order[0]] and [c["name"] for c in record["candidates"]] == [rungs[order[0]]["name"]]


def test_an_expert_runs_ladder_is_what_collect_reads(hopper_data, tmp_path):
    """`loop.save_ladder=true` keeps the actor at every evaluation; collect rebuilds each rung as the run's actor at
    that step, and no temporary file of a rung's write is taken for a rung."""
    from conftest import fast_cfg

    from aihf.app import train
    from aihf.mujoco.collect import load_ladder
    run = tmp_path / "expert"
    train(fast_cfg("sac", hopper_data, run, ["loop.total_env_steps=300", "policy.learning_starts=100",
                                             "loop.eval_every=100", "loop.eval_episodes=1", "loop.save_ladder=true",
                                             "loop.torch_threads=1", "trainer.enable_checkpointing=true"]))
    assert sorted(p.name for p in (run / "ladder").iterdir()) == [f"step_{s:08d}.pt" for s in (100, 200, 300)]
    (run / "ladder" / "step_00000400.pt.tmp-99").write_bytes(b"half a rung")  # a writer killed mid-way
    rungs = load_ladder(str(run / "ladder"), "Hopper-v5")
    assert [r["env_steps"] for r in rungs] == [100, 200, 300]
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    actor = {k.removeprefix("policy.actor."): v for k, v in last.items() if k.startswith("policy.actor.")}
    assert actor and rungs[-1]["actor"].state_dict().keys() == actor.keys()
    assert all(torch.equal(rungs[-1]["actor"].state_dict()[k], v) for k, v in actor.items())
    assert not all(torch.equal(rungs[0]["actor"].state_dict()[k], v) for k, v in actor.items())
