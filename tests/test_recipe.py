"""The recipe (training tricks beyond the objective) is one config group applied alike to every preset that learns
a reward, so presets compared under one recipe differ only in their objective."""

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
