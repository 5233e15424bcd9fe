"""Every results figure of the README and docs/, regenerated from the current code by one command each.

    python -m aihf.figures list                      # the figures, their outputs and the runs they take
    python -m aihf.figures run num_envs              # its sweeps (into multirun/figures/<name>/<time>/), then its report
    python -m aihf.figures run study_prefs --dry-run # print the commands only
    python -m aihf.figures run study_prefs -- launcher=joblib   # extra overrides for every sweep (e.g. parallel jobs)
    python -m aihf.figures run comparison_hopper --root runs/cmp   # into runs/cmp/; run again to continue it
    python -m aihf.figures progress comparison_hopper --root runs/cmp   # its finished runs, and where the others stand

A figure is a list of `run.py --multirun` sweeps and the `aihf.report` call that turns their runs into
`<out>.md` and `<out>.png`; the report names the git commit of every run, so a table always says what made it.
Runs read the code when they start, so a figure that takes hours is best made from a git worktree pinned to one
commit, while work goes on in the checkout (its report is then written into the worktree's docs/results):

    git worktree add --detach ../aihf-at-<commit> <commit> && cd ../aihf-at-<commit>
    PYTHONPATH=$PWD/src python -m aihf.figures run llm_sort --root runs/llm_sort -- launcher=joblib

A sweep over seeds runs one seed at a time, every method of that seed before the next seed, so a figure stopped
part-way holds complete seeds of every method rather than all seeds of some methods. The sweeps run one after
another; `--sweeps-at-once K` runs up to K of them side by side, still in that order, so that a machine whose cores
a sweep of fewer runs would leave idle stays busy (on 2 cores: `--sweeps-at-once 2 -- launcher=joblib
hydra.launcher.n_jobs=1`, two runs at any time). With `--root`, running the same
command again continues the figure: sweeps whose runs all finished are skipped, the others continue their
interrupted runs from their last checkpoints (`loop.resume=auto`) and start the ones not yet begun. `--report-only`
writes the table and plot from the runs finished so far (a MuJoCo comparison: from those measured, below). A
figure with a `reevaluate` step first evaluates every finished run again from its last checkpoint, at the commit
that runs the step (into `<root>-reevaluated`; runs already evaluated there are skipped), so that runs trained at
different commits are measured by one code; the table is made from those, and names every measuring commit. An
LLM figure's runs are evaluated again whole (`aihf.llm.reevaluate`: with every held-out pair's outcome for the
paired comparison); a MuJoCo comparison's learned rewards are measured again (`aihf.mujoco.reevaluate`: the reward
metrics added since a run trained, the held-out resampling; its scores stay those it recorded; a run trained at the
measuring commit is measured too, about 25 s, and reproduces what it recorded). A figure trained from a pinned
worktree is measured and tabulated from the checkout, at the checkout's commit, with `--no-train` (which starts no
run; as its runs finish, or at the end):

    PYTHONPATH=$PWD/src python -m aihf.figures run study_prefs --root R    # in the worktree: the runs
    python -m aihf.figures run study_prefs --root R --no-train            # in the checkout: measured, tabulated

A figure that takes several sessions keeps its finished runs in a small committed file of records, so that it
survives the loss of the machine that ran it: `save` adds the runs finished under a root, `restore` writes them
back under a (new) root, from which `run --root` continues with the runs not yet made:

    python -m aihf.figures save runs/cmp docs/results/runs/hopper.jsonl
    python -m aihf.figures restore docs/results/runs/hopper.jsonl runs/cmp && python -m aihf.figures run ... --root runs/cmp

Records hold metrics, not checkpoints: a restored run cannot be measured again. Save a MuJoCo figure's records from
`<root>-reevaluated` (a run's measured record replaces the one saved while it trained, for LLM records as well); a
restored record that was measured again is carried into the new measurement as it is (the table names the commit
that measured it), and one that was not is refused by the measurement, which names it: to train it again, remove
its directory and its line in the records file, and run the figure again. A measured copy whose run was removed or
trained again since is refused before the report.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[2]
SEEDS5 = "seed=0,1,2,3,4"


@dataclass(frozen=True)
class Sweep:
    """A named sweep: its runs go to <root>/<name>-s<seed> (not <root>/<index>-s<seed>), so figures that list the
    same Sweep share its runs when they are made in the same --root: the preference-scarcity study adds two pair
    counts to the comparison, and the recipe ablation three recipes to its 100-pair cell."""
    name: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Figure:
    out: str
    title: str
    sweeps: tuple[tuple[str, ...] | Sweep, ...]
    runs: int  # how many training runs the sweeps make
    note: str = ""
    report: tuple[str, ...] = field(default=())  # extra report arguments
    # evaluate every finished run again from its last checkpoint, all at this commit, into <root>-reevaluated, and
    # tabulate those: LLM figures with these evaluation overrides (aihf.llm.reevaluate), MuJoCo figures with ()
    # (aihf.mujoco.reevaluate, which takes none)
    reevaluate: tuple[str, ...] | None = None
    measured_by: str = "aihf.llm.reevaluate"
    # figures whose runs in the same --root join this one's report (narrowed by its `--where`): a check that adds
    # settings to a larger figure's cells takes that figure's runs as its baseline rather than making them again
    borrows: tuple[str, ...] = ()


# The contrasts every MuJoCo comparison declares before its runs: aihf against each single-source reward (rlhf's
# sequential pipeline, irl, and aihf_prefs: aihf's own loop with λ_D = 0, so the one difference is the
# demonstration term) and against the constant-reward control.
MUJOCO_CONTRASTS = ("--contrasts", "aihf:rlhf,aihf:irl,aihf:aihf_prefs,aihf:constant")
# A MuJoCo comparison's learned rewards measured again at one commit, so that runs trained at another commit (a
# pinned worktree's) get the reward metrics added since, and restored records join those measured now.
MEASURED_AGAIN = dict(reevaluate=(), measured_by="aihf.mujoco.reevaluate")


def comparison_sweeps(env: str, pair_counts=(10, 100), recipe_has_tricks: bool = True) -> dict[str, tuple[str, ...]]:
    """experiment=comparison (100k env steps, recipe=cpu_budget, 5 seeds) on one env: aihf and rlhf at each pair
    count, aihf_prefs (aihf with λ_D = 0: the same loop with a reward learned from preferences alone; the recipe
    still warm-starts and replays the demonstrations, as for every learned-reward preset) at 10 and 100 pairs, and
    the methods that use no pairs (irl, the sac oracle, bc, the constant-reward control), and the oracle under the
    recipe (sac_recipe: SAC on the true reward with the recipe's tricks) where the recipe has tricks: the constant
    control is the floor a learned reward must clear, sac_recipe the true reward's reference under the same loop (not a
    ceiling: a shaped learned reward can do better in 100k steps)."""
    base = ("experiment=comparison", *([f"env={env}"] if env != "hopper" else []))
    sweeps = {f"pairs-{n}": (*base, "algo=aihf,rlhf", f"data.num_prefs={n}", SEEDS5) for n in pair_counts}
    sweeps["prefs-only"] = (*base, "algo=aihf", "algo.demo_weight=0", "algo.name=aihf_prefs",
                            "data.num_prefs=10,100", SEEDS5)
    sweeps["no-pairs"] = (*base, "algo=irl,sac,bc,constant", SEEDS5)
    if recipe_has_tricks:
        sweeps["oracle-recipe"] = (*base, "algo=sac_recipe", SEEDS5)
    return sweeps


def _hopper() -> dict[str, Sweep]:
    """Hopper-v5's shared sweeps: the comparison's, 30 and 300 pairs for the scarcity study, and the 100-pair
    cell's other three recipes (pairs-100 is the fourth: warm start and replay) for the recipe ablation."""
    sweeps = comparison_sweeps("hopper", (10, 30, 100, 300))
    base = ("experiment=comparison", "algo=aihf,rlhf", "data.num_prefs=100")
    sweeps["no-warm-start"] = (*base, "recipe.bc_warmstart_steps=0", "recipe.demo_replay_fraction=0.0,0.25", SEEDS5)
    sweeps["warm-start-only"] = (*base, "recipe.demo_replay_fraction=0.0", SEEDS5)
    return {name: Sweep(f"hopper-{name}", overrides) for name, overrides in sweeps.items()}


HOPPER = _hopper()
# HalfCheetah-v5's: the comparison's, and 30 and 300 pairs for its scarcity study (declared after the comparison's
# seeds 0 to 2 had been seen, before any of its own runs)
HALFCHEETAH = {name: Sweep(f"halfcheetah-{name}", overrides)
               for name, overrides in comparison_sweeps("halfcheetah", (10, 30, 100, 300)).items()}
COMPARISON = ("pairs-10", "pairs-100", "prefs-only", "no-pairs", "oracle-recipe")
SCARCITY = ("no-pairs", "pairs-10", "pairs-30", "pairs-100", "pairs-300")

FIGURES = {
    # Every preset under one recipe, 5 seeds (each its own data subset), 100k env steps, both pair counts.
    # Hopper: the comparison at 10 and 100 pairs; the scarcity study adds 30 and 300 pairs (N = 0 is irl) and the
    # recipe ablation the cpu_budget recipe's parts at 100 pairs, both from the same --root (shared Sweeps).
    "comparison_hopper": Figure(
        "docs/results/comparison_hopper", "Hopper-v5, 100k env steps, recipe=cpu_budget",
        tuple(HOPPER[n] for n in COMPARISON), 55,
        "shares its runs with study_prefs and recipe_ablation given the same --root", report=MUJOCO_CONTRASTS,
        **MEASURED_AGAIN),
    "study_prefs": Figure(
        "docs/results/study_prefs", "Hopper-v5, 100k env steps: preference scarcity",
        tuple(HOPPER[n] for n in SCARCITY), 60,
        "N = 0 is irl; 20 runs beyond comparison_hopper in the same --root", report=MUJOCO_CONTRASTS,
        **MEASURED_AGAIN),
    "recipe_ablation": Figure(
        "docs/results/recipe_ablation", "Hopper-v5, 100k env steps, 100 pairs: the cpu_budget recipe's parts",
        (HOPPER["pairs-100"], HOPPER["no-warm-start"], HOPPER["warm-start-only"]), 40,
        "30 runs beyond comparison_hopper in the same --root",
        # aihf − rlhf under each variant of the recipe (declared after 2 of the 5 seeds had been seen)
        **MEASURED_AGAIN, report=("--contrasts", "aihf:rlhf", "--within", "BC warm start,demo replay")),
    "comparison_hopper_paper": Figure(
        "docs/results/comparison_hopper_paper", "Hopper-v5, 100k env steps, recipe=paper",
        tuple((*sweep[:1], "recipe=paper", *sweep[1:])
              for sweep in comparison_sweeps("hopper", recipe_has_tricks=False).values()), 50,
        **MEASURED_AGAIN, report=MUJOCO_CONTRASTS),
    "comparison_halfcheetah": Figure(
        "docs/results/comparison_halfcheetah", "HalfCheetah-v5, 100k env steps, recipe=cpu_budget",
        tuple(HALFCHEETAH[n] for n in COMPARISON), 55, "shares its runs with study_prefs_halfcheetah given the same --root",
        **MEASURED_AGAIN, report=MUJOCO_CONTRASTS),
    "study_prefs_halfcheetah": Figure(
        "docs/results/study_prefs_halfcheetah", "HalfCheetah-v5, 100k env steps: preference scarcity",
        tuple(HALFCHEETAH[n] for n in SCARCITY), 60,
        "N = 0 is irl; 20 runs beyond comparison_halfcheetah in the same --root", report=MUJOCO_CONTRASTS,
        **MEASURED_AGAIN),
    # Exploratory, declared before any of its runs: on HalfCheetah the recipe's critic overestimates at the replayed
    # demonstration's states, which the actor is improved on but never reaches (docs/results.md). The same presets
    # with the demonstration in the critic's batch only (recipe.demo_replay_actor=false), beside the comparison's own
    # runs of them (shared Sweeps, trained at 9360c03: check first that this commit reproduces one of them).
    "recipe_critic_halfcheetah": Figure(
        "docs/results/recipe_critic_halfcheetah",
        "HalfCheetah-v5, 100k env steps, recipe=cpu_budget: demo replay for the critic only",
        (HALFCHEETAH["oracle-recipe"], HALFCHEETAH["pairs-100"], HALFCHEETAH["no-pairs"],
         *(Sweep(f"halfcheetah-critic-only-{algo}", ("experiment=comparison", "env=halfcheetah", f"algo={algo}",
                                                    f"algo.name={algo}_critic_only", "recipe.demo_replay_actor=false",
                                                    *pairs, SEEDS5))
           for algo, pairs in (("sac_recipe", ()), ("aihf", ("data.num_prefs=100",)),
                               ("rlhf", ("data.num_prefs=100",))))), 50,
        "15 runs beyond comparison_halfcheetah in the same --root",
        report=("--contrasts", "sac_recipe_critic_only:sac_recipe,sac_recipe_critic_only:sac,aihf_critic_only:aihf,"
                               "rlhf_critic_only:rlhf,aihf_critic_only:rlhf_critic_only"), **MEASURED_AGAIN),
    "study_ratio": Figure("docs/results/study_ratio", "Hopper-v5: λ_P/λ_D", (("experiment=study_ratio",),), 40),
    "study_demos": Figure("docs/results/study_demos", "Hopper-v5: demonstration count and quality",
                          (("experiment=study_demos",),), 60),
    "study_noise": Figure("docs/results/study_noise", "Hopper-v5: teacher noise", (("experiment=study_noise",),), 40),
    "num_envs": Figure("docs/results/num_envs", "HalfCheetah-v5 SAC, 40k env steps, 10 seeds",
                       (("experiment=num_envs", "env.num_envs=1,8", "seed=0,1,2,3,4,5,6,7,8,9"),), 20),
    # Issue 9's HH study, reward half: MiniLM on preferences alone vs preferences + demonstrations (SmolLM2 samples).
    "hh_reward": Figure("docs/results/hh_reward", "HH harmless-base: MiniLM reward, 3 held-out splits",
                        (("experiment=hh_reward", "seed=0,1,2"),), 6, reevaluate=("llm.train.torch_threads=1",)),
    # ... and its implicit-reward half: SmolLM2 by dpo vs aihf_dpo (held-out implicit-reward accuracy, KL).
    # (the re-evaluation's KL: 200 held-out prompts × 2 samples, where training evaluated 8 × 2)
    "hh_dpo": Figure("docs/results/hh_dpo", "HH harmless-base: SmolLM2 dpo vs aihf_dpo, 3 held-out splits",
                     (("experiment=hh_dpo", "seed=0,1,2"),), 6,
                     reevaluate=("llm.train.torch_threads=1", "llm.train.eval_prompts=200", "llm.train.eval_samples=2")),
    "llm_sort": Figure(
        "docs/results/llm_sort", "sort task",
        (("experiment=sort_table", "algo=rlhf,aihf", "llm.data.num_prefs=30,100,300,1000,2000", SEEDS5),
         ("experiment=sort_table", "algo=dpo,rpo,aihf_dpo,aihf_selfplay", "llm.data.num_prefs=30,100,300,1000,2000",
          SEEDS5),
         ("experiment=sort_table", "algo=sft,spin", SEEDS5),
         ("experiment=sort_table", "algo=sft", "algo.name=reference", "llm.train.policy_steps=0", SEEDS5)), 165,
        report=("--contrasts", "aihf:rlhf,aihf:dpo,aihf:sft,aihf_dpo:dpo,aihf_dpo:sft")),
    # β where llm_sort's differences are largest (30 and 100 pairs), for the two pairs-only baselines and aihf; the
    # β = 0.1 runs and π_ref are llm_sort's own (same --root). An after-the-fact tuning check: no contrasts declared.
    "llm_sort_beta": Figure(
        "docs/results/llm_sort_beta", "sort task: β at 30 and 100 pairs",
        (Sweep("beta", ("experiment=sort_table", "algo=dpo,rlhf,aihf", "llm.data.num_prefs=30,100",
                        "algo.beta=0.3,1.0", SEEDS5)),), 60,
        "60 runs beyond llm_sort; its β = 0.1 runs from the same --root",
        report=("--where", "algo=dpo,rlhf,aihf,reference", "--where", "pairs=0,30,100"), borrows=("llm_sort",)),
    # aihf's own loop with λ_D = 0 (as MuJoCo's aihf_prefs): aihf − aihf_prefs is the demonstration term's effect
    # (with λ_D = 0 no policy samples enter the reward step), aihf_prefs − rlhf the reward schedule's (interleaved
    # with the policy's steps rather than fitted up front and frozen).
    # Contrasts declared before its runs; aihf, rlhf and π_ref are llm_sort's runs (same --root).
    "llm_sort_demo_term": Figure(
        "docs/results/llm_sort_demo_term", "sort task: aihf without its demonstration term",
        (Sweep("prefs-only", ("experiment=sort_table", "algo=aihf", "algo.demo_weight=0", "algo.name=aihf_prefs",
                              "llm.data.num_prefs=30,100,300,1000,2000", SEEDS5)),), 25,
        "25 runs beyond llm_sort; its aihf, rlhf and π_ref runs from the same --root",
        report=("--contrasts", "aihf:aihf_prefs,aihf_prefs:rlhf", "--where", "algo=aihf,aihf_prefs,rlhf,reference"),
        borrows=("llm_sort",)),
}


def overrides_of(sweep: tuple[str, ...] | Sweep) -> tuple[str, ...]:
    return sweep.overrides if isinstance(sweep, Sweep) else sweep


def _seeds(sweep: tuple[str, ...]) -> list[str] | None:
    found = [o for o in sweep if o.startswith("seed=")]
    return found[0].removeprefix("seed=").split(",") if found else None


def planned_sweeps(name: str) -> list[tuple[str, tuple[str, ...]]]:
    """(subdirectory, overrides) of each sweep, seed-major: seed 0 of every sweep, then seed 1, ... A sweep's
    subdirectory is its index in the figure, or its name if it is a shared Sweep."""
    fig = FIGURES[name]
    labels = [s.name if isinstance(s, Sweep) else str(i) for i, s in enumerate(fig.sweeps)]
    sweeps = [overrides_of(s) for s in fig.sweeps]
    seeds = {s for sweep in sweeps for s in (_seeds(sweep) or [])}
    out = [(label, sweep) for label, sweep in zip(labels, sweeps) if _seeds(sweep) is None]
    for seed in sorted(seeds, key=int):
        for label, sweep in zip(labels, sweeps):
            if seed in (_seeds(sweep) or []):
                out.append((f"{label}-s{seed}", tuple(f"seed={seed}" if o.startswith("seed=") else o for o in sweep)))
    return out


def jobs_in(sweep: tuple[str, ...]) -> int | None:
    """The number of runs a sweep makes: its comma lists, and its experiment's own sweeper params (comma lists or
    range(...)) for the keys the sweep does not set itself; None when a param is anything else (choice, interval)."""
    lists = {o.split("=", 1)[0]: len(o.split("=", 1)[1].split(",")) for o in sweep if "=" in o}
    for o in sweep:
        if o.startswith("experiment="):
            conf = yaml.safe_load((PROJECT / "conf" / "experiment" / f"{o.split('=', 1)[1]}.yaml").read_text()) or {}
            for key, value in (((conf.get("hydra") or {}).get("sweeper") or {}).get("params") or {}).items():
                if key in lists:
                    continue  # the command line's value replaces the experiment's
                value = str(value)
                ranged = re.fullmatch(r"range\((\d+)(?:,\s*(\d+))?\)", value)
                if ranged:
                    low, high = (0, int(ranged[1])) if ranged[2] is None else (int(ranged[1]), int(ranged[2]))
                    lists[key] = max(0, high - low)
                elif "(" in value:
                    return None
                else:
                    lists[key] = len(value.split(","))
    return math.prod(lists.values())


def finished(sweep_dir: Path) -> int:
    return sum(1 for _ in sweep_dir.glob("*/metrics.json")) if sweep_dir.is_dir() else 0


def set_aside_uncontinuable(sweep_dir: Path) -> list[Path]:
    """A run killed before its first checkpoint cannot be continued, and its directory may not be written over: it
    is kept beside, as <job>.interrupted-<n>, so the run starts afresh in its own directory."""
    from aihf.run_dir import earlier_outputs, in_use
    moved = []
    for job in sorted(sweep_dir.iterdir()) if sweep_dir.is_dir() else []:
        if (job.is_dir() and ".interrupted-" not in job.name and earlier_outputs(job) and not in_use(job)
                and not (job / "metrics.json").exists() and not (job / "checkpoints" / "last.ckpt").exists()):
            n = 1
            while job.with_name(f"{job.name}.interrupted-{n}").exists():
                n += 1
            moved.append(job.rename(job.with_name(f"{job.name}.interrupted-{n}")))
    return moved


def pending_sweeps(name: str, root: Path, resume: bool = False) -> list[tuple[Path, tuple[str, ...]]]:
    """(directory, overrides) of the sweeps still to run; with `resume`, a sweep whose runs have all finished is
    left out."""
    out = []
    for sub, sweep in planned_sweeps(name):
        n = jobs_in(sweep)
        if not (resume and n is not None and finished(root / sub) >= n):
            out.append((root / sub, sweep))
    return out


def sweep_command(sweep_dir: Path, sweep: tuple[str, ...], extra: list[str], resume: bool) -> list[str]:
    """One sweep's command; with `resume` it continues its runs (`loop.resume=auto`) in the same directories."""
    return [sys.executable, str(PROJECT / "run.py"), "--multirun", *sweep, *extra,
            *(["loop.resume=auto"] if resume else []), f"hydra.sweep.dir={sweep_dir}"]


def sweep_commands(name: str, root: Path, extra: list[str], resume: bool = False) -> list[list[str]]:
    return [sweep_command(d, sweep, extra, resume) for d, sweep in pending_sweeps(name, root, resume)]


def _hold(folder: Path, option: str, advice: str) -> None:
    """This process's hold on `folder` (made if missing) until it exits, or the command line's error if another
    process holds it."""
    from aihf.errors import ConfigError
    from aihf.run_dir import hold_dir
    folder.mkdir(parents=True, exist_ok=True)
    try:
        hold_dir(folder, option, advice)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None


def reevaluated_root(root: Path) -> Path:
    return root.with_name(root.name + "-reevaluated")


def reevaluate_command(name: str, root: Path) -> list[str] | None:
    """Every finished run of the figure evaluated again at this commit (runs already evaluated are skipped): an LLM
    figure's whole root, a MuJoCo figure's own (and borrowed) sweeps, as a root may hold other figures' runs."""
    fig = FIGURES[name]
    if fig.reevaluate is None:
        return None
    if _evaluates_root_again(fig):
        runs = sorted(str(m.parent) for m in root.rglob("metrics.json")) if root.is_dir() else []
    else:
        runs = sorted(str(m.parent) for sub in _sweep_dirs(name) for m in (root / sub).glob("*/metrics.json")
                      if ".interrupted-" not in m.parent.name)
    return [sys.executable, "-m", fig.measured_by, *runs, "--out", str(reevaluated_root(root)),
            *fig.reevaluate] if runs else None


def _evaluates_root_again(fig: Figure) -> bool:
    """An LLM figure with a reevaluate step: every run of its root is evaluated again and tabulated."""
    return fig.reevaluate is not None and not _measures_sweeps(fig)


def _measures_sweeps(fig: Figure) -> bool:
    """A MuJoCo comparison: its own sweeps measured again (an LLM figure's whole root is evaluated again)."""
    return fig.reevaluate is not None and fig.measured_by != "aihf.llm.reevaluate"


def _sweep_dirs(name: str) -> list[str]:
    """The figure's own sweeps' subdirectories and those of the figures it borrows from."""
    return [sub for other in (name, *FIGURES[name].borrows) for sub, _ in planned_sweeps(other)]


def measured_copies(name: str, root: Path) -> tuple[list[str], list[str]]:
    """A MuJoCo figure's finished runs with no measured copy under <root>-reevaluated yet, and the copies that are
    no longer of a run in the root (the run removed, or trained again since: its history differs), as
    <sweep>/<run>."""
    again = reevaluated_root(root)
    unmeasured, stale = [], []
    for sub in _sweep_dirs(name):
        for m in sorted((root / sub).glob("*/metrics.json")):
            if ".interrupted-" not in m.parent.name and not (again / sub / m.parent.name / "metrics.json").is_file():
                unmeasured.append(f"{sub}/{m.parent.name}")
        for copy in sorted((again / sub).glob("*/metrics.json")):
            source = root / sub / copy.parent.name / "metrics.json"
            if not source.is_file() or (json.loads(source.read_text()).get("history")
                                        != json.loads(copy.read_text()).get("history")):
                stale.append(f"{sub}/{copy.parent.name}")
    return unmeasured, stale


def report_command(name: str, root: Path) -> list[str]:
    fig = FIGURES[name]
    if _evaluates_root_again(fig):  # an LLM figure: its whole root, evaluated again
        sources = [reevaluated_root(root)]
    else:  # its own sweeps only (measured again, for a MuJoCo comparison): a root may hold other figures' runs too
        sources = [(reevaluated_root(root) if _measures_sweeps(fig) else root) / sub for sub in _sweep_dirs(name)]
    return [sys.executable, "-m", "aihf.report", *map(str, sources), "--out", str(PROJECT / fig.out), "--title",
            fig.title, *fig.report]


def _read_text(path: Path) -> str:
    if path.suffix != ".gz":
        return path.read_text()
    try:
        return gzip.decompress(path.read_bytes()).decode()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise SystemExit(f"{path}: not gzip-compressed records ({exc}); a name ending in .gz holds gzip'd JSON lines")


def read_records(path: Path) -> dict[str, dict]:
    """A figure's committed records: one JSON line per finished run, {"run": <its directory under the root>,
    "metrics": <its metrics.json>}; gzip-compressed where the name ends in .gz (an LLM run's per-pair outcomes make
    its record about 60 kB)."""
    records = {}
    for n, line in enumerate(_read_text(path).splitlines() if path.is_file() else [], 1):
        try:
            record = json.loads(line)
            records[record["run"]] = record["metrics"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"{path}:{n}: not a run record ({exc!r}); expected a JSON line with 'run' and 'metrics'")
    return records


def _last_step(run: Path) -> int | None:
    """The env step (or LLM step) of the last row its CSV log holds."""
    log = run / "csv" / "metrics.csv"
    if not log.is_file():
        return None
    with open(log, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 4096))
        tail = f.read().decode(errors="replace").splitlines()
        f.seek(0)
        header = f.readline().decode().strip().split(",")
    if "step" not in header or len(tail) < 2:
        return None
    try:
        return int(float(tail[-1].split(",")[header.index("step")]))
    except (ValueError, IndexError):
        return None


def progress(name: str, root: Path) -> list[str]:
    """One line per sweep of the figure under `root`: its finished runs, and where each unfinished one stands (its
    last logged step; "training" while a process holds it, else the age of its log)."""
    from aihf.run_dir import in_use
    lines, done, total, now = [], 0, 0, time.time()
    for sub, sweep in planned_sweeps(name):
        n, sweep_dir = jobs_in(sweep), root / sub
        runs = sorted(d for d in sweep_dir.iterdir() if d.is_dir() and ".interrupted-" not in d.name
                      and not d.name.startswith(".")) if sweep_dir.is_dir() else []  # (.submitit/: SLURM's logs)
        finished_here = sum((d / "metrics.json").is_file() for d in runs)
        done, total = done + finished_here, total + (n or 0)
        if not runs:
            lines.append(f"  {sub:28s} not started ({n if n is not None else '?'} run{'' if n == 1 else 's'})")
            continue
        open_runs = []
        for d in runs:
            if (d / "metrics.json").is_file():
                continue
            step, holder = _last_step(d), in_use(d)
            log = d / "csv" / "metrics.csv"
            state = (f"training ({holder})" if holder else
                     f"log last written {(now - log.stat().st_mtime) / 60:.0f} min ago" if log.is_file() else "no log")
            open_runs.append(f"{d.name} at {step:,} ({state})" if step is not None else f"{d.name} ({state})")
        lines.append(f"  {sub:28s} {finished_here}/{n if n is not None else '?'} finished"
                     + (f"; {', '.join(open_runs)}" if open_runs else ""))
    return [f"{name} in {root}: {done} of {total or FIGURES[name].runs} runs finished", *lines]


def save_records(root: Path, path: Path) -> list[str]:
    """Add the runs finished under `root` to the records file (those already there are kept as they are, but for a
    record saved while its run trained, which its measurement again at one commit replaces); returns the runs added
    or replaced. The records are what a figure needs of its runs, small enough to commit, so that a figure made
    over several sessions survives the loss of the machine that ran it (`restore`)."""
    records = read_records(path)
    added = []
    for f in sorted(root.rglob("metrics.json")):
        run = str(f.parent.relative_to(root))
        if ".interrupted-" in run:
            continue
        metrics = json.loads(f.read_text())
        if run in records and ("reevaluation" in records[run] or "reevaluation" not in metrics):
            continue
        records[run] = metrics
        added.append(run)
    if added:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        text = "".join(json.dumps({"run": run, "metrics": records[run]}, sort_keys=True) + "\n"
                       for run in sorted(records))
        # mtime=0: the same records make the same bytes, so saving again changes nothing in git
        tmp.write_bytes(gzip.compress(text.encode(), mtime=0) if path.suffix == ".gz" else text.encode())
        tmp.replace(path)
    return added


def restore_records(path: Path, root: Path) -> list[str]:
    """Write each recorded run's metrics.json back under `root` where its directory has none, so `run --root`
    counts it finished (a sweep continued over it runs only the others: `loop.resume=auto` leaves a finished run
    without checkpoints as it is) and the report tabulates it; returns the runs restored."""
    from aihf.run_dir import save_metrics
    restored = []
    for run, metrics in read_records(path).items():
        target = root / run / "metrics.json"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            save_metrics(target, metrics)
            restored.append(run)
    return restored


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    r = sub.add_parser("run")
    r.add_argument("name", choices=sorted(FIGURES))
    r.add_argument("--dry-run", action="store_true")
    r.add_argument("--root", type=Path, help="where the runs go (default multirun/figures/<name>/<time>); "
                                             "an existing root is continued")
    r.add_argument("--report-only", action="store_true", help="the table and plot of the runs finished so far")
    r.add_argument("--no-train", action="store_true",
                   help="start no run: measure the finished runs again (a figure with that step) and report them")
    r.add_argument("--sweeps-at-once", type=int, default=1, metavar="K",
                   help="run up to K of the figure's sweeps side by side, in their order (default 1); with "
                        "`-- launcher=joblib hydra.launcher.n_jobs=J` that is up to K×J runs at once")
    r.add_argument("extra", nargs="*", help="overrides added to every sweep (after --)")
    pg = sub.add_parser("progress", help="where each run of a figure under ROOT stands")
    pg.add_argument("name", choices=sorted(FIGURES))
    pg.add_argument("--root", type=Path, required=True)
    sv = sub.add_parser("save", help="add the finished runs under ROOT to RECORDS (a JSON-lines file to commit)")
    sv.add_argument("root", type=Path)
    sv.add_argument("records", type=Path)
    rs = sub.add_parser("restore", help="write the runs of RECORDS back under ROOT (their metrics.json), so "
                                        "`run --root ROOT` continues the figure from them")
    rs.add_argument("records", type=Path)
    rs.add_argument("root", type=Path)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)  # overrides after `--` go to every sweep
    args = p.parse_args(argv[:cut])
    if args.cmd == "run":
        args.extra = [*args.extra, *argv[cut + 1:]]
    if args.cmd == "progress":
        print("\n".join(progress(args.name, args.root.absolute())))
        return
    if args.cmd == "save":
        added = save_records(args.root.absolute(), args.records)
        print(f"{args.records}: {len(added)} runs added or replaced by their measurement again, "
              f"{len(read_records(args.records))} in all")
        return
    if args.cmd == "restore":
        if not args.records.is_file():
            raise SystemExit(f"{args.records}: no such records file")
        restored = restore_records(args.records, args.root.absolute())
        print(f"{args.root}: {len(restored)} runs restored from {args.records}")
        return
    if args.cmd == "list":
        for name, fig in FIGURES.items():
            print(f"{name:20s} {fig.runs:4d} runs -> {fig.out}.md/.png  {fig.note}")
        return
    root = args.root.absolute() if args.root else (
        PROJECT / "multirun" / "figures" / args.name / time.strftime("%Y-%m-%d_%H-%M-%S"))
    resume = root.is_dir()
    if args.sweeps_at_once < 1:
        raise SystemExit(f"error: --sweeps-at-once: expected a number of sweeps ≥ 1, found {args.sweeps_at_once}")
    if args.report_only and args.no_train:
        raise SystemExit("error: --report-only and --no-train: choose one (--report-only does not measure again)")
    if args.no_train and not resume:
        raise SystemExit(f"error: --no-train: {root} does not exist; it measures and reports a root's finished runs")
    if not (args.dry_run or args.report_only or args.no_train):
        # one process runs a root at a time: a second would set aside and restart the runs in progress
        _hold(root, "--root", "another `aihf.figures run` is running its figure; wait for it to end")
    pending = [] if args.report_only or args.no_train else pending_sweeps(args.name, root, resume)
    commands = [sweep_command(d, sweep, args.extra, resume) for d, sweep in pending]
    for sweep_dir, _ in pending if resume and not args.dry_run else ():
        for moved in set_aside_uncontinuable(sweep_dir):
            print(f"{moved}: killed before its first checkpoint, kept aside; the run starts again", flush=True)
    run_all(commands, args.dry_run, args.sweeps_at_once)
    measured = _measures_sweeps(FIGURES[args.name])
    if measured and not (args.dry_run or args.report_only):
        # two measuring the same shared sweeps at once (a --no-train beside a figure that has trained) would both
        # write the same copies
        _hold(reevaluated_root(root), "--no-train", "another `aihf.figures run` is measuring this root")
    again = None if args.report_only else reevaluate_command(args.name, root)  # the runs the sweeps left
    run_all([again] if again else [], args.dry_run)
    if measured:  # (read-only: also with --dry-run)
        unmeasured, stale = measured_copies(args.name, root)
        if stale:
            raise SystemExit(f"error: {reevaluated_root(root) / stale[0]}"
                             f"{f' (and {len(stale) - 1} more)' if len(stale) > 1 else ''} is the measured copy of a "
                             f"run no longer in {root} or trained again since: remove it, then measure again "
                             f"(--no-train)")
        if unmeasured and args.report_only:  # (every other path measures them first)
            print(f"{len(unmeasured)} finished runs not measured yet are left out of the table (measure them with "
                  f"--no-train): {', '.join(unmeasured[:5])}{' ...' if len(unmeasured) > 5 else ''}", flush=True)
    run_all([report_command(args.name, root)], args.dry_run)


def run_all(commands: list[list[str]], dry_run: bool, at_once: int = 1) -> None:
    """Run `commands` in order, up to `at_once` of them at a time. When one fails no other is started, and those
    running are waited for (their runs checkpoint, so a later `run --root` continues them), then the figure stops."""
    if dry_run:
        for cmd in commands:
            print(_shown(cmd), flush=True)
        return
    queue, running, failed = list(commands), [], []
    try:
        while running or (queue and not failed):
            while queue and not failed and len(running) < at_once:
                cmd = queue.pop(0)
                print(_shown(cmd), flush=True)
                running.append((cmd, subprocess.Popen(cmd, cwd=PROJECT)))
            for cmd, proc in [(c, p) for c, p in running if p.poll() is not None]:
                running.remove((cmd, proc))
                if proc.returncode != 0:
                    failed.append((cmd, proc.returncode))
                    if running:
                        print(f"{_shown(cmd)} exited {proc.returncode}: no further sweep starts; waiting for the "
                              f"{len(running)} running", flush=True)
            if running:
                time.sleep(0.5)
    except BaseException:  # Ctrl-C reached the sweeps too: give them subprocess.run's moment to stop, then kill them
        for _, proc in running:
            try:
                proc.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    if failed:
        which = ", ".join(f"{_named(cmd)} exited {code}" for cmd, code in failed)
        raise SystemExit(f"{which}: the figure was not regenerated")


def _shown(cmd: list[str]) -> str:
    return " ".join(cmd[1:] if cmd[0] == sys.executable else cmd)


def _named(cmd: list[str]) -> str:
    """A sweep by its directory (what `progress` and a rerun know it by), any other command in full."""
    sweep_dir = next((a.split("=", 1)[1] for a in cmd if a.startswith("hydra.sweep.dir=")), None)
    return f"the sweep into {sweep_dir}" if sweep_dir else _shown(cmd)


if __name__ == "__main__":
    main()
