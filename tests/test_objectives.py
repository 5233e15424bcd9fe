"""The reward step against the equations of docs/design.md §1, on hand-made batches with a linear reward."""

import math

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


def test_reward_gradient_equals_design_formula(hopper_data, tmp_path):
    lam_d, lam_p, beta = 0.7, 1.3, 0.5
    cfg = fast_cfg("aihf", hopper_data, tmp_path, [f"algo.demo_weight={lam_d}", f"algo.pref_weight={lam_p}",
                                                   f"algo.beta={beta}", "algo.weighting=mean"])
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
    # ∇L = (λ_D/β)(E_D ∇R − E_π ∇R) + λ_P E_P[(y − σ(Δ))(∇R(τ_a) − ∇R(τ_b))]; with y = 1 this is docs/design.md's
    # (1 − σ(R_w − R_l))(∇R_w − ∇R_l). The step minimises −L, so its gradient is −∇L.
    demo_part = (features(*demo).mean(0) - features(*pol).mean(0)) / beta
    pref_part = ((y - torch.sigmoid(delta))[:, None] * (phi_a - phi_b)).mean(0)
    expected = -(lam_d * demo_part + lam_p * pref_part)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)


def test_sum_weighting_is_the_summed_log_likelihood(hopper_data, tmp_path):
    """weighting=sum, from first principles on the whole training data: the demonstration log-likelihood is a sum
    over every demonstration transition of (1/β)(r(s, a) − E_π r), the preference one a sum over every pair of
    log P(label); the loss is minus their λ-weighted sum over the number of terms (a constant step scale)."""
    lam_d, lam_p, beta = 0.7, 1.3, 0.5
    cfg = fast_cfg("aihf", hopper_data, tmp_path, [f"algo.demo_weight={lam_d}", f"algo.pref_weight={lam_p}",
                                                   f"algo.beta={beta}", "algo.weighting=sum", "data.num_demos=2"])
    module = MuJoCoAIHF(cfg)
    module.reward = RewardNet(11, 3, hidden=[], clamp=0.0).double()
    data = module.data
    demo = (data.demo_obs.double(), data.demo_act.double())  # every demonstration transition, once
    _, pol, _ = hand_batch()
    pol = tuple(x.double() for x in pol)
    prefs = {k: v.double() for k, v in data.train_pair_batch.items()}  # every training pair, once
    loss, _ = module.reward_loss(demo, pol, prefs)

    w, b = module.reward.net[0].weight[0].detach(), float(module.reward.net[0].bias)
    r = lambda o, a: float(torch.cat([o, a]) @ w) + b  # noqa: E731
    e_pi = sum(r(o, a) for o, a in zip(*pol)) / len(pol[0])
    demo_ll = sum((r(o, a) - e_pi) / beta for o, a in zip(*demo))
    pref_ll = 0.0
    for i in range(len(prefs["label"])):
        ret = {s: sum(r(o, a) for o, a, m in zip(prefs[f"obs_{s}"][i], prefs[f"act_{s}"][i], prefs[f"mask_{s}"][i])
                      if m > 0) for s in "ab"}
        d = ret["a"] - ret["b"]
        # log σ(d) and log σ(−d) = log(1 − σ(d)), written so that neither cancels when |d| is large
        log_sigmoid = lambda x: -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))  # noqa: E731
        y = float(prefs["label"][i])
        pref_ll += y * log_sigmoid(d) + (1 - y) * log_sigmoid(-d)
    terms = len(demo[0]) + len(prefs["label"])
    assert len(demo[0]) == sum(int(data.dataset.arrays["traj_len"][t]) for t in data.demo_trajs) > 2
    assert float(loss) == pytest.approx(-(lam_d * demo_ll + lam_p * pref_ll) / terms, rel=1e-9)


def test_paper_toy_example_joint_beats_each_source():
    """The paper's three-response example (docs/design.md §1): true r = (0, −0.075, −1), π ∝ exp(r), 30 demonstrations,
    10 BT comparisons per pair. Over 2,000 random datasets, the maximum-likelihood estimate through objectives.py
    from both sources (weighting=sum) has a lower L1 error of the induced policy than from either alone
    (published: joint about 0.16–0.18, demonstrations only about 0.20, preferences only about 0.25)."""
    torch.manual_seed(0)
    r_true, trials = torch.tensor([0.0, -0.075, -1.0], dtype=torch.float64), 2000
    pi_true = torch.softmax(r_true, 0)
    demos = torch.multinomial(pi_true.expand(trials, 3), 30, replacement=True)
    first, second = torch.tensor([0, 0, 1]).repeat_interleave(10), torch.tensor([1, 2, 2]).repeat_interleave(10)
    labels = (torch.rand(trials, 30, dtype=torch.float64) < torch.sigmoid(r_true[first] - r_true[second])).double()

    def fit(demo_weight: float, pref_weight: float) -> torch.Tensor:
        theta = torch.zeros(trials, 2, dtype=torch.float64, requires_grad=True)  # r(y_0) = 0 fixes the offset
        opt = torch.optim.LBFGS([theta], max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            r = torch.cat([torch.zeros(trials, 1, dtype=torch.float64), theta], 1)
            pi = torch.softmax(r, 1).detach()  # the reward-induced policy (closed form in a bandit, β = 1)
            demo = objectives.demonstration_contrast_loss(r.gather(1, demos), (pi * r).sum(1))
            pref = objectives.bradley_terry_loss(r[:, first], r[:, second], labels)
            loss = trials * objectives.weighted_objective(demo, pref, demo_weight, pref_weight, "sum", 30, 30)
            loss.backward()
            return loss
        opt.step(closure)
        r = torch.cat([torch.zeros(trials, 1, dtype=torch.float64), theta.detach()], 1)
        return (torch.softmax(r, 1) - pi_true).abs().sum(1).mean()

    demos_only, prefs_only, joint = fit(1.0, 0.0), fit(0.0, 1.0), fit(1.0, 1.0)
    assert 0.15 < demos_only < 0.23 and 0.2 < prefs_only < 0.3 and 0.12 < joint < 0.19
    assert joint < demos_only - 0.02 and joint < prefs_only - 0.05


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
