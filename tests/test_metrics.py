"""Reward metrics on hand-made rewards: EPIC ignores shaping and scale and gives a constant no credit; the
baselines score what knowing nothing scores."""

import math

import numpy as np
import pytest

from aihf import metrics
from aihf.mujoco.datasets import load_dataset
from aihf.mujoco.reward_metrics import HeldoutRewardMetrics, SimulatorReward


def transitions(n=400, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    obs, act, nxt = rng.normal(size=(n, d)), rng.uniform(-1, 1, (n, k)), rng.normal(size=(n, d))
    cov_obs, cov_act = rng.normal(size=(12, d)), rng.uniform(-1, 1, (12, k))
    return obs, act, nxt, cov_obs, cov_act


def true_reward(o, a, o2):
    return np.sin(o[:, 0]) + o2[:, 1] * a[:, 0] - 0.1 * (a ** 2).sum(1)


def test_epic_is_zero_for_shaped_and_rescaled_rewards():
    gamma = 0.9
    phi = lambda o: np.cos(o[:, 2]) + o[:, 3] ** 2  # noqa: E731 - any potential
    shaped = lambda o, a, o2: 2.5 * true_reward(o, a, o2) + gamma * phi(o2) - phi(o) + 7.0  # noqa: E731
    args = (*transitions(), gamma)
    assert metrics.epic_distance(true_reward, shaped, *args) == pytest.approx(0.0, abs=1e-6)
    # but not for a different reward, and the negated reward is the farthest
    other = lambda o, a, o2: np.sin(o[:, 0]) - o2[:, 1] * a[:, 0]  # noqa: E731
    assert metrics.epic_distance(true_reward, other, *args) > 0.3
    assert metrics.epic_distance(true_reward, lambda o, a, o2: -true_reward(o, a, o2), *args) == pytest.approx(1.0)


def test_a_constant_reward_gets_no_credit():
    args = (*transitions(), 0.99)
    constant = lambda o, a, o2: np.full(len(o), 3.0)  # noqa: E731
    assert metrics.epic_distance(true_reward, constant, *args) == pytest.approx(math.sqrt(0.5))
    assert math.isnan(metrics.pearson(np.ones(10), np.arange(10)))
    assert math.isnan(metrics.spearman(np.ones(10), np.arange(10)))
    # ties count half: a constant is a coin flip on pair order, whatever the labels
    true_a, true_b = np.array([1.0, 2.0, 3.0, 0.0]), np.array([0.0, 5.0, 1.0, 1.0])
    assert metrics.pair_accuracy(np.zeros(4), np.zeros(4), true_a, true_b) == 0.5
    assert metrics.pair_accuracy(true_a, true_b, true_a, true_b) == 1.0
    assert metrics.pair_accuracy(true_b, true_a, true_a, true_b) == 0.0


def test_simulator_reward_equals_the_recorded_rewards(hopper_data):
    ds = load_dataset(hopper_data)
    a = ds.arrays
    sim = SimulatorReward("Hopper-v5")
    r = sim(a["obs"][:300], a["act"][:300])
    assert np.corrcoef(r, a["reward"][:300])[0, 1] > 0.999
    assert np.median(np.abs(r - a["reward"][:300])) < 1e-4


def test_heldout_metrics_of_the_true_reward_and_the_baselines(hopper_data):
    """The true reward itself is perfect on every metric; a constant is not, and the length proxy only where
    length predicts return."""
    ds = load_dataset(hopper_data)
    sim = SimulatorReward("Hopper-v5")
    m = HeldoutRewardMetrics(ds, "Hopper-v5", -np.ones(3), np.ones(3), 0.99, seed=0, num_transitions=200,
                             true_reward=sim)
    perfect = m(lambda o, act, term: sim(o, act))
    assert perfect["epic"] == pytest.approx(0.0, abs=1e-6)
    assert perfect["reward_pearson"] > 0.999 and perfect["reward_spearman"] > 0.999
    assert perfect["pref_accuracy"] > 0.98 and perfect["pref_accuracy_equal_length"] > 0.98
    assert perfect["return_correlation"] > 0.999
    base = m.baselines()
    assert base["baseline/constant/epic"] == pytest.approx(math.sqrt(0.5))
    assert math.isnan(base["baseline/constant/reward_pearson"])
    assert base["baseline/constant/pref_accuracy_equal_length"] == 0.5
    assert base["baseline/length/pref_accuracy_equal_length"] == pytest.approx(0.5, abs=0.05)


def test_policy_baseline_ranks_segments_by_their_policys_reward_per_step(hopper_data):
    """The `policy` baseline knows only which ladder policy made a segment (and its length): checked against a
    pair-by-pair computation, and it ties every pair when all trajectories share one policy."""
    import copy
    from aihf.mujoco.datasets import HELDOUT, TRAIN
    ds = load_dataset(hopper_data)
    a = ds.arrays
    base = HeldoutRewardMetrics(ds, "Hopper-v5", -np.ones(3), np.ones(3), 0.99, seed=0, num_transitions=0).baselines()
    train = [t for t in range(len(a["traj_len"])) if a["traj_split"][t] == TRAIN]
    rate = {}
    for q in {int(a["traj_policy"][t]) for t in train}:
        mine = [t for t in train if a["traj_policy"][t] == q]
        rate[q] = sum(a["traj_return"][t] for t in mine) / sum(a["traj_len"][t] for t in mine)
    credit, credit_equal = [], []
    for i in ds.pairs(HELDOUT):
        ta, sa, na, tb, sb, nb = (int(x) for x in a["pair_index"][i])
        true_a = a["reward"][a["traj_start"][ta] + sa:a["traj_start"][ta] + sa + na].astype(np.float64).sum()
        true_b = a["reward"][a["traj_start"][tb] + sb:a["traj_start"][tb] + sb + nb].astype(np.float64).sum()
        qa, qb = int(a["traj_policy"][ta]), int(a["traj_policy"][tb])
        if true_a == true_b or qa not in rate or qb not in rate:
            continue
        pa, pb = rate[qa] * na, rate[qb] * nb
        c = 0.5 if pa == pb else float((pa > pb) == (true_a > true_b))
        credit.append(c)
        if na == nb:
            credit_equal.append(c)
    assert base["baseline/policy/pref_accuracy"] == pytest.approx(np.mean(credit))
    assert base["baseline/policy/pref_accuracy_equal_length"] == pytest.approx(np.mean(credit_equal))
    assert base["baseline/policy/pref_accuracy"] > 0.5  # better ladder policies make better segments

    one = copy.copy(ds)
    one.arrays = {**a, "traj_policy": np.zeros_like(a["traj_policy"])}
    same = HeldoutRewardMetrics(one, "Hopper-v5", -np.ones(3), np.ones(3), 0.99, seed=0, num_transitions=0)
    assert same.baselines()["baseline/policy/pref_accuracy_equal_length"] == 0.5


def test_a_reward_that_only_recognises_the_demonstrator_gets_no_credit_without_it(hopper_data):
    """Pair accuracy `_without_demonstrator` keeps only the held-out pairs with no segment of the demonstrator's
    policy: a reward that pays 1 on that policy's steps and 0 elsewhere orders many pairs overall, but ties (0.5)
    every pair left, and the mask is the pairs counted by hand."""
    from aihf.mujoco.datasets import HELDOUT
    ds = load_dataset(hopper_data)
    a = ds.arrays
    names = [p["name"] for p in ds.metadata["policies"]]
    q = names.index(ds.metadata["expert"])
    index = a["pair_index"][ds.pairs(HELDOUT)]
    by_hand = (a["traj_policy"][index[:, 0]] != q) & (a["traj_policy"][index[:, 3]] != q)
    assert 0 < by_hand.sum() < len(by_hand)  # the data has pairs with and without the expert's segments
    demonstrator_steps = {a["obs"][s].tobytes() for t in np.flatnonzero(a["traj_policy"] == q)
                          for s in range(a["traj_start"][t], a["traj_start"][t] + a["traj_len"][t])}
    recognise = lambda o, act, term: np.array([float(row.tobytes() in demonstrator_steps) for row in o])  # noqa: E731
    m = HeldoutRewardMetrics(ds, "Hopper-v5", -np.ones(3), np.ones(3), 0.99, seed=0, num_transitions=0,
                             demo_policy=q)
    np.testing.assert_array_equal(m.without_demonstrator, by_hand)
    out = m(recognise)
    assert out["pref_accuracy"] > 0.5
    assert out["pref_accuracy_without_demonstrator"] == 0.5
    assert "baseline/policy/pref_accuracy_without_demonstrator" in m.baselines()
    plain = HeldoutRewardMetrics(ds, "Hopper-v5", -np.ones(3), np.ones(3), 0.99, seed=0, num_transitions=0)
    assert "pref_accuracy_without_demonstrator" not in plain(recognise)


def test_the_demo_classifier_baseline_is_the_logistic_regression_of_demonstrations_against_the_others(
        hopper_data):
    """`demo_classifier` scores (s, a) by the logit of a linear classifier of the demonstrated (s, a) against other
    policies' (s, a): at its fit, the score equations of the mean, L2-penalised log-likelihood hold (so a
    wrong gradient, weighting or penalty fails), it ranks the demonstrations' side of the data higher, and it is
    reported beside the other baselines only when the run has demonstrations, fitted against the training
    trajectories of every policy but the demonstrator's."""
    from aihf.mujoco.datasets import TRAIN
    from aihf.mujoco.reward_metrics import DemoClassifierReward
    rng = np.random.default_rng(0)
    pos_obs, pos_act = rng.normal(0.8, 1.0, (60, 3)), rng.normal(0.3, 0.5, (60, 1))
    neg_obs, neg_act = rng.normal(-0.5, 1.5, (400, 3)), rng.normal(0.0, 0.5, (400, 1))
    fn = DemoClassifierReward(pos_obs, pos_act, neg_obs, neg_act, l2=0.01)
    assert fn.converged
    z = (np.concatenate([np.concatenate([pos_obs, pos_act], 1), np.concatenate([neg_obs, neg_act], 1)]) - fn.mean) \
        / fn.std
    logit = np.concatenate([fn(pos_obs, pos_act), fn(neg_obs, neg_act)])
    y = np.r_[np.ones(60), np.zeros(400)]
    w = np.full(460, 1 / 460)
    residual = w * (1 / (1 + np.exp(-logit)) - y)
    np.testing.assert_allclose(z.T @ residual + 0.01 * fn.beta[:-1], 0, atol=1e-5)  # each feature's equation
    assert abs(residual.sum()) < 1e-5  # the intercept's: unpenalised
    assert fn(pos_obs, pos_act).mean() > fn(neg_obs, neg_act).mean() + 1  # it ranks the demonstrated side higher

    ds = load_dataset(hopper_data)
    a = ds.arrays
    names = [p["name"] for p in ds.metadata["policies"]]
    q = names.index(ds.metadata["expert"])
    demo = tuple(x.numpy() for x in ds.transitions(ds.trajectories(0)[:1]))
    m = HeldoutRewardMetrics(ds, "Hopper-v5", -np.ones(3), np.ones(3), 0.99, seed=0, num_transitions=0, demos=demo,
                             demo_policy=q)
    train = ds.trajectories(TRAIN)
    others = tuple(x.numpy() for x in ds.transitions(train[a["traj_policy"][train] != q]))
    expected = DemoClassifierReward(*demo, *others)
    base = m.baselines()
    assert base["baseline/demo_classifier/pref_accuracy"] == pytest.approx(m(expected)["pref_accuracy"])
    assert base["baseline/demo_classifier/pref_accuracy_equal_length"] > 0.5  # telling the expert apart says something
    stop = base["baseline/demo_mlp_classifier/best_update"]  # the MLP's: where its own held-back loss was lowest
    assert stop % 100 == 0 and 0 <= stop <= 3000 and base["baseline/demo_mlp_classifier/heldback_cross_entropy"] > 0
    no_demos = HeldoutRewardMetrics(ds, "Hopper-v5", -np.ones(3), np.ones(3), 0.99, seed=0, num_transitions=0)
    assert not any("demo_classifier" in k for k in no_demos.baselines())


def test_the_mlp_demo_classifier_recognises_what_a_linear_one_cannot_and_leaves_the_global_rng_alone():
    """`demo_mlp_classifier` is a real non-linear recogniser: demonstrations on a ring around the others' cluster
    (no linear boundary exists) are told apart far better than by the linear baseline; the network kept is the one
    at the lowest held-back cross-entropy (not the first nor, when it overfits, the last); the fit is the same twice
    from one seed, differs from another seed, and leaves torch's global random state as it found it."""
    import torch
    from aihf.mujoco.reward_metrics import DemoClassifierReward, DemoMLPClassifierReward

    def ring(rng, n, inner):
        angle, radius = rng.uniform(0, 2 * np.pi, n), (rng.uniform(0, 0.8, n) if inner else rng.uniform(1.6, 2.2, n))
        return np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1), rng.normal(0, 0.1, (n, 1))

    rng = np.random.default_rng(0)
    demo, other = ring(rng, 400, False), ring(rng, 1600, True)
    test_demo, test_other = ring(rng, 300, False), ring(rng, 300, True)

    def auc(fn):  # the probability that a held-out demonstrated (s, a) scores above a held-out other one
        pos, neg = fn(*test_demo), fn(*test_other)
        return float((pos[:, None] > neg[None, :]).mean())

    state = torch.get_rng_state()
    mlp = DemoMLPClassifierReward(*demo, *other, max_updates=1000, batch_size=500, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    assert auc(mlp) > 0.97 and 0 < mlp.best_update <= 1000 and mlp.best_update % 100 == 0
    # labels that are noise can only be memorised: held-back loss is lowest early, and that network is kept
    noisy = DemoMLPClassifierReward(*ring(rng, 400, True), *other, max_updates=1000, batch_size=500, seed=3)
    assert noisy.best_update < 1000
    assert auc(DemoClassifierReward(*demo, *other)) < 0.75
    again, other_seed = DemoMLPClassifierReward(*demo, *other, max_updates=1000, batch_size=500, seed=3), \
        DemoMLPClassifierReward(*demo, *other, max_updates=1000, batch_size=500, seed=4)
    np.testing.assert_array_equal(mlp(*test_demo), again(*test_demo))
    assert not np.array_equal(mlp(*test_demo), other_seed(*test_demo))


def test_epic_on_the_lower_rungs_uses_only_their_transitions_and_leaves_the_other_draws_alone(hopper_data):
    """`epic_lower_rungs` is EPIC on held-out transitions of the policies whose return is under half the
    demonstrator's: every drawn transition belongs to one, the true reward scores 0 there, a reward that is the
    true one on those rungs and noise elsewhere scores 0 there too (but not on all transitions); the draws of
    `epic` are what they are without a demonstrator, and without one the metric is absent."""
    ds = load_dataset(hopper_data)
    a = ds.arrays
    policies = ds.metadata["policies"]
    q = [p["name"] for p in policies].index(ds.metadata["expert"])
    lower = {i for i, p in enumerate(policies) if p["eval_return"] is None
             or p["eval_return"] < 0.5 * policies[q]["eval_return"]}
    assert 0 < len(lower) < len(policies)
    sim = SimulatorReward("Hopper-v5")
    m = HeldoutRewardMetrics(ds, "Hopper-v5", -np.ones(3), np.ones(3), 0.99, seed=0, num_transitions=60,
                             true_reward=sim, demo_policy=q)
    traj_of_step = np.repeat(np.arange(len(a["traj_start"])), a["traj_len"])
    assert len(m.lower_idx) >= 2
    assert set(a["traj_policy"][traj_of_step[m.lower_idx]]) <= lower
    assert not set(a["traj_policy"][traj_of_step[m.epic_idx]]) <= lower  # all held-out transitions, not only those
    step_policy = a["traj_policy"][traj_of_step]
    noise = np.random.default_rng(1)

    def true_on_lower_rungs(o, act, term):  # the true reward where a lower rung was, noise at every other state
        r = sim(o, act)
        known = {o_.tobytes(): p for o_, p in zip(a["obs"], step_policy)}
        is_lower = np.array([known.get(o_.tobytes(), -1) in lower for o_ in o])
        return np.where(is_lower, r, noise.normal(0, 5, len(o)))

    out = m(true_on_lower_rungs)
    assert out["epic_lower_rungs"] < 0.05 < out["epic"]
    assert m(lambda o, act, term: sim(o, act))["epic_lower_rungs"] == pytest.approx(0.0, abs=1e-6)
    plain = HeldoutRewardMetrics(ds, "Hopper-v5", -np.ones(3), np.ones(3), 0.99, seed=0, num_transitions=60,
                                 true_reward=sim)
    np.testing.assert_array_equal(plain.epic_idx, m.epic_idx)
    assert "epic_lower_rungs" not in plain(lambda o, act, term: sim(o, act))


def test_weighted_epic_is_epic_on_the_transitions_repeated_by_their_weights():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=30), rng.normal(size=30)
    w = rng.integers(0, 4, size=30)
    repeated = metrics.pearson_distance(np.repeat(a, w), np.repeat(b, w))
    assert metrics.weighted_pearson_distance(a, b, w) == pytest.approx(repeated, abs=1e-12)
    assert metrics.weighted_pearson_distance(a, b, np.ones(30)) == pytest.approx(metrics.pearson_distance(a, b))
    assert metrics.weighted_pearson_distance(np.full(30, 2.0), b, w) == pytest.approx(math.sqrt(0.5))  # a constant
    assert math.isnan(metrics.weighted_pearson_distance(a, b, np.eye(30)[4]))  # one transition carries weight


def test_epic_resampled_over_heldout_trajectories_pairs_runs_draw_by_draw(hopper_data):
    """`resampled` is EPIC with the held-out trajectories drawn again with replacement: each value equals EPIC on
    the run's own transitions repeated as often as their trajectory was drawn; the draws are the same whatever the
    run's seed (so two runs pair draw by draw), the true reward scores 0 in every one, and the values spread."""
    ds = load_dataset(hopper_data)
    a = ds.arrays
    sim = SimulatorReward("Hopper-v5")
    policies = ds.metadata["policies"]
    q = [p["name"] for p in policies].index(ds.metadata["expert"])
    runs = [HeldoutRewardMetrics(ds, "Hopper-v5", -np.ones(3), np.ones(3), 0.99, seed=s, num_transitions=40,
                                 true_reward=sim, demo_policy=q) for s in (0, 1)]
    np.testing.assert_array_equal(runs[0].replicates, runs[1].replicates)
    assert not np.array_equal(runs[0].epic_idx, runs[1].epic_idx)
    held = ds.trajectories(2)
    assert runs[0].replicates.shape == (200, len(held)) and (runs[0].replicates.sum(1) == len(held)).all()

    def noisy(o, act, term):  # the true reward plus noise that is a function of the state (the same on every call)
        return sim(o, act) + 3 * np.sin(7 * o[:, 0]) * np.cos(5 * o[:, 3])

    m = runs[0]
    out = m.resampled(noisy)
    assert len(out["epic"]) == 200 == len(out["epic_lower_rungs"])
    traj_of_step = np.repeat(np.arange(len(a["traj_start"])), a["traj_len"])
    position = {int(t): k for k, t in enumerate(held)}
    assert len(m.lower_idx) >= 2
    subsets = [("epic", m.epic_idx, m.true_canonical), ("epic_lower_rungs", m.lower_idx, m.lower_true_canonical)]
    for key, idx, true in subsets:  # each subset weighted by its own transitions' trajectories
        learned = m._canonical(noisy, idx)
        for r in (0, 17):
            counts = np.array([m.replicates[r][position[int(t)]] for t in traj_of_step[idx]])
            by_hand = metrics.pearson_distance(np.repeat(learned, counts), np.repeat(true, counts))
            assert out[key][r] == pytest.approx(by_hand, abs=1e-5), key
    assert np.std(out["epic"]) > 0.005 and abs(np.median(out["epic"]) - m(noisy)["epic"]) < 0.1
    assert max(m.resampled(lambda o, act, term: sim(o, act))["epic"]) == pytest.approx(0.0, abs=1e-5)
