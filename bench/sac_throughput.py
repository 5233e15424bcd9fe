"""Environment steps per second of aihf's SAC loop (with updates) against stable-baselines3's SAC.

Same env, network sizes, batch size, update ratio (1 gradient step per env step), learning_starts and torch
threads, measured in one process run. Usage:
    python bench/sac_throughput.py --env Hopper-v5 --steps 3000 --hidden 256 256 --batch 256
Prints a markdown table and the ratio aihf / SB3 (> 1: aihf is faster).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def bench_aihf(args) -> float:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict
    from aihf.app import train
    from aihf.config import register_configs
    register_configs()
    conf = str(Path(__file__).resolve().parents[1] / "conf")
    hidden = "[" + ",".join(map(str, args.hidden)) + "]"
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "algo=sac", f"env.id={args.env}", f"policy.hidden={hidden}", f"policy.batch_size={args.batch}",
            f"policy.learning_starts={args.learning_starts}", f"loop.total_env_steps={args.steps}",
            f"loop.eval_every={10 * args.steps}", "loop.final_eval_episodes=1", f"loop.torch_threads={args.threads}",
            "trainer.enable_progress_bar=false", "trainer.enable_checkpointing=false", "logger.csv=false"])
    with tempfile.TemporaryDirectory() as d, open_dict(cfg):
        cfg.run_dir = d
        t0 = time.perf_counter()
        result = train(cfg)
        elapsed = time.perf_counter() - t0
    # The final evaluation episode is not training: take its time out using the logged wall clock.
    train_time = result["history"][-1]["time/wall_s"] if result["history"] else elapsed
    return args.steps / train_time


def bench_sb3(args) -> float:
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC
    torch.set_num_threads(args.threads)
    env = gym.make(args.env)
    model = SAC("MlpPolicy", env, policy_kwargs={"net_arch": list(args.hidden)}, batch_size=args.batch,
                train_freq=1, gradient_steps=1, learning_starts=args.learning_starts, buffer_size=args.steps,
                device="cpu", seed=0, verbose=0)
    t0 = time.perf_counter()
    model.learn(args.steps)
    return args.steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--learning-starts", type=int, default=500)
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import torch
    sb3 = bench_sb3(args)
    ours = bench_aihf(args)
    torch_v = torch.__version__
    print(f"\n{args.env}, {args.steps} env steps ({args.learning_starts} random first), hidden {args.hidden}, "
          f"batch {args.batch}, 1 update/step, {args.threads} torch thread(s), {platform.processor() or platform.machine()}, "
          f"torch {torch_v}")
    print("| implementation | env steps/s |\n|---|---|")
    print(f"| aihf SAC loop (Lightning module) | {ours:.1f} |\n| stable-baselines3 SAC | {sb3:.1f} |")
    print(f"ratio aihf / SB3 = {ours / sb3:.2f}")


if __name__ == "__main__":
    main()
