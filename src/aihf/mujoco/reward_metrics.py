"""How well a learned reward matches the true one on held-out data, beside two trivial rewards that know nothing.

Every metric is computed by one code path for three rewards of a transition: the learned r_θ(s, a), a constant
r ≡ 1, and the length proxy r = 1 unless the step ends the episode by termination (it "rewards staying alive").
A metric is worth reporting only where the learned reward beats both (docs/metrics.md):

- `epic`: EPIC distance to the true reward (0 = the same up to shaping and scale; a constant scores 0.707), on
  held-out transitions (s, a, s') with coverage distributions D_S = held-out states, D_A = uniform actions. The
  true reward at states and actions that were never visited is the simulator's (`SimulatorReward`).
- `reward_pearson`, `reward_spearman`: per-transition correlation with the stored true reward (a constant: 0).
- `pref_accuracy`: held-out pairs ordered right by the summed segment rewards (ties count half);
  `pref_accuracy_equal_length`: the same on pairs of equal-length segments only, where counting steps cannot help.
- `return_correlation`: learned vs true return of held-out trajectories (the length proxy does well here when
  length predicts return, which is why it is never shown alone).

Most held-out pairs compare segments of two different ladder policies, so a reward that knew only which policy
made a segment would order most of them. `baselines()` says how many: the `policy` baseline ranks each segment by
its length times its policy's mean reward per step on the training trajectories (a pair within one policy ties).
It knows the ladder, which no learner does: a learned reward near it has learned how good each policy is, not more.

A reward fitted to demonstrations can score well by recognising behaviour that looks like them, and the held-out
data holds much of it (the demonstrator's own policy and near-expert rungs). The `demo_classifier` baseline is that
and nothing else: the logit of a linear classifier of the run's own demonstrated (s, a) against the training
trajectories of the other ladder policies (`DemoClassifierReward`). It sees the ladder, which no learner does; a
learned reward no better than it has learned to recognise the demonstrations, not more.

Every run of a figure is scored on the same few held-out trajectories (22 on Hopper), so intervals over seeds say
nothing of which trajectories were held out. `resampled()` measures EPIC again under `HELDOUT_REPLICATES`
resamplings of the held-out trajectories (with replacement), drawn from a fixed seed, so they are the same for every
run on one dataset and two runs' values pair replicate by replicate (`aihf.report`'s held-out sampling interval).
"""

from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np

from aihf import metrics
from aihf.mujoco.datasets import HELDOUT, TRAIN, TrajectoryDataset

# r(obs, act, ends_by_termination) for arrays of transitions -> rewards (N,)
RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

# resamplings of the held-out trajectories, from a seed of their own: the same for every run on one dataset
HELDOUT_REPLICATES, HELDOUT_RESAMPLING_SEED = 200, 20261207


def constant_reward(obs, act, terminal):
    return np.ones(len(obs))


def length_proxy_reward(obs, act, terminal):
    return 1.0 - np.asarray(terminal, dtype=np.float64)


class DemoClassifierReward:
    """r(s, a) = the logit of a linear logistic regression that tells the demonstrated (s, a) from the (s, a) of other
    policies: a reward that has learned to recognise the demonstrations and nothing else. Features are the
    observation and action, standardised on the data it is fitted to; plain (unweighted) log-likelihood, mean over
    steps, with a small L2 penalty so that separable data still has a finite fit. Fitted once, deterministically
    (L-BFGS). (Weighing the two classes equally made a weaker recogniser on Hopper: per-step correlation with the
    true reward 0.45–0.51 against 0.60–0.62; a control should be the stronger one.)"""

    def __init__(self, demo_obs: np.ndarray, demo_act: np.ndarray, other_obs: np.ndarray, other_act: np.ndarray,
                 l2: float = 1e-3):
        from scipy.optimize import minimize
        pos = np.concatenate([demo_obs, demo_act], 1).astype(np.float64)
        neg = np.concatenate([other_obs, other_act], 1).astype(np.float64)
        x = np.concatenate([pos, neg])
        self.mean, std = x.mean(0), x.std(0)
        self.std = np.where(std > 0, std, 1.0)
        z = np.concatenate([(x - self.mean) / self.std, np.ones((len(x), 1))], 1)
        y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
        w = np.full(len(y), 1.0 / len(y))

        def loss(beta):
            logit = z @ beta
            value = (w * (np.logaddexp(0.0, logit) - y * logit)).sum() + 0.5 * l2 * (beta[:-1] ** 2).sum()
            grad = z.T @ (w * (1.0 / (1.0 + np.exp(-logit)) - y))
            grad[:-1] += l2 * beta[:-1]
            return value, grad

        fit = minimize(loss, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 1000})
        self.beta, self.converged = fit.x, bool(fit.success)

    def __call__(self, obs, act, terminal=None) -> np.ndarray:
        x = (np.concatenate([obs, act], 1).astype(np.float64) - self.mean) / self.std
        return x @ self.beta[:-1] + self.beta[-1]


class DemoMLPClassifierReward:
    """r(s, a) = the logit of a network of r_θ's shape ((64, 64) ReLU on (s, a)) trained only to tell the
    demonstrated (s, a) from the (s, a) of other policies: the non-linear, same-capacity counterpart of
    `DemoClassifierReward`. Standardised features, plain (unweighted) binary cross-entropy on minibatches drawn
    uniformly from the training part, Adam with an L2 penalty (r_θ's weight decay). How long it trains is chosen by
    its own criterion, never by the reward metrics: every `check_every` updates the cross-entropy on held-back data
    (every `fold`-th block of `block` consecutive steps of each class, so neighbouring near-identical steps do not
    leak across; shorter blocks for a class of under 2 · fold · block steps) is measured, and the network at its
    lowest is kept (`best_update`, `val_loss`); with too little data to hold back both classes, the last network,
    trained on all of it. Deterministic from `seed` on
    the CPU, and torch's global random state is left as it was."""

    def __init__(self, demo_obs: np.ndarray, demo_act: np.ndarray, other_obs: np.ndarray, other_act: np.ndarray,
                 hidden: tuple[int, ...] = (64, 64), max_updates: int = 3000, batch_size: int = 1000,
                 lr: float = 1e-3, weight_decay: float = 1e-3, check_every: int = 100, block: int = 50,
                 fold: int = 5, seed: int = 0):
        import copy

        import torch
        from torch import nn
        from torch.nn import functional as F
        x = np.concatenate([np.concatenate([demo_obs, demo_act], 1), np.concatenate([other_obs, other_act], 1)])
        x = x.astype(np.float64)
        self.mean, std = x.mean(0), x.std(0)
        self.std = np.where(std > 0, std, 1.0)
        z = torch.as_tensor((x - self.mean) / self.std, dtype=torch.float32)
        y = torch.cat([torch.ones(len(demo_obs)), torch.zeros(len(other_obs))])
        # blocks shrink for a short class (a 60-step demonstration), so each class holds some back
        held = np.concatenate([(np.arange(n) // min(block, max(1, n // (2 * fold)))) % fold == fold - 1
                               for n in (len(demo_obs), len(other_obs))])
        train, val = torch.as_tensor(np.flatnonzero(~held)), torch.as_tensor(np.flatnonzero(held))
        sizes = [z.shape[1], *hidden, 1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers: list[nn.Module] = []
            for i in range(len(sizes) - 1):
                layers += [nn.Linear(sizes[i], sizes[i + 1])] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
            self.net = nn.Sequential(*layers)
        draw = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=lr, weight_decay=weight_decay)

        def val_loss() -> float:
            with torch.no_grad():
                return float(F.binary_cross_entropy_with_logits(self.net(z[val]).squeeze(-1), y[val]))

        checked = bool(len(val)) and 0 < float(y[val].sum()) < len(val)  # both classes held back, else no choice
        if not checked:
            train = torch.arange(len(z))
        best, self.best_update, self.val_loss = copy.deepcopy(self.net.state_dict()), 0, val_loss() if checked \
            else float("nan")
        for update in range(1, max_updates + 1):
            idx = train[torch.randint(len(train), (min(batch_size, len(train)),), generator=draw)]
            loss = F.binary_cross_entropy_with_logits(self.net(z[idx]).squeeze(-1), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if checked and update % check_every == 0 and (now := val_loss()) < self.val_loss:
                best, self.best_update, self.val_loss = copy.deepcopy(self.net.state_dict()), update, now
        if not checked:  # too little data to hold any back: the last network, trained on all of it
            best, self.best_update = self.net.state_dict(), max_updates
        self.net.load_state_dict(best)
        self.net.eval()

    def __call__(self, obs, act, terminal=None) -> np.ndarray:
        import torch
        x = (np.concatenate([obs, act], 1).astype(np.float64) - self.mean) / self.std
        with torch.no_grad():
            return self.net(torch.as_tensor(x, dtype=torch.float32)).squeeze(-1).double().numpy()


class SimulatorReward:
    """The env's true reward r(s, a) at the state an observation describes.

    The MuJoCo locomotion observations are the joint positions without the first k root coordinates, then the
    joint velocities (k = 1 for Hopper, Walker2d and HalfCheetah, 2 for Ant and Humanoid; found by comparing an
    observation with the simulator's state). The rewards are translation invariant, so the missing coordinates are
    set to 0, the state is written into the simulator and one env step is taken. Velocities clipped in the
    observation (Hopper and Walker2d clip at ±10) are used as clipped.
    """

    def __init__(self, env_id: str):
        self.env = gym.make(env_id).unwrapped
        obs, _ = self.env.reset(seed=0)
        self.nq, self.nv = self.env.model.nq, self.env.model.nv
        data = self.env.data
        found = [k for k in (1, 2, 0) if len(obs) >= self.nq - k + self.nv
                 and np.allclose(obs[:self.nq - k], data.qpos[k:])
                 and np.allclose(obs[self.nq - k:self.nq - k + self.nv], data.qvel)]
        if not found:
            raise ValueError(f"{env_id}: its observation does not start with (qpos[k:], qvel); the true reward of "
                             f"unvisited states is unavailable")
        self.k = found[0]

    def __call__(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        out = np.empty(len(obs))
        qpos = np.zeros(self.nq)
        for i, (o, a) in enumerate(zip(np.asarray(obs, dtype=np.float64), np.asarray(act, dtype=np.float64))):
            qpos[self.k:] = o[:self.nq - self.k]
            self.env.set_state(qpos, o[self.nq - self.k:self.nq - self.k + self.nv])
            out[i] = self.env.step(a)[1]
        return out

    def close(self) -> None:
        self.env.close()


class HeldoutRewardMetrics:
    """The held-out data and everything about the true reward, prepared once; `__call__` scores a reward."""

    def __init__(self, dataset: TrajectoryDataset, env_id: str, action_low: np.ndarray, action_high: np.ndarray,
                 gamma: float, seed: int, num_transitions: int = 500, num_coverage: int = 8,
                 true_reward: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                 demo_policy: int | None = None, demos: tuple[np.ndarray, np.ndarray] | None = None,
                 mlp_classifier: bool = True):
        """`demos`: the run's own demonstrations (observations, actions), for the demo_classifier baselines (the
        MLP one only with `mlp_classifier`)."""
        a = dataset.arrays
        rng = np.random.default_rng(seed)
        self.gamma, self.seed, self.mlp_classifier = gamma, seed, mlp_classifier
        trajs = dataset.trajectories(HELDOUT)
        terminated = dataset.metadata.get("trajectory_terminated")
        # every held-out step (trajectory after trajectory), with whether it ends its episode by termination
        spans = [(int(a["traj_start"][t]), int(a["traj_len"][t])) for t in trajs]
        self.steps = np.concatenate([np.arange(s, s + n) for s, n in spans]) if spans else np.zeros(0, np.int64)
        self.step_terminal = np.zeros(len(self.steps), dtype=bool)
        ends = np.cumsum([n for _, n in spans]) - 1
        if terminated is not None and len(ends):
            self.step_terminal[ends] = [bool(terminated[t]) for t in trajs]
        self.obs, self.act, self.reward = a["obs"], a["act"], a["reward"]
        # where each dataset step sits in self.steps: segments and trajectories are contiguous runs there
        position = np.full(len(self.obs), -1, dtype=np.int64)
        position[self.steps] = np.arange(len(self.steps))
        self.traj_spans = np.array([(position[s], n) for s, n in spans], dtype=np.int64).reshape(-1, 2)
        self.traj_returns = a["traj_return"][trajs]

        # which held-out trajectory each dataset step belongs to (-1: none), and the trajectories' resamplings
        self.trajectory_of = np.full(len(self.obs), -1, dtype=np.int64)
        for k, (s, n) in enumerate(spans):
            self.trajectory_of[s:s + n] = k
        self.replicates = np.random.default_rng(HELDOUT_RESAMPLING_SEED).multinomial(
            len(spans), np.full(len(spans), 1.0 / max(len(spans), 1)), size=HELDOUT_REPLICATES) if spans else None
        # EPIC: transitions (s, a, s') inside held-out trajectories (the stored steps have s' except the last)
        inner = np.concatenate([np.arange(s, s + n - 1) for s, n in spans]) if spans else np.zeros(0, np.int64)
        self.epic_idx = np.sort(rng.choice(inner, size=min(num_transitions, len(inner)), replace=False))
        self.coverage_states = self.obs[rng.choice(self.steps, size=num_coverage)] if len(self.steps) else None
        self.coverage_actions = rng.uniform(action_low, action_high,
                                            size=(num_coverage, len(action_low))).astype(np.float32)
        # EPIC again on the transitions of the ladder's lower rungs (policies whose return is under half the
        # demonstrator's), meant as the behaviour least like the demonstrations (on Hopper the linear recogniser
        # scores about as well there as overall, docs/results.md); drawn from a stream of their own, so the draws above are what they were before this metric existed
        lower = self._lower_rungs(dataset, demo_policy)
        self.lower_idx = np.zeros(0, np.int64)
        if lower is not None:
            low = [(s, n) for t, (s, n) in zip(trajs, spans) if a["traj_policy"][t] in lower]
            inner_low = np.concatenate([np.arange(s, s + n - 1) for s, n in low]) if low else np.zeros(0, np.int64)
            self.lower_idx = np.sort(np.random.default_rng([seed, 1]).choice(
                inner_low, size=min(num_transitions, len(inner_low)), replace=False))
        self.true_canonical, self.lower_true_canonical, self.simulator_fidelity = None, None, float("nan")
        if len(self.epic_idx) >= 2:
            true_reward = true_reward or SimulatorReward(env_id)
            self.true_canonical = self._canonical(lambda o, act, term: true_reward(o, act))
            if len(self.lower_idx) >= 2:
                self.lower_true_canonical = self._canonical(lambda o, act, term: true_reward(o, act), self.lower_idx)
            # the simulator's reward against the recorded one on the same transitions: is it the data's reward?
            self.simulator_fidelity = metrics.pearson(true_reward(self.obs[self.epic_idx], self.act[self.epic_idx]),
                                                      self.reward[self.epic_idx])
            if isinstance(true_reward, SimulatorReward):
                true_reward.close()

        # held-out pairs: each side's (position, length) in self.steps, and the true segment returns (split hygiene,
        # checked at load, keeps every held-out pair on held-out trajectories)
        index = a["pair_index"][dataset.pairs(HELDOUT)]
        self.pair_spans = [np.stack([position[a["traj_start"][index[:, t]] + index[:, s]], index[:, n]], 1)
                           for t, s, n in ((0, 1, 2), (3, 4, 5))]
        held_reward = self.reward[self.steps].astype(np.float64)
        self.pair_true = [np.array([held_reward[p:p + n].sum() for p, n in side]) for side in self.pair_spans]
        self.equal_length = index[:, 2] == index[:, 5]
        # the policy baseline: each side's length × its policy's mean reward per step on the training trajectories
        train = dataset.trajectories(TRAIN)
        policy, length, ret = a["traj_policy"], a["traj_len"], a["traj_return"]
        per_step = {int(q): ret[train][policy[train] == q].sum() / length[train][policy[train] == q].sum()
                    for q in np.unique(policy[train])}
        self.pair_policy_pred = [np.array([per_step.get(int(policy[t]), np.nan) * n for t, n in
                                           zip(index[:, ti], index[:, ni])]) for ti, ni in ((0, 2), (3, 5))]
        # pairs with no segment of the demonstrator's policy (index into the metadata's policies): a reward fitted
        # to its demonstrations can order the others only by what it learned beyond recognising that policy
        self.without_demonstrator = None
        if demo_policy is not None:
            self.without_demonstrator = (policy[index[:, 0]] != demo_policy) & (policy[index[:, 3]] != demo_policy)
        # the demo_classifier baseline is fitted in baselines(), the one place that uses it (not at every run's
        # first evaluation)
        self.classifier_data = None
        if demos is not None and len(demos[0]):
            others = train if demo_policy is None else train[policy[train] != demo_policy]
            steps = dataset.steps_of(others)  # numpy: no tensor made outside the module's device
            self.classifier_data = (np.asarray(demos[0]), np.asarray(demos[1]), a["obs"][steps], a["act"][steps])

    @staticmethod
    def span_sums(values: np.ndarray, spans: np.ndarray) -> np.ndarray:
        """Sums of values[p:p + n] for each (p, n)."""
        total = np.concatenate([[0.0], np.cumsum(values)])
        return total[spans[:, 0] + spans[:, 1]] - total[spans[:, 0]]

    @staticmethod
    def _lower_rungs(dataset: TrajectoryDataset, demo_policy: int | None) -> set[int] | None:
        """The ladder policies (indices into the metadata's) whose recorded return is under half the
        demonstrator's (the untrained policy, with none recorded, among them); None without a demonstrator."""
        policies = dataset.metadata.get("policies", [])
        if demo_policy is None or demo_policy >= len(policies) or policies[demo_policy].get("eval_return") is None:
            return None
        bar = 0.5 * policies[demo_policy]["eval_return"]
        return {q for q, p in enumerate(policies) if p.get("eval_return") is None or p["eval_return"] < bar}

    def _canonical(self, fn: RewardFn, idx: np.ndarray | None = None) -> np.ndarray:
        idx = self.epic_idx if idx is None else idx
        of_transition = lambda o, a, o_next: fn(o, a, np.zeros(len(o), dtype=bool))  # noqa: E731 - r(s, a)
        return metrics.canonicalise(of_transition, self.obs[idx], self.act[idx], self.obs[idx + 1],
                                    self.coverage_states, self.coverage_actions, self.gamma)

    def __call__(self, fn: RewardFn) -> dict[str, float]:
        """The metrics of reward `fn` on the held-out data (NaN where undefined)."""
        out: dict[str, float] = {}
        if self.true_canonical is not None:
            out["epic"] = metrics.pearson_distance(self._canonical(fn), self.true_canonical)
        if self.lower_true_canonical is not None:
            out["epic_lower_rungs"] = metrics.pearson_distance(self._canonical(fn, self.lower_idx),
                                                               self.lower_true_canonical)
        if len(self.steps):
            # the reward of every held-out step once; segments and trajectories are sums of it
            r = np.asarray(fn(self.obs[self.steps], self.act[self.steps], self.step_terminal), dtype=np.float64)
            out["reward_pearson"] = metrics.pearson(r, self.reward[self.steps])
            out["reward_spearman"] = metrics.spearman(r, self.reward[self.steps])
            if len(self.equal_length):
                pred = [self.span_sums(r, side) for side in self.pair_spans]
                out["pref_accuracy"] = metrics.pair_accuracy(*pred, *self.pair_true)
                out["pref_accuracy_equal_length"] = metrics.pair_accuracy(*pred, *self.pair_true, self.equal_length)
                if self.without_demonstrator is not None:
                    out.update(self._without_demonstrator(pred))
            if len(self.traj_spans) >= 2:
                out["return_correlation"] = metrics.pearson(self.span_sums(r, self.traj_spans), self.traj_returns)
        return out

    def resampled(self, fn: RewardFn) -> dict[str, list[float]]:
        """EPIC (and on the lower rungs) under each resampling of the held-out trajectories: the same transitions,
        each weighted by how often its trajectory was drawn (rounded to 5 decimals: records stay small)."""
        out = {}
        for key, idx, true in (("epic", self.epic_idx, self.true_canonical),
                               ("epic_lower_rungs", self.lower_idx, self.lower_true_canonical)):
            if true is None or self.replicates is None:
                continue
            trajectory = self.trajectory_of[idx]
            if (trajectory < 0).any():  # (-1 would silently read the last trajectory's draw count)
                raise ValueError("resampled: a transition outside the held-out trajectories")
            learned, weights = self._canonical(fn, idx), self.replicates[:, trajectory]
            out[key] = [round(metrics.weighted_pearson_distance(learned, true, w), 5) for w in weights]
        return out

    def _without_demonstrator(self, pred: list[np.ndarray], known: np.ndarray | None = None) -> dict[str, float]:
        mask = self.without_demonstrator if known is None else self.without_demonstrator & known
        return {"pref_accuracy_without_demonstrator": metrics.pair_accuracy(*pred, *self.pair_true, mask),
                "pref_accuracy_equal_length_without_demonstrator": metrics.pair_accuracy(
                    *pred, *self.pair_true, mask & self.equal_length)}

    def baselines(self) -> dict[str, float]:
        out = {"baseline/true_reward_simulator_vs_recorded_corr": self.simulator_fidelity}
        rewards = [("constant", constant_reward), ("length", length_proxy_reward)]
        if self.classifier_data is not None:
            rewards.append(("demo_classifier", DemoClassifierReward(*self.classifier_data)))
            if self.mlp_classifier:
                rewards.append(("demo_mlp_classifier", DemoMLPClassifierReward(*self.classifier_data, seed=self.seed)))
        for name, fn in rewards:
            out.update({f"baseline/{name}/{k}": v for k, v in self(fn).items()})
            if isinstance(fn, DemoMLPClassifierReward):  # where its own criterion stopped it, and how well it fit
                out[f"baseline/{name}/best_update"] = float(fn.best_update)
                out[f"baseline/{name}/heldback_cross_entropy"] = fn.val_loss
        if len(self.equal_length):
            known = ~np.isnan(self.pair_policy_pred[0]) & ~np.isnan(self.pair_policy_pred[1])
            pred = [np.nan_to_num(side) for side in self.pair_policy_pred]
            out["baseline/policy/pref_accuracy"] = metrics.pair_accuracy(*pred, *self.pair_true, known)
            out["baseline/policy/pref_accuracy_equal_length"] = metrics.pair_accuracy(
                *pred, *self.pair_true, known & self.equal_length)
            if self.without_demonstrator is not None:
                out.update({f"baseline/policy/{k}": v for k, v in self._without_demonstrator(pred, known).items()})
        return out
