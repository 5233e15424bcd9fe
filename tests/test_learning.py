"""The reward fit really learns: on held-out data it beats the rewards that know nothing (a constant and the
episode-length proxy) on the metrics that those cannot game."""

import torch

from aihf.mujoco.module import MuJoCoAIHF
from conftest import fast_cfg


def test_reward_fit_learns_held_out_preferences(hopper_data, tmp_path):
    module = MuJoCoAIHF(fast_cfg("rlhf", hopper_data, tmp_path, ["data.num_prefs=60", "reward.lr=3e-3",
                                                                "loop.epic_transitions=300"]))
    opt = torch.optim.Adam(module.reward.parameters(), lr=3e-3)
    module.optimizers = lambda: [None, None, opt]  # the reward step alone, outside a Trainer
    module.manual_backward = lambda loss: loss.backward()
    before = module.reward_metrics()
    for _ in range(300):
        module.reward_step()
    after = module.reward_metrics()
    base = module.heldout_metrics.baselines()
    # what a constant scores: EPIC 1/√2, no correlation, a coin flip on equal-length pairs
    assert abs(base["baseline/constant/epic"] - 0.5 ** 0.5) < 1e-9
    assert base["baseline/constant/pref_accuracy_equal_length"] == 0.5
    assert after["eval/epic"] < before["eval/epic"] and after["eval/epic"] < base["baseline/constant/epic"] - 0.1
    assert after["eval/pref_accuracy_equal_length"] >= 0.75
    assert after["eval/pref_accuracy"] > max(base["baseline/constant/pref_accuracy"],
                                             base["baseline/length/pref_accuracy"])
    # per transition the alive indicator is a strong proxy here (a falling Hopper's last step earns little), so
    # the learned reward is only required to correlate, not to beat it
    assert after["eval/reward_pearson"] > 0.3
