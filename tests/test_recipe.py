"""The recipe (training tricks beyond the objective) is one config group applied alike to every preset that learns
a reward, so presets compared under one recipe differ only in their objective."""

from dataclasses import asdict

import pytest
import torch

from aihf.mujoco.module import MuJoCoAIHF, Recipe
from conftest import compose_cfg, fast_cfg

LEARNED = ("aihf", "irl", "rlhf")


@pytest.mark.parametrize("recipe", ["cpu_budget", "paper"])
def test_every_learned_reward_preset_gets_the_same_recipe(recipe):
    applied = {algo: Recipe.of(compose_cfg([f"algo={algo}", f"recipe={recipe}"]))
               for algo in (*LEARNED, "constant", "sac", "bc")}
    tricks = {algo: (r.bc_warmstart_steps, r.demo_replay_fraction) for algo, r in applied.items()}
    assert len({tricks[a] for a in (*LEARNED, "constant")}) == 1
    assert tricks["sac"] == tricks["bc"] == (0, 0.0)  # the oracle's replayed demos would carry no env reward
    if recipe == "cpu_budget":
        assert tricks["aihf"] == (2000, 0.25)
    else:
        assert tricks["aihf"] == (0, 0.0) and {applied[a].beta for a in LEARNED} == {"alpha"}
        assert {applied[a].reward_every for a in LEARNED if a != "rlhf"} == {5000}


def test_paper_recipe_is_the_authors_sac_with_beta_tied_to_alpha(hopper_data, tmp_path):
    p = compose_cfg(["algo=aihf", "recipe=paper"]).policy
    assert (p.alpha, p.learn_alpha, p.actor_lr, p.critic_lr, p.batch_size) == (0.2, False, 1e-3, 1e-3, 100)
    module = MuJoCoAIHF(fast_cfg("aihf", hopper_data, tmp_path, ["recipe=paper"]))
    assert module.beta == pytest.approx(0.2)  # β = α: λ_D/β follows the policy's temperature
    with torch.no_grad():
        module.policy.log_alpha.fill_(0.0)
    assert module.beta == pytest.approx(1.0)


def test_rlhf_under_cpu_budget_replays_demonstrations_like_aihf(hopper_data, tmp_path):
    """The confound of the old presets: only aihf and irl put demonstrations into SAC's batches."""
    for algo in LEARNED:
        module = MuJoCoAIHF(fast_cfg(algo, hopper_data, tmp_path / algo))
        assert module.recipe.demo_replay_fraction == 0.25 and module.recipe.bc_warmstart_steps == 2000
        assert len(module.data.demo_transitions["obs"]) > 0


@pytest.mark.parametrize("actor_too", [True, False])
def test_demo_replay_feeds_the_critic_and_the_actor_only_when_asked(hopper_data, tmp_path, actor_too):
    """recipe.demo_replay_actor=false: the replayed demonstration's transitions still fill a quarter of the critic's
    batch, but the actor and α learn on the agent's own steps alone (HalfCheetah's critic diverged at the states the
    actor was improved on without ever reaching them)."""
    m = MuJoCoAIHF(fast_cfg("sac_recipe", hopper_data, tmp_path, [f"recipe.demo_replay_actor={str(actor_too).lower()}",
                                                                   "policy.batch_size=64"]))
    assert m.recipe.demo_replay_actor is actor_too and m.recipe.demo_replay_fraction == 0.25
    actor_opt = torch.optim.Adam(m.policy.actor_parameters())
    critic_opt = torch.optim.Adam(m.policy.critic_parameters())
    m.optimizers = lambda: [actor_opt, critic_opt, None]
    m.manual_backward = lambda loss: loss.backward()
    g = torch.Generator().manual_seed(0)
    for _ in range(300):  # agent steps far from the demonstration's states (which are finite Hopper observations)
        m.buffer.add(torch.full((1, 11), 100.0) + torch.randn(1, 11, generator=g), torch.rand(1, 3, generator=g) * 2 - 1,
                     torch.randn(1, 11, generator=g), torch.ones(1), torch.zeros(1))
    seen = {}

    def recording(name, loss):
        def wrapped(obs, *args):
            seen[name] = obs
            return loss(obs, *args)
        return wrapped
    m._critic_loss, m._actor_loss = recording("critic", m._critic_loss), recording("actor", m._actor_loss)
    logs = m.policy_step()
    demo_rows = lambda obs: int((obs < 50).all(-1).sum())  # noqa: E731
    assert len(seen["critic"]) == 64 and demo_rows(seen["critic"]) == 16
    assert demo_rows(seen["actor"]) == (16 if actor_too else 0)
    assert len(seen["actor"]) == (64 if actor_too else 48)
    assert {"losses/actor_loss", "losses/q_mean", "losses/alpha"} <= set(logs)
    assert asdict(m.recipe)["demo_replay_actor"] is actor_too  # what metrics.json records
