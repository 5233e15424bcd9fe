"""Every preset composes from conf/ and runs a few hundred env steps end to end, writing metrics.json."""

import json

import pytest
import torch

from aihf.app import train
from conftest import fast_cfg

PRESETS = ["aihf", "irl", "rlhf", "bc", "sac", "constant", "sac_recipe"]


@pytest.mark.parametrize("algo", PRESETS)
def test_preset_runs_and_writes_metrics(algo, hopper_data, tmp_path):
    result = train(fast_cfg(algo, hopper_data, tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["algo"] == algo and metrics["env_id"] == "Hopper-v5"
    assert metrics["eval/return_mean"] == pytest.approx(result["eval/return_mean"])
    assert "eval/normalised_score" in metrics  # anchors come from the dataset's metadata
    if algo == "bc":
        assert metrics["policy_updates"] == 200 and metrics["env_steps"] == 0
    else:
        # one update per env step from step learning_starts=200 on, inclusive
        assert metrics["env_steps"] == 600 and metrics["policy_updates"] == 600 - 200 + 1
    if algo in ("aihf", "irl", "rlhf"):
        assert 0 <= metrics["eval/pref_accuracy"] <= 1
        assert -1 <= metrics["eval/return_correlation"] <= 1
        assert metrics["reward_updates"] > 0
    else:
        assert metrics["reward_updates"] == 0


def test_constant_control_gets_the_recipe_and_a_constant_reward_only(hopper_data, tmp_path):
    """The control runs exactly what the learned-reward presets run (BC warm start, demonstrations in a quarter of
    SAC's batch) with r ≡ algo.constant_reward in place of r_θ, for the agent's steps and the replayed demos alike."""
    from aihf.mujoco.module import MuJoCoAIHF
    module = MuJoCoAIHF(fast_cfg("constant", hopper_data, tmp_path, ["algo.constant_reward=2.5"]))
    aihf = MuJoCoAIHF(fast_cfg("aihf", hopper_data, tmp_path / "aihf"))
    assert module.recipe == aihf.recipe and module.recipe.demo_replay_fraction > 0
    assert module.reward is None and len(module.configure_optimizers()) == 2  # actor and critic: no r_θ to fit
    demo = module.data.demo_replay_batch(8, torch.Generator().manual_seed(0))
    assert torch.equal(module.batch_rewards(demo), torch.full((8,), 2.5))  # not the demos' recorded env reward
    assert not torch.equal(demo["env_reward"], torch.full((8,), 2.5))


def test_oracle_under_the_recipe_replays_demonstrations_with_their_true_rewards(hopper_data, tmp_path):
    """sac_recipe gets the learned-reward presets' recipe and scores the replayed demonstrations by the rewards the
    dataset recorded for exactly those transitions; a learned-reward preset scores the same batch by r_θ instead."""
    from aihf.mujoco.datasets import load_dataset
    from aihf.mujoco.module import MuJoCoAIHF
    oracle = MuJoCoAIHF(fast_cfg("sac_recipe", hopper_data, tmp_path))
    aihf = MuJoCoAIHF(fast_cfg("aihf", hopper_data, tmp_path / "aihf"))
    sac = MuJoCoAIHF(fast_cfg("sac", hopper_data, tmp_path / "sac"))
    assert oracle.recipe == aihf.recipe and oracle.recipe.bc_warmstart_steps > 0
    assert sac.recipe.bc_warmstart_steps == 0 and sac.recipe.demo_replay_fraction == 0
    assert oracle.reward is None and len(oracle.configure_optimizers()) == 2

    data = load_dataset(hopper_data)
    obs, rew = data.arrays["obs"], data.arrays["reward"]
    demo = oracle.data.demo_replay_batch(64, torch.Generator().manual_seed(0))
    for o, r in zip(demo["obs"], demo["env_reward"]):  # each transition's reward is the one recorded for its state
        step = int((torch.from_numpy(obs) == o).all(1).nonzero()[0])
        assert r.item() == rew[step]
    assert torch.equal(oracle.batch_rewards(demo), demo["env_reward"])
    same = aihf.data.demo_replay_batch(64, torch.Generator().manual_seed(0))
    assert torch.equal(same["obs"], demo["obs"])  # one seed, one demonstration subset
    assert torch.allclose(aihf.batch_rewards(same), aihf.reward(same["obs"], same["act"]).detach())
    assert not torch.allclose(aihf.batch_rewards(same), same["env_reward"])


def test_rlhf_freezes_reward_after_its_fit(hopper_data, tmp_path):
    result = train(fast_cfg("rlhf", hopper_data, tmp_path))
    assert result["reward_updates"] == 3  # the pre-fit only; alternation is off in the sequential pipeline


@pytest.mark.parametrize("logger", ["tensorboard", "wandb"])
def test_other_loggers_write_offline(logger, hopper_data, tmp_path):
    train(fast_cfg("sac", hopper_data, tmp_path, [f"logger={logger}", "loop.total_env_steps=300"]))
    sub = "tensorboard" if logger == "tensorboard" else "wandb"
    assert any((tmp_path / sub).rglob("*")), f"{logger} wrote nothing under {tmp_path / sub}"


def test_all_parameters_change_in_aihf(hopper_data, tmp_path):
    from aihf.mujoco.module import MuJoCoAIHF
    import pytorch_lightning as pl
    cfg = fast_cfg("aihf", hopper_data, tmp_path, ["trainer.enable_progress_bar=false"])
    module = MuJoCoAIHF(cfg)
    before = {k: v.clone() for k, v in module.state_dict().items() if v.dtype.is_floating_point}
    pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False).fit(module)
    after = module.state_dict()
    frozen = ("actor.action_scale", "actor.action_bias")
    unchanged = [k for k, v in before.items() if not k.endswith(frozen) and torch.equal(v, after[k])]
    assert not unchanged, f"parameters that never changed: {unchanged}"


def test_every_learned_reward_reports_its_level_on_demonstrations_and_agent_steps(hopper_data, tmp_path):
    """Both reward losses ignore a constant offset, but on Hopper the level decides whether staying alive pays: each
    evaluation records r_θ's mean on all demonstration transitions and on the agent's latest `data.policy_window`
    steps, for rlhf (frozen after its fit) as for aihf; presets without r_θ record none."""
    from aihf.mujoco.module import MuJoCoAIHF
    from conftest import fit
    module = MuJoCoAIHF(fast_cfg("rlhf", hopper_data, tmp_path, ["data.policy_window=50"]))
    fit(module, tmp_path)
    final = module.history[-1]
    with torch.no_grad():
        demos = module.reward(module.data.demo_obs, module.data.demo_act).mean().item()
        # the buffer holds exactly the run's 600 steps (its capacity is the budget): the latest 50 are rows 550–599
        agent = module.reward(module.buffer.data["obs"][550:600], module.buffer.data["act"][550:600]).mean().item()
    assert module.buffer.size == module.buffer.capacity == 600 and module.buffer.pos == 0
    assert final["eval/reward_level_demos"] == pytest.approx(demos, rel=1e-5)
    assert final["eval/reward_level_agent"] == pytest.approx(agent, rel=1e-5)
    assert all("eval/reward_level_agent" in h for h in module.history)
    sac = train(fast_cfg("sac", hopper_data, tmp_path / "sac"))
    assert not any(k.startswith("eval/reward_level") for h in sac["history"] for k in h)
