"""The reward fit really learns: held-out preference accuracy and return correlation of r_θ."""

import torch

from aihf.mujoco.module import MuJoCoAIHF
from conftest import fast_cfg


def test_reward_fit_learns_held_out_preferences(hopper_data, tmp_path):
    module = MuJoCoAIHF(fast_cfg("rlhf", hopper_data, tmp_path, ["data.num_prefs=60", "reward.lr=3e-3"]))
    opt = torch.optim.Adam(module.reward.parameters(), lr=3e-3)
    module.optimizers = lambda: [None, None, opt]  # the reward step alone, outside a Trainer
    module.manual_backward = lambda loss: loss.backward()
    before = module.reward_metrics()
    for _ in range(300):
        module.reward_step()
    after = module.reward_metrics()
    assert after["eval/pref_accuracy"] >= 0.75
    assert after["eval/return_correlation"] > 0.6
    assert after["eval/pref_accuracy"] > before["eval/pref_accuracy"] or before["eval/pref_accuracy"] >= 0.75
