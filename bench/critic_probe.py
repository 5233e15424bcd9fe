"""Is a finished SAC run's critic honest? Its Q against the discounted return the policy actually gets.

For each finished run on the true reward (`sac`, `sac_recipe`), from its last checkpoint:
- on the policy's own states: one episode of the stochastic policy (as in training) from a fresh reset; for each of
  the first `--horizon` steps, the critic's min_i Q_i(s_t, a_t) beside the discounted return that followed, both the
  plain one Σ γ^k r_{t+k} and the soft one that SAC's critic targets (each later step's reward less γ α log π);
- on the demonstration's states (the transitions demo replay feeds the critic): from `--demo-states` of them, the
  simulator set to the demonstrated state, the demonstrated action taken, and the policy continuing; the critic's
  Q(s^E, a^E) beside the discounted return that followed; and what the actor does there: its log π (how sure it
  is), −log π(a^E | s^E) (how far it has left the expert's action) and Q(s^E, a ~ π) − Q(s^E, a^E) (how much higher
  the critic rates its own action).
The policy's mean log π on its own states is beside the agent's columns (one episode: a noisy estimate).
The episodes run `--horizon` + 500 steps, so each return's cut-off tail weighs γ^500 ≈ 0.007 of it. An exploratory
check (docs/results.md, HalfCheetah), not a metric of the runs.

    python bench/critic_probe.py runs/halfcheetah/halfcheetah-oracle-recipe-s*/0-* runs/halfcheetah/halfcheetah-no-pairs-s*/1-sac-*
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def discounted(rewards: np.ndarray, gamma: float, first: int) -> np.ndarray:
    """Σ_k γ^k r_{t+k} for t < first."""
    out, acc = np.zeros(len(rewards)), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = rewards[t] + gamma * acc
        out[t] = acc
    return out[:first]


def rollout(env, policy, obs: np.ndarray, steps: int, first_action=None):
    """(observations, actions, rewards, log π of each action) of `steps` steps from the env's current state."""
    import torch
    obs_l, act_l, rew_l, logp_l = [], [], [], []
    for i in range(steps):
        o = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)
        with torch.no_grad():
            a, logp = policy.actor.sample(o, noise=torch.randn(1, policy.actor.action_scale.shape[-1]))
        if first_action is not None and i == 0:  # (its log π is never used: the soft return starts at the next step)
            a = torch.as_tensor(first_action, dtype=torch.float32).unsqueeze(0)
        obs_l.append(obs)
        act_l.append(a[0].numpy())
        logp_l.append(float(logp.reshape(-1)[0]))
        obs, r, terminated, truncated, _ = env.step(a[0].numpy())
        rew_l.append(r)
        if terminated:
            break
    return np.array(obs_l), np.array(act_l), np.array(rew_l), np.array(logp_l)


def probe(run: Path, horizon: int, demo_states: int) -> dict[str, float]:
    import gymnasium as gym
    import pytorch_lightning as pl
    import torch
    from aihf.mujoco.module import MuJoCoAIHF
    from aihf.mujoco.reward_metrics import SimulatorReward
    from aihf.recompose import compose_run
    algo = json.loads((run / "metrics.json").read_text())["algo"]
    if not algo.startswith("sac"):  # sac, sac_recipe and its variants (e.g. sac_recipe_critic_only)
        raise SystemExit(f"{run}: a {algo} run; this check needs a critic trained on the true reward (sac, sac_recipe)")
    cfg = compose_run(run, [], Path("/nonexistent-probe-output") / run.name)  # nothing is written
    torch.set_num_threads(1)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = MuJoCoAIHF(cfg)
    try:
        module.init_from(str(run / "checkpoints" / "last.ckpt"))
        policy, gamma = module.policy, module.policy.gamma
        alpha = float(policy.alpha)
        env = gym.make(cfg.env.id, max_episode_steps=horizon + 500)
        soft = lambda rew, logp: rew - np.append(gamma * alpha * logp[1:], 0.0)  # noqa: E731

        def q(obs, act):
            with torch.no_grad():
                return policy.critic(torch.as_tensor(obs, dtype=torch.float32),
                                     torch.as_tensor(act, dtype=torch.float32)).min(0).values.double().numpy()

        obs, _ = env.reset(seed=10_000 + cfg.seed)
        o, a, r, logp = rollout(env, policy, obs, horizon + 500)
        out = {"α": alpha, "agent: log π": float(logp[:horizon].mean()),
               "agent: Q": float(q(o[:horizon], a[:horizon]).mean()),
               "agent: return": float(discounted(r, gamma, horizon).mean()),
               "agent: soft return": float(discounted(soft(r, logp), gamma, horizon).mean())}
        demo = module.data.demo_transitions
        if not len(demo["obs"]):  # sac sees no demonstration: the states of the dataset's first one
            from aihf.mujoco.datasets import DEMO
            obs_e, act_e = module.data.dataset.transitions(module.data.dataset.trajectories(DEMO)[:1])
            demo = {"obs": torch.as_tensor(obs_e), "act": torch.as_tensor(act_e)}
        picks = np.random.default_rng(cfg.seed).choice(len(demo["obs"]), demo_states, replace=False)
        unwrapped = env.unwrapped
        nq, nv = unwrapped.model.nq, unwrapped.model.nv
        sim = SimulatorReward(cfg.env.id)  # how many root coordinates the observation leaves out (1 on HalfCheetah)
        k = sim.k
        sim.close()
        qs, plain, softs = [], [], []
        states = torch.as_tensor(demo["obs"][picks], dtype=torch.float32)
        with torch.no_grad():  # what the actor does there: how sure, how far from the expert, and rated how much higher
            act_pi, logp_pi = policy.actor.sample(states, noise=torch.randn(len(picks), policy.actor.action_scale.numel()))
            expert_logp = policy.actor.log_prob(states, torch.as_tensor(demo["act"][picks], dtype=torch.float32))
        gap = q(states.numpy(), act_pi.numpy()) - q(states.numpy(), demo["act"][picks].numpy())
        for i in picks:
            s, act = demo["obs"][i].numpy().astype(np.float64), demo["act"][i].numpy()
            env.reset(seed=int(i))
            qpos = np.zeros(nq)  # the unobserved root coordinates at 0: the rewards are translation invariant
            qpos[k:] = s[:nq - k]
            unwrapped.set_state(qpos, s[nq - k:nq - k + nv])
            o, a, r, logp = rollout(env, policy, s, 500, first_action=act)
            qs.append(float(q(s[None], act[None])[0]))
            plain.append(float(discounted(r, gamma, 1)[0]))
            softs.append(float(discounted(soft(r, logp), gamma, 1)[0]))
        out.update({"demo: Q(s, a^E)": float(np.mean(qs)), "demo: return": float(np.mean(plain)),
                    "demo: soft return": float(np.mean(softs)), "demo: log π": float(logp_pi.mean()),
                    "demo: −log π(a^E)": float(-expert_logp.mean()), "demo: Q(s, π) − Q(s, a^E)": float(gap.mean())})
        env.close()
        return {"algo": algo, "seed": cfg.seed, **out}
    finally:
        module.teardown("probe")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="finished sac or sac_recipe runs with their checkpoints")
    parser.add_argument("--horizon", type=int, default=500)
    parser.add_argument("--demo-states", type=int, default=10)
    args = parser.parse_args()
    rows = [probe(run, args.horizon, args.demo_states) for run in args.runs]
    keys = [k for k in rows[0] if k not in ("algo", "seed")]
    print("| algo | seed | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 2))
    for r in sorted(rows, key=lambda r: (r["algo"], r["seed"])):
        print(f"| {r['algo']} | {r['seed']} | " + " | ".join(f"{r[k]:.3f}" if k == "α" else f"{r[k]:.1f}" if "log" in k else f"{r[k]:.0f}"
                                                          for k in keys) + " |")


if __name__ == "__main__":
    main()
