"""The reward step against the equations of DESIGN.md §1, on hand-made batches with a linear reward."""

import pytest
import torch

from aihf import objectives
from aihf.mujoco.module import MuJoCoAIHF
from aihf.mujoco.reward import RewardNet
from conftest import fast_cfg


def hand_batch(obs_dim=11, act_dim=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    demo = (torch.randn(7, obs_dim, generator=g), torch.randn(7, act_dim, generator=g))
    pol = (torch.randn(5, obs_dim, generator=g), torch.randn(5, act_dim, generator=g))
    B, T = 4, 6
    mask_a = torch.ones(B, T)
    mask_a[0, 4:] = 0  # segments of unequal length
    mask_b = torch.ones(B, T)
    mask_b[2, 3:] = 0
    prefs = {"obs_a": torch.randn(B, T, obs_dim, generator=g), "act_a": torch.randn(B, T, act_dim, generator=g),
             "obs_b": torch.randn(B, T, obs_dim, generator=g), "act_b": torch.randn(B, T, act_dim, generator=g),
             "mask_a": mask_a, "mask_b": mask_b, "label": torch.tensor([1.0, 0.0, 1.0, 0.5])}
    return demo, pol, prefs


def features(obs, act):
    return torch.cat([obs, act, torch.ones(*obs.shape[:-1], 1)], dim=-1)  # the last feature is the bias


@pytest.mark.parametrize("weighting", ["mean", "sum"])
def test_reward_gradient_equals_design_formula(weighting, hopper_data, tmp_path):
    lam_d, lam_p, beta = 0.7, 1.3, 0.5
    cfg = fast_cfg("aihf", hopper_data, tmp_path, [f"algo.demo_weight={lam_d}", f"algo.pref_weight={lam_p}",
                                                   f"algo.beta={beta}", f"algo.weighting={weighting}"])
    module = MuJoCoAIHF(cfg)
    module.reward = RewardNet(11, 3, hidden=[], clamp=0.0)
    demo, pol, prefs = hand_batch()
    loss, _ = module.reward_loss(demo, pol, prefs)
    loss.backward()
    grad = torch.cat([module.reward.net[0].weight.grad[0], module.reward.net[0].bias.grad])

    w = torch.cat([module.reward.net[0].weight[0], module.reward.net[0].bias]).detach()
    phi_a = (features(prefs["obs_a"], prefs["act_a"]) * prefs["mask_a"][..., None]).sum(1)
    phi_b = (features(prefs["obs_b"], prefs["act_b"]) * prefs["mask_b"][..., None]).sum(1)
    delta = (phi_a - phi_b) @ w
    y = prefs["label"]
    # ∇L = (λ_D/β)(E_D ∇R − E_π ∇R) + λ_P E_P[(y − σ(Δ))(∇R(τ_a) − ∇R(τ_b))]; with y = 1 this is DESIGN's
    # (1 − σ(R_w − R_l))(∇R_w − ∇R_l). The step minimises −L, so its gradient is −∇L.
    demo_part = (features(*demo).mean(0) - features(*pol).mean(0)) / beta
    pref_part = ((y - torch.sigmoid(delta))[:, None] * (phi_a - phi_b)).mean(0)
    if weighting == "sum":
        n_d, n_p = module.data.num_demos, module.data.num_prefs
        lam_d, lam_p = lam_d * n_d / (n_d + n_p), lam_p * n_p / (n_d + n_p)
    expected = -(lam_d * demo_part + lam_p * pref_part)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)


def test_aihf_without_preferences_takes_the_irl_step(hopper_data, tmp_path):
    """λ_P = 0 reduces AIHF to ML-IRL: identical reward parameters after the same reward steps."""
    modules = []
    for algo, extra in (("aihf", ["algo.pref_weight=0"]), ("irl", [])):
        torch.manual_seed(0)  # the reward net's initialisation
        m = MuJoCoAIHF(fast_cfg(algo, hopper_data, tmp_path / algo, extra))
        opt = torch.optim.Adam(m.reward.parameters(), lr=m.reward.lr, weight_decay=m.reward.weight_decay)
        m.optimizers = lambda opt=opt: [None, None, opt]  # the reward step alone, outside a Trainer
        m.manual_backward = lambda loss: loss.backward()
        g = torch.Generator().manual_seed(1)
        for _ in range(300):
            m.buffer.add(torch.randn(1, 11, generator=g), torch.rand(1, 3, generator=g) * 2 - 1,
                         torch.randn(1, 11, generator=g), torch.ones(1), torch.zeros(1))
        modules.append(m)
    aihf, irl = modules
    assert aihf.data.num_prefs == 0
    for _ in range(5):
        la, li = aihf.reward_step(), irl.reward_step()
        assert la["reward/loss"] == li["reward/loss"]
    for (name, p), q in zip(aihf.reward.named_parameters(), irl.reward.parameters()):
        assert torch.equal(p, q), name


def test_bradley_terry_matches_hand_computation():
    ra, rb, y = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 0.0]), torch.tensor([1.0, 0.0])
    expected = -(torch.log(torch.sigmoid(torch.tensor(1.5))) + torch.log(torch.sigmoid(torch.tensor(1.0)))) / 2
    assert objectives.bradley_terry_loss(ra, rb, y) == pytest.approx(float(expected), rel=1e-6)


def test_weighting_rejects_unknown_mode_and_empty_objective():
    with pytest.raises(ValueError, match="weighting"):
        objectives.weighted_objective(torch.tensor(1.0), None, 1.0, 0.0, "median")
    with pytest.raises(ValueError, match="both demo_weight and pref_weight are 0"):
        objectives.weighted_objective(None, None, 0.0, 0.0)


def test_teacher_labels():
    import math
    import numpy as np
    from aihf.teachers import SimulatedTeacher
    rng = np.random.default_rng(0)
    assert SimulatedTeacher(beta=math.inf).label(2.0, 1.0, rng) == 1.0
    assert SimulatedTeacher(beta=math.inf, mistake_prob=1.0).label(2.0, 1.0, rng) == 0.0
    assert SimulatedTeacher(equal_threshold=0.5).label(1.2, 1.0, rng) == 0.5
    labels = [SimulatedTeacher(beta=1.0).label(1.0, 0.0, rng) for _ in range(4000)]
    assert np.mean(labels) == pytest.approx(1 / (1 + math.exp(-1)), abs=0.03)
    assert SimulatedTeacher(discount=0.5).segment_return(np.array([4.0, 2.0])) == pytest.approx(4.0)
