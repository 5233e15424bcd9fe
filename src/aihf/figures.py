"""Every results figure of the README and docs/, regenerated from the current code by one command each.

    python -m aihf.figures list                      # the figures, their outputs and the runs they take
    python -m aihf.figures run hopper_table          # its sweeps (into multirun/figures/<name>/<time>/), then its report
    python -m aihf.figures run study_prefs --dry-run # print the commands only
    python -m aihf.figures run study_prefs -- launcher=joblib   # extra overrides for every sweep (e.g. parallel jobs)

A figure is a list of `run.py --multirun` sweeps and the `aihf.report` call that turns their runs into
`<out>.md` and `<out>.png`; the report names the git commit of every run, so a table always says what made it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
SEEDS5 = "seed=0,1,2,3,4"


@dataclass(frozen=True)
class Figure:
    out: str
    title: str
    sweeps: tuple[tuple[str, ...], ...]
    runs: int  # how many training runs the sweeps make
    note: str = ""
    report: tuple[str, ...] = field(default=())  # extra report arguments


FIGURES = {
    # Every preset under one recipe, 5 seeds (each its own data subset), 100k env steps, both pair counts.
    "comparison_hopper": Figure(
        "docs/results/comparison_hopper", "Hopper-v5, 100k env steps, recipe=cpu_budget",
        (("experiment=comparison", "algo=aihf,rlhf", "data=default,scarce", SEEDS5),
         ("experiment=comparison", "algo=irl,sac,bc", SEEDS5)), 35),
    "comparison_hopper_paper": Figure(
        "docs/results/comparison_hopper_paper", "Hopper-v5, 100k env steps, recipe=paper",
        (("experiment=comparison", "recipe=paper", "algo=aihf,rlhf", "data=default,scarce", SEEDS5),
         ("experiment=comparison", "recipe=paper", "algo=irl,sac,bc", SEEDS5)), 35),
    "comparison_halfcheetah": Figure(
        "docs/results/comparison_halfcheetah", "HalfCheetah-v5, 100k env steps, recipe=cpu_budget",
        (("experiment=comparison", "env=halfcheetah", "algo=aihf,rlhf", "data=default,scarce", SEEDS5),
         ("experiment=comparison", "env=halfcheetah", "algo=irl,sac,bc", SEEDS5)), 35),
    # The recipe's parts one at a time (aihf and rlhf, 100 pairs): neither, warm start only, replay only, both.
    "recipe_ablation": Figure(
        "docs/results/recipe_ablation", "Hopper-v5, 100k env steps: the cpu_budget recipe's parts",
        (("experiment=comparison", "algo=aihf,rlhf", "data.num_prefs=100", "recipe.bc_warmstart_steps=0,2000",
          "recipe.demo_replay_fraction=0.0,0.25", SEEDS5),), 40),
    "study_prefs": Figure("docs/results/study_prefs", "Hopper-v5: preference scarcity",
                          (("experiment=study_prefs",), ("experiment=study_prefs", "algo=irl", "data.num_prefs=0")),
                          45, "N = 0 is irl"),
    "study_ratio": Figure("docs/results/study_ratio", "Hopper-v5: λ_P/λ_D", (("experiment=study_ratio",),), 40),
    "study_demos": Figure("docs/results/study_demos", "Hopper-v5: demonstration count and quality",
                          (("experiment=study_demos",),), 60),
    "study_noise": Figure("docs/results/study_noise", "Hopper-v5: teacher noise", (("experiment=study_noise",),), 40),
    "num_envs": Figure("docs/results/num_envs", "HalfCheetah-v5 SAC, 40k env steps, 10 seeds",
                       (("experiment=num_envs", "env.num_envs=1,8", "seed=0,1,2,3,4,5,6,7,8,9"),), 20),
    "llm_sort": Figure(
        "docs/results/llm_sort", "sort task",
        (("experiment=sort_table", "algo=rlhf,aihf", "llm.data.num_prefs=30,100,300,1000,2000", SEEDS5),
         ("experiment=sort_table", "algo=dpo,rpo,aihf_dpo,aihf_selfplay", "llm.data.num_prefs=30,100,300,1000,2000",
          SEEDS5),
         ("experiment=sort_table", "algo=sft,spin", SEEDS5),
         ("experiment=sort_table", "algo=sft", "algo.name=reference", "llm.train.policy_steps=0", SEEDS5)), 165),
}


def sweep_commands(name: str, root: Path, extra: list[str]) -> list[list[str]]:
    fig = FIGURES[name]
    return [[sys.executable, str(PROJECT / "run.py"), "--multirun", *sweep, *extra,
             f"hydra.sweep.dir={root / str(i)}"] for i, sweep in enumerate(fig.sweeps)]


def report_command(name: str, root: Path) -> list[str]:
    fig = FIGURES[name]
    return [sys.executable, "-m", "aihf.report", str(root), "--out", str(PROJECT / fig.out), "--title", fig.title,
            *fig.report]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    r = sub.add_parser("run")
    r.add_argument("name", choices=sorted(FIGURES))
    r.add_argument("--dry-run", action="store_true")
    r.add_argument("extra", nargs="*", help="overrides added to every sweep (after --)")
    args = p.parse_args()
    if args.cmd == "list":
        for name, fig in FIGURES.items():
            print(f"{name:20s} {fig.runs:4d} runs -> {fig.out}.md/.png  {fig.note}")
        return
    root = PROJECT / "multirun" / "figures" / args.name / time.strftime("%Y-%m-%d_%H-%M-%S")
    commands = [*sweep_commands(args.name, root, args.extra), report_command(args.name, root)]
    for cmd in commands:
        print(" ".join(cmd[1:] if cmd[0] == sys.executable else cmd), flush=True)
        if not args.dry_run:
            code = subprocess.run(cmd, cwd=PROJECT).returncode
            if code != 0:
                raise SystemExit(f"{cmd[1]} exited {code}: the figure was not regenerated")


if __name__ == "__main__":
    main()
