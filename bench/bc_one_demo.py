"""Is behaviour cloning from one demonstration poor because of aihf's BC loss, or because of the data?

Trains on the shipped dataset's first demonstration (1,000 transitions) either aihf's `TanhGaussianActor` with its
BC loss (−log π(a^E | s^E), as `bc` and the recipe's warm start use) or a plain MSE regression MLP of the same size
with a tanh output, and reports the deterministic policy's return (mean of 2 episodes) after 2k, 5k and 20k steps.
An exploratory check (docs/results.md, HalfCheetah), not a metric of the runs.

    python bench/bc_one_demo.py nll      # aihf's loss
    python bench/bc_one_demo.py mse      # a plain regression
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from aihf.mujoco.sac import TanhGaussianActor


def evaluate(env, act, episodes: int = 2) -> float:
    returns = []
    for k in range(episodes):
        obs, _ = env.reset(seed=100 + k)
        total, done = 0.0, False
        while not done:
            with torch.no_grad():
                a = act(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()
            obs, r, terminated, truncated, _ = env.step(a)
            total += r
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("loss", choices=("nll", "mse"))
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "data/mujoco/HalfCheetah-v5.npz")
    p.add_argument("--env", default="HalfCheetah-v5")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    d = np.load(args.data, allow_pickle=True)
    start, length = int(d["traj_start"][0]), int(d["traj_len"][0])  # trajectory 0: the first demonstration
    obs = torch.tensor(d["obs"][start:start + length], dtype=torch.float32)
    act = torch.tensor(d["act"][start:start + length], dtype=torch.float32)
    env = gym.make(args.env)
    low, high = (torch.as_tensor(b, dtype=torch.float32) for b in (env.action_space.low, env.action_space.high))
    if args.loss == "nll":
        model = TanhGaussianActor(obs.shape[1], act.shape[1], (256, 256), low, high)
        loss_of, policy = (lambda o, a: -model.log_prob(o, a).mean()), model.deterministic
    else:
        model = torch.nn.Sequential(torch.nn.Linear(obs.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                    torch.nn.ReLU(), torch.nn.Linear(256, act.shape[1]), torch.nn.Tanh())
        loss_of, policy = (lambda o, a: ((model(o) - a) ** 2).mean()), model
    opt = torch.optim.Adam(model.parameters(), 3e-4)
    g = torch.Generator().manual_seed(0)
    print(f"one demonstration of {args.data.name}: {length} transitions, return {float(d['traj_return'][0]):.0f}")
    for step in range(1, 20_001):
        i = torch.randint(0, length, (256,), generator=g)
        loss = loss_of(obs[i], act[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in (2000, 5000, 20_000):
            with torch.no_grad():
                mse = float(((policy(obs) - act) ** 2).mean())
            print(f"{args.loss} {step} steps: loss {loss.item():.3f}, training MSE {mse:.4f}, "
                  f"return {evaluate(env, policy):.0f}", flush=True)


if __name__ == "__main__":
    main()
