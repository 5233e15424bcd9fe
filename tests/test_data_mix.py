"""What a run learns from: each seed its own subset of demonstrations and pairs (unless data.subset_seed holds it),
demonstrations of another quality (data.demo_policy), and pairs relabelled by another teacher (data.relabel)."""

import numpy as np
import pytest
import torch

from aihf.errors import ConfigError
from aihf.mujoco.datasets import TRAIN
from aihf.mujoco.module import MuJoCoAIHF
from conftest import fast_cfg


def mix(hopper_data, tmp_path, *extra):
    return MuJoCoAIHF(fast_cfg("aihf", hopper_data, tmp_path, list(extra))).data


def test_each_seed_draws_its_own_subset_unless_fixed(hopper_data, tmp_path):
    subsets = [mix(hopper_data, tmp_path, f"seed={s}").subset() for s in range(3)]
    assert len({tuple(s["pairs"]) for s in subsets}) == 3  # 20 of 60 pairs: three seeds, three subsets
    fixed = [mix(hopper_data, tmp_path, f"seed={s}", "data.subset_seed=7").subset() for s in range(2)]
    assert fixed[0]["pairs"] == fixed[1]["pairs"] and fixed[0]["seed"] == 7
    assert len(set(subsets[0]["pairs"])) == 20


def test_demonstrations_from_a_middle_rung(hopper_data, tmp_path):
    data = mix(hopper_data, tmp_path, "data.demo_policy=middle")
    meta, a = data.dataset.metadata, data.dataset.arrays
    policy = [p["name"] for p in meta["policies"]].index(data.demo_policy)
    assert data.demo_policy != meta["expert"] and meta["policies"][policy]["eval_return"] is not None
    assert all(a["traj_policy"][t] == policy and a["traj_split"][t] == TRAIN for t in data.demo_trajs)
    with pytest.raises(ConfigError, match="data.demo_policy=nobody: not a policy of"):
        mix(hopper_data, tmp_path, "data.demo_policy=nobody")


def test_relabelled_pairs_follow_the_configured_teacher(hopper_data, tmp_path):
    """An always-wrong teacher (perfectly rational, then every label flipped) labels every decided pair against its
    true order; without data.relabel the dataset's own labels stay."""
    stored = mix(hopper_data, tmp_path).train_pair_batch
    data = mix(hopper_data, tmp_path, "data.relabel=true", "teacher.beta=inf", "teacher.mistake_prob=1.0")
    batch = data.train_pair_batch
    decided = batch["true_a"] != batch["true_b"]
    assert data.relabelled and decided.sum() > 10
    torch.testing.assert_close(batch["label"][decided], (batch["true_a"] < batch["true_b"]).float()[decided])
    assert not torch.equal(stored["label"], batch["label"])
    assert np.array_equal(data.train_pairs, mix(hopper_data, tmp_path).train_pairs)  # same pairs, new labels


def test_subsets_are_shared_across_presets_and_nested_across_sizes(hopper_data, tmp_path):
    """With one seed, aihf and rlhf learn from the same pairs (whatever their demonstrations), and 10 pairs are
    the first 10 of the 30 drawn for a larger run, so a scarcity curve changes one thing at a time."""
    aihf = MuJoCoAIHF(fast_cfg("aihf", hopper_data, tmp_path, ["seed=3"])).data
    rlhf = MuJoCoAIHF(fast_cfg("rlhf", hopper_data, tmp_path, ["seed=3", "recipe=paper"])).data
    assert rlhf.num_demos == 0 and aihf.num_demos == 1
    assert np.array_equal(aihf.train_pairs, rlhf.train_pairs)
    small = set(mix(hopper_data, tmp_path, "seed=3", "data.num_prefs=10").train_pairs)
    large = set(mix(hopper_data, tmp_path, "seed=3", "data.num_prefs=30").train_pairs)
    assert small < large
