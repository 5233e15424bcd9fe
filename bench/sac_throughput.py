"""Environment steps per second of aihf's SAC loop (with updates) against stable-baselines3's SAC, side by side.

Both sides in one process run, on the same device, with the same env, network sizes (actor and twin critics),
batch size, update-to-data ratio (1 gradient step per env step; with N envs, N gradient steps per vector step),
learning_starts, replay size, fp32 and torch threads. Usage:
    python bench/sac_throughput.py --env HalfCheetah-v5 --steps 3000 --hidden 256 256 --batch 256
    python bench/sac_throughput.py --num-envs 8            # vectorised envs on both sides
    python bench/sac_throughput.py --device cuda            # both on the GPU (aihf: trainer=gpu)
    python bench/sac_throughput.py --sb3-matmul onednn      # SB3's nn.Linear layers through aihf's oneDNN kernels
Prints a markdown table and the ratio aihf / SB3 (> 1: aihf is faster). Timing runs from the first env step to
the last update on both sides (learning_starts random steps included), excluding start-up and evaluation.
`--repeats N` runs each side N times in alternating order (SB3, aihf, aihf, SB3, ...) and reports the median and
range of each and of the ratio of medians. SB3's entropy coefficient starts at 0.2 like aihf's (`ent_coef=auto_0.2`;
SB3's own default starts it at 1.0), which changes no work per step but keeps the two runs the same algorithm.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def bench_aihf(args, extra: list[str]) -> float:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict
    from aihf.app import train
    from aihf.config import register_configs
    register_configs()
    conf = str(Path(__file__).resolve().parents[1] / "conf")
    hidden = "[" + ",".join(map(str, args.hidden)) + "]"
    accel = "gpu" if args.device.startswith("cuda") else "cpu"
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "algo=sac", f"env.id={args.env}", f"env.num_envs={args.num_envs}", f"policy.hidden={hidden}",
            f"policy.batch_size={args.batch}", f"policy.learning_starts={args.learning_starts}",
            f"policy.buffer_size={args.steps}", f"loop.total_env_steps={args.steps}",
            f"loop.steps_per_iteration={args.num_envs * max(1, 500 // args.num_envs)}",
            f"loop.eval_every={10 * args.steps}", "loop.final_eval_episodes=1", f"loop.torch_threads={args.threads}",
            f"trainer={accel}", "trainer.enable_progress_bar=false", "trainer.enable_checkpointing=false",
            "logger.csv=true", *extra])
    with tempfile.TemporaryDirectory() as d, open_dict(cfg):
        cfg.run_dir = d
        result = train(cfg)
        STEADY.append(steady_state(Path(d) / "csv" / "metrics.csv", args.learning_starts))
    return result["env_steps"] / result["train_wall_s"]  # training time only: the final evaluation is excluded


STEADY: list[float] = []


def steady_state(csv_path: Path, learning_starts: int) -> float:
    """env steps/s over the iterations after the first one with updates (excludes compilation and warm-up)."""
    import csv
    rows = [r for r in csv.DictReader(open(csv_path)) if r.get("charts/SPS")]
    steps = [int(r["step"]) for r in rows]
    later = [(b - a, float(r["charts/SPS"])) for a, b, r in zip(steps, steps[1:], rows[1:]) if a > learning_starts]
    return sum(n for n, _ in later) / sum(n / sps for n, sps in later) if later else float("nan")


def bench_sb3(args) -> float:
    import torch
    from stable_baselines3 import SAC
    if args.sb3_matmul == "onednn":  # SB3 with aihf's kernels: every nn.Linear through aihf.mujoco.layers.linear
        from aihf.mujoco.layers import linear
        torch.nn.Linear.forward = lambda self, x: linear(x, self.weight, self.bias, "auto")
    from stable_baselines3.common.env_util import make_vec_env
    torch.set_num_threads(args.threads)
    env = make_vec_env(args.env, n_envs=args.num_envs, seed=0)
    model = SAC("MlpPolicy", env, policy_kwargs={"net_arch": list(args.hidden)}, batch_size=args.batch,
                train_freq=1, gradient_steps=-1,  # -1: as many updates as env steps in the last vector step
                learning_starts=args.learning_starts, buffer_size=args.steps, ent_coef="auto_0.2",
                device=args.device, seed=0, verbose=0)
    t0 = time.perf_counter()
    model.learn(args.steps)
    return args.steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--learning-starts", type=int, default=500)
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--num-envs", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu | cuda (both sides)")
    p.add_argument("--aihf", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra aihf overrides, e.g. policy.matmul=aten or policy.compile=true")
    p.add_argument("--skip-sb3", action="store_true", help="aihf only (no ratio)")
    p.add_argument("--repeats", type=int, default=1, help="runs per side, in alternating order")
    p.add_argument("--sb3-matmul", choices=["aten", "onednn"], default="aten",
                   help="onednn: SB3's linear layers use the same oneDNN kernels as aihf's (same-kernel comparison)")
    args = p.parse_args()
    import numpy as np
    import torch
    runs: dict[str, list[float]] = {"aihf": [], "sb3": []}
    for i in range(args.repeats):
        order = ["sb3", "aihf"] if i % 2 == 0 else ["aihf", "sb3"]
        for side in order:
            if side == "sb3" and not args.skip_sb3:
                runs["sb3"].append(bench_sb3(args))
            elif side == "aihf":
                runs["aihf"].append(bench_aihf(args, args.aihf))
    ours = float(np.median(runs["aihf"]))
    sb3 = float(np.median(runs["sb3"])) if runs["sb3"] else None
    cpu = platform.processor() or platform.machine()
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu
    print(f"\n{args.env}, {args.steps} env steps ({args.learning_starts} random first), {args.num_envs} env(s), "
          f"hidden {args.hidden}, batch {args.batch}, 1 update per env step, {args.threads} torch thread(s), "
          f"device {device}, torch {torch.__version__}, aihf overrides {args.aihf or 'none'}, "
          f"SB3 matmul {args.sb3_matmul}")
    span = lambda v: f"{min(v):.1f}–{max(v):.1f}"  # noqa: E731
    print(f"| implementation | env steps/s (median of {args.repeats}) | range |\n|---|---|---|")
    print(f"| aihf SAC loop (Lightning module) | {ours:.1f} | {span(runs['aihf'])} |")
    print(f"| aihf, steady state (iterations after the first with updates: no compilation or warm-up) "
          f"| {float(np.median(STEADY)):.1f} | {span(STEADY)} |")
    if sb3 is not None:
        print(f"| stable-baselines3 SAC | {sb3:.1f} | {span(runs['sb3'])} |")
        print(f"ratio of medians aihf / SB3 = {ours / sb3:.2f}")


if __name__ == "__main__":
    main()
