"""Does the linear demonstration classifier come close to the true reward through forward speed?

On each finished MuJoCo run's EPIC transitions (the held-out (s, a) that `eval/epic` scores): the per-step Pearson
correlation with the true reward of the run's learned r_θ (also with the x-velocity coordinate of its input shuffled
across the transitions, and, as its control, the lowest with any other coordinate shuffled), of the `demo_classifier`
baseline, of the same linear classifier fitted with the x-velocity coordinate held at 0 (so it cannot use it) and,
as its control, the lowest such correlation over every other observation coordinate held at 0 in turn, and of the
`demo_mlp_classifier` baseline; and the true reward's own correlation with x-velocity. On these tasks
EPIC ≈ √((1 − ρ)/2), so a correlation reads as an EPIC distance. An exploratory check (docs/results.md), not a
metric of the runs.

    python bench/speed_probe.py runs/hopper/hopper-pairs-10-s*/0-aihf-s*
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def probe(run: Path) -> dict[str, float]:
    import pytorch_lightning as pl
    import torch
    from aihf.mujoco.module import MuJoCoAIHF
    from aihf.mujoco.reward_metrics import DemoClassifierReward, DemoMLPClassifierReward, SimulatorReward
    from aihf.recompose import compose_run
    cfg = compose_run(run, [], Path("/nonexistent-probe-output") / run.name)  # nothing is written
    torch.set_num_threads(1)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = MuJoCoAIHF(cfg)
    try:
        module.init_from(str(run / "checkpoints" / "last.ckpt"))
        held = module.heldout_metrics
        obs, act = held.obs[held.epic_idx], held.act[held.epic_idx]
        simulator = SimulatorReward(cfg.env.id)
        true = simulator(obs, act)
        speed_at = simulator.nq - simulator.k  # qvel[0], the root's x-velocity, follows qpos[k:]
        simulator.close()

        demo_obs, demo_act, other_obs, other_act = held.classifier_data
        corr = lambda fn: float(np.corrcoef(np.asarray(fn(obs, act), dtype=np.float64), true)[0, 1])  # noqa: E731

        def without(i: int) -> float:
            """The linear classifier fitted and scored with observation coordinate i held at 0 (a constant feature:
            standardised to 0, its weight stays 0)."""
            def blind(o: np.ndarray) -> np.ndarray:
                o = np.array(o, copy=True)
                o[:, i] = 0.0
                return o
            fit = DemoClassifierReward(blind(demo_obs), demo_act, blind(other_obs), other_act)
            return corr(lambda o, a: fit(blind(o), a))

        r_theta = lambda o, a: module.learned_reward(o, a, np.zeros(len(o), bool))  # noqa: E731

        def permuted(i: int) -> float:
            """r_θ's correlation with coordinate i shuffled across the transitions (permutation importance: r_θ
            cannot be refitted without it, and a shuffled column keeps its values in range, unlike a zeroed one),
            averaged over 20 fixed shuffles."""
            rng = np.random.default_rng(0)
            def shuffled(o: np.ndarray) -> np.ndarray:
                o = np.array(o, copy=True)
                o[:, i] = o[rng.permutation(len(o)), i]
                return o
            return float(np.mean([corr(lambda o, a: r_theta(shuffled(o), a)) for _ in range(20)]))

        out = {"r_θ": corr(r_theta),
               "r_θ, x-velocity shuffled": permuted(speed_at),
               "r_θ, lowest with one other coordinate shuffled": min(permuted(i) for i in range(obs.shape[1])
                                                                     if i != speed_at),
               "linear classifier": corr(DemoClassifierReward(demo_obs, demo_act, other_obs, other_act)),
               "linear, no x-velocity": without(speed_at)}
        # the control: is speed special, or does holding any informative coordinate at 0 cost as much?
        out["linear, lowest without one other coordinate"] = min(without(i) for i in range(obs.shape[1])
                                                                 if i != speed_at)
        out["MLP classifier"] = corr(DemoMLPClassifierReward(demo_obs, demo_act, other_obs, other_act,
                                                             seed=held.seed))
        out["true reward vs x-velocity"] = float(np.corrcoef(true, obs[:, speed_at])[0, 1])
        return out
    finally:
        module.teardown("probe")


def main() -> None:
    from aihf.stats import t_interval
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="finished MuJoCo runs with a learned reward")
    runs = parser.parse_args().runs
    rows = {run: probe(run) for run in runs}
    keys = list(next(iter(rows.values())))
    print("Per-step Pearson correlation with the true reward on each run's EPIC transitions\n")
    print("| run | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1))
    for run, row in rows.items():
        print(f"| {run.parent.name}/{run.name} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |")
    cells = []
    for k in keys:
        mean, low, high = t_interval([row[k] for row in rows.values()])
        cells.append(f"{mean:.3f} [{low:.3f}, {high:.3f}]")
    print(f"| mean [95 % t-interval], {len(rows)} runs | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
