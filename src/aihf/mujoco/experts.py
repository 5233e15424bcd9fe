"""The expert table and learning curves: what each shipped dataset's expert is and how it was trained.

    python -m aihf.mujoco.experts <expert run dir> [...] --data data/mujoco --out docs/results/experts
    python -m aihf.mujoco.experts experts/hopper:experts/hopper-2 ...   # an expert trained in parts

An expert trained in parts (each part continued from the last one's checkpoint with loop.init_from into a run
directory of its own) is named by its run directories joined by ":", as for collect.ladder_dir: its curve is
the parts' evaluations in env-step order (a later part's at a step it shares with an earlier one), its wall time
the last part's (init_from carries the earlier parts' time).

For each expert run (an `experiment=expert` run directory: its csv/metrics.csv evaluation curve and ladder) and the
dataset collected from it (`<data>/<env id>.npz` + `.json`): env steps trained, training wall time, the expert
rung, its return over the dataset's deterministic demonstrations (mean ± std: collect them with
collect.num_demos=10 for 10 episodes), the random policy's return, and the ladder's rungs. Writes <out>.md and the
curves to <out>.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
from pathlib import Path

import numpy as np


def machine() -> str:
    cpu = platform.processor() or "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def eval_curve(run: str) -> tuple[list[int], list[float], float]:
    """(env steps, deterministic evaluation return, training wall seconds) from a run's CSV log, or from its parts'
    logs (run directories joined by os.pathsep)."""
    curve, wall = {}, 0.0
    for part in run.split(os.pathsep):
        with open(Path(part) / "csv" / "metrics.csv", newline="") as f:
            for row in csv.DictReader(f):
                if row.get("time/wall_s"):
                    wall = max(wall, float(row["time/wall_s"]))
                if row.get("eval/return_mean"):
                    curve[int(float(row["step"]))] = float(row["eval/return_mean"])
    steps = sorted(curve)
    return steps, [curve[s] for s in steps], wall


def env_of(run: str) -> str:
    hparams = (Path(run.split(os.pathsep)[-1]) / "csv" / "hparams.yaml").read_text()
    for line in hparams.splitlines():
        if line.strip().startswith("id:") and "-v" in line:
            return line.split(":", 1)[1].strip()
    raise SystemExit(f"{run}: no env id in csv/hparams.yaml")


def table(runs: list[str], data: Path) -> tuple[str, dict]:
    lines = ["| env | env steps trained | training wall time | expert rung (env steps) | expert return, "
             "deterministic (mean ± std, episodes) | random return | rungs (env steps: eval return) |",
             "|---|---|---|---|---|---|---|"]
    curves = {}
    for run in runs:
        env = env_of(run)
        steps, returns, wall = eval_curve(run)
        curves[env] = (steps, returns)
        meta_file = data / f"{env}.json"
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            expert = next(p for p in meta["policies"] if p["name"] == meta["expert"])
            ladder = sorted(meta["policies"][1:], key=lambda p: p["env_steps"])
            rungs = ", ".join(f"{p['env_steps'] // 1000}k: {p['eval_return']:.0f}" for p in ladder)
            ret = (f"{meta['expert_return']:.1f} ± {meta['expert_return_std']:.1f} "
                   f"({meta['counts']['demos']})")
            lines.append(f"| {env} | {max(steps) if steps else 0:,} | {wall / 3600:.2f} h | {expert['env_steps']:,} "
                         f"| {ret} | {meta['random_return']:.1f} | {rungs} |")
        else:
            lines.append(f"| {env} | {max(steps) if steps else 0:,} | {wall / 3600:.2f} h | – | (no dataset) | – | – |")
    return "\n".join(lines), curves


def plot(curves: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.8), squeeze=False)
    for ax, (env, (steps, returns)) in zip(axes[0], curves.items()):
        ax.plot(np.array(steps) / 1000, returns)
        ax.set_title(f"{env}: SAC expert")
        ax.set_xlabel("env steps (thousands)")
        ax.set_ylabel("deterministic return (5 episodes)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="expert run directories (one expert's parts joined by ':')")
    p.add_argument("--data", type=Path, default=Path("data/mujoco"))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    md, curves = table(args.runs, args.data)
    md += (f"\n\nRungs show the return of their training-time evaluation (5 deterministic episodes). The expert rung "
           f"is the best over fresh deterministic episodes of the rungs with the best training-time evaluations "
           f"(the dataset metadata's expert_selection, where recorded), and its return is measured afresh over the "
           f"dataset's deterministic demonstrations. Machine: {machine()}; one thread per run, two runs side by "
           f"side.\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(md)
    plot(curves, args.out.with_suffix(".png"))
    print(md)


if __name__ == "__main__":
    main()
