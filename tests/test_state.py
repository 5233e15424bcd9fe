"""All training state lives in the module: a Lightning checkpoint restores networks, optimisers, the replay
buffer, counters and random generators."""

import numpy as np
import pytorch_lightning as pl
import torch

from aihf.mujoco.module import MuJoCoAIHF
from conftest import fast_cfg


def test_checkpoint_restores_loop_state(hopper_data, tmp_path):
    cfg = fast_cfg("aihf", hopper_data, tmp_path)
    module = MuJoCoAIHF(cfg)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(module)
    ckpt_path = tmp_path / "state.ckpt"
    trainer.save_checkpoint(ckpt_path)

    fresh = MuJoCoAIHF(cfg)
    ckpt = torch.load(ckpt_path, weights_only=False)
    fresh.load_state_dict(ckpt["state_dict"])
    fresh.on_load_checkpoint(ckpt)
    assert len(ckpt["optimizer_states"]) == 3  # actor with temperature, critic, reward
    assert (fresh.env_steps, fresh.policy_updates, fresh.reward_updates) == \
        (module.env_steps, module.policy_updates, module.reward_updates)
    assert len(fresh.buffer) == len(module.buffer) == 600
    assert fresh.rollout.episode_length.tolist() == module.rollout.episode_length.tolist()
    assert np.array_equal(fresh.rollout.obs, module.rollout.obs)
    for k in fresh.buffer.data:
        assert torch.equal(fresh.buffer.data[k][:600], module.buffer.data[k][:600])
    # The restored generators continue the same random streams (the torch one once training puts it on its device).
    device_type, state = fresh._pending_gen_state
    assert device_type == "cpu" and torch.equal(state, module.torch_gen.get_state())
    assert fresh.np_rng.random() == module.np_rng.random()
    for (name, p), q in zip(fresh.state_dict().items(), module.state_dict().values()):
        assert torch.equal(p, q), name


def test_learned_reward_scores_replay_at_sampling_time(hopper_data, tmp_path):
    """SAC's batch rewards come from the current r_θ, not from anything stored at collection time."""
    module = MuJoCoAIHF(fast_cfg("aihf", hopper_data, tmp_path))
    for _ in range(10):
        module.buffer.add(np.ones((1, 11)), np.zeros((1, 3)), np.ones((1, 11)), np.array([123.0]), np.array([False]))
    batch = module.buffer.sample(4)
    before = module.batch_rewards(batch)
    with torch.no_grad():
        module.reward.net[-1].bias.add_(1.0)
    after = module.batch_rewards(batch)
    torch.testing.assert_close(after, before + 1.0)
    assert not torch.equal(before, batch["env_reward"])


def test_init_from_continues_an_earlier_run(hopper_data, tmp_path):
    from aihf.app import train
    first = train(fast_cfg("aihf", hopper_data, tmp_path / "a", ["trainer.enable_checkpointing=true"]))
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    second = train(fast_cfg("aihf", hopper_data, tmp_path / "b",
                            [f"loop.init_from={ckpt}", "loop.total_env_steps=900"]))
    assert first["env_steps"] == 600 and second["env_steps"] == 900
    assert second["policy_updates"] == first["policy_updates"] + 300
    assert second["reward_updates"] == first["reward_updates"] + 3 * 5  # phases at 700, 800, 900; 5 steps each
    assert [h["step"] for h in second["history"]][:2] == [300, 600]  # the earlier run's evaluations are kept
