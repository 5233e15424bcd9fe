"""Aggregate runs (their metrics.json) into markdown tables over seeds and PNG learning curves.

    python -m aihf.report <runs dir> [more dirs] --out docs/results/hopper --title "Hopper-v5"

Runs are grouped by the configuration each recorded in its metrics.json (MuJoCo: env, algo, recipe, λ_D, λ_P,
weighting, β, demonstrations, preference pairs, vector envs; LLM: task, algo, weighting, β, demonstrations, pairs),
never by preset names: settings shared by every run are printed once above the table, the others are columns.
Each cell is the mean over seeds with a 95 % bootstrap interval (aihf.stats); MuJoCo tables add the interquartile
mean and, beside each reward metric, what a constant reward and the episode-length proxy score on the same data.
Within each group of runs that differ only in their preset, the probability of improvement P(A > B) of the
normalised score is listed. LLM runs are compared within each preference-pair count (presets that use no pairs
join every count): two methods pair by pair on the held-out pairs, more as matrices of differences paired by seed;
with several counts, a second figure plots the metrics against the count. The commits that produced the runs are
named under the table.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from aihf import stats


def load_runs(roots: list[Path]) -> list[dict]:
    runs = []
    for root in roots:
        for f in sorted(Path(root).rglob("metrics.json")):
            m = json.loads(f.read_text())
            m["_path"] = str(f.parent)
            runs.append(m)
    return runs


@dataclass(frozen=True)
class Measure:
    """A metric compared between methods: its value of a run (None: the run has none)."""
    what: str
    value: Callable[[dict], float | None]
    pairs_only: bool = False  # only methods trained on pairs have it (an LLM preset without pairs: all ties)


# -- configuration as recorded ------------------------------------------------------------------------------------
def mujoco_config(m: dict) -> dict:
    recipe, subset = m.get("recipe") or {}, m.get("data_subset") or {}
    teacher = m.get("teacher", "–")
    if isinstance(teacher, dict):
        teacher = ", ".join(f"{k}={v}" for k, v in sorted(teacher.items()))
    return {"env": m["env_id"], "algo": m["algo"], "recipe": recipe.get("name", "–"),
            "BC warm start": recipe.get("bc_warmstart_steps", "–"), "demo replay": _demo_replay(recipe),
            "λ_D": m.get("demo_weight", "–"), "λ_P": m.get("pref_weight", "–"),
            "weighting": m.get("weighting", "–"), "β": recipe.get("beta", "–"),
            "α learned": m.get("alpha_learned", "–"), "demos": m.get("num_demos", 0),
            "demo policy": subset.get("demo_policy", "–"), "pairs": m.get("num_prefs", 0), "teacher": teacher,
            # the file's name and the start of its hash: a file replaced under the same name is other data
            "dataset": (Path(subset["dataset"]).name + (f" ({subset['dataset_sha256'][:8]})"
                                                        if subset.get("dataset_sha256") else "")
                        if subset.get("dataset") else "–"),
            "budget": m.get("budget", m.get("env_steps")), "envs": m.get("num_envs", 1)}


def _demo_replay(recipe: dict):
    """The replayed share of SAC's batch, marked when only the critic learns on it (records made before the option
    existed had the actor learn on it too)."""
    fraction = recipe.get("demo_replay_fraction", "–")
    return f"{fraction}, critic only" if fraction not in ("–", 0, 0.0) and not recipe.get("demo_replay_actor", True) \
        else fraction


# MuJoCo: the settings that make a method, compared within everything else (env, recipe, dataset, teacher,
# budget, the pair count); the recipe's tricks are the method's, so that sac and bc (which take none) are compared
# with the presets that take them.
METHOD = ("algo", "λ_D", "λ_P", "β", "weighting", "demos", "BC warm start", "demo replay")
# LLM: the pair count is the data regime that methods are compared within, and a preset's step count is its own
# (stages differ by preset), so it is part of the method.
LLM_METHOD = ("algo", "λ_D", "λ_P", "β", "weighting", "demos", "steps")


def llm_config(m: dict) -> dict:
    return {"task": m["task"], "algo": m["algo"], "weighting": m.get("weighting", "–"), "β": m.get("beta", "–"),
            "λ_D": m.get("demo_weight", "–"), "λ_P": m.get("pref_weight", "–"), "demos": m.get("num_demos", 0),
            "pairs": m.get("num_prefs", 0), "steps": m.get("steps"),
            # how the training rows were chosen (llm.data.subset; runs that predate it took the first rows)
            "rows drawn": (m.get("data_subset") or {}).get("rule", "first")}


def parse_where(items: list[str]) -> dict[str, set[str]]:
    where = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise SystemExit(f"--where {item}: expected SETTING=V1,V2,... (e.g. pairs=30,100)")
        where[key.strip()] = {v.strip() for v in values.split(",")}
    return where


def _same(recorded, written: str) -> bool:
    try:
        return float(recorded) == float(written)
    except (TypeError, ValueError):
        return str(recorded) == written


def select(runs: list[dict], where: dict[str, set[str]]) -> list[dict]:
    """The runs whose recorded settings match `where` (numbers by value: β=1 matches a recorded 1.0), for a table of
    part of a root, such as a check that shares its baseline runs with a larger figure."""
    if not where:
        return runs
    configs = [llm_config(m) if m.get("domain") == "llm" else mujoco_config(m) for m in runs]
    for m, config in zip(runs, configs):
        if unknown := sorted(set(where) - set(config)):
            raise SystemExit(f"--where: {unknown} are not settings of the {m.get('domain', 'mujoco')} runs; "
                             f"expected some of {list(config)}")
    kept = [m for m, config in zip(runs, configs)
            if all(any(_same(config[k], v) for v in vs) for k, vs in where.items())]
    if not kept:
        raise SystemExit(f"--where: no run matches {', '.join(f'{k}={sorted(v)}' for k, v in where.items())}")
    return kept


def group(runs: list[dict], config) -> tuple[dict[tuple, list[dict]], list[str], dict]:
    """Runs grouped by their recorded configuration; the keys that vary, and the ones shared by all runs."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for m in runs:
        groups[tuple(config(m).items())].append(m)
    names = list(config(runs[0]))
    values = {n: {dict(k)[n] for k in groups} for n in names}
    varying = [n for n in names if len(values[n]) > 1]
    shared = {n: next(iter(values[n])) for n in names if len(values[n]) == 1}
    return dict(sorted(groups.items(), key=lambda kv: in_order(kv[0]))), varying, shared


def in_order(key: tuple) -> list:
    """A sort key for a configuration: numbers by value (30 before 100), anything else by its text."""
    return [(0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v)) for _, v in key]


def cell(values, digits: int = 3) -> str:
    """mean [95 % t-interval] (min–max) over seeds; '–' when no run has the value. The t-interval keeps its
    coverage with few seeds, where a percentile bootstrap is too narrow."""
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    point, low, high = stats.t_interval(v)
    if math.isnan(point):
        return "–"
    if math.isnan(low):
        return f"{point:.{digits}f}"
    return (f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}] "
            f"({min(v):.{digits}f}–{max(v):.{digits}f})")


# Below this many seeds a percentile bootstrap covers far less than it claims (a simulation with normal data: 76 % at
# 3 seeds, 83 % at 5; for the probability of improvement 53 % where its true value is 0.92), so the IQM and the
# probability of improvement are shown without an interval.
BOOTSTRAP_MIN_SEEDS = 10


def iqm_cell(values, digits: int = 3) -> str:
    point, low, high = stats.iqm_ci(values)
    if math.isnan(point):
        return "–"
    if math.isnan(low) or len(stats._finite(values)) < BOOTSTRAP_MIN_SEEDS:
        return f"{point:.{digits}f}"
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def plain(values, digits: int = 3) -> str:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return f"{np.mean(v):.{digits}f}" if v else "–"


def plain_counted(values, digits: int = 3) -> str:
    """`plain`, marked with how many runs it averages where some runs lack the value (r_θ at the first evaluation,
    say, for runs that evaluated first after learning_starts), so a cell never passes for the whole row's mean."""
    values = list(values)
    have = sum(x is not None and not (isinstance(x, float) and math.isnan(x)) for x in values)
    return plain(values, digits) + (f" [{have} of {len(values)} runs]" if 0 < have < len(values) else "")


def shared_line(shared: dict, count: int) -> str:
    return f"{count} runs; shared by all: " + ", ".join(f"{k} = {v}" for k, v in shared.items())


def commits_line(runs: list[dict]) -> str:
    def listed(commits) -> str:
        return ", ".join(f"`{c}` ({n} runs)" for c, n in Counter(c or "unrecorded" for c in commits).most_common())
    line = "Commits: " + listed(m.get("git_commit") for m in runs)
    resumed = [m["git_commit_resumed"] for m in runs if m.get("git_commit_resumed")]
    if resumed:  # an interrupted run continued at another commit: its later steps ran that code
        line += "; resumed at " + listed(resumed)
    again = [m["reevaluation"].get("git_commit") for m in runs
             if "reevaluation" in m and "copied" not in m["reevaluation"]]  # (copied: nothing to measure again)
    if again:  # aihf.llm.reevaluate: the metrics are those of this later evaluation
        line += "; evaluated again from their last checkpoints at " + listed(again)
    # where they ran: the same commit on another CPU or library version gives other numbers
    where = Counter(platform_text(m.get("platform")) for m in runs)
    if set(where) != {None}:
        line += ". Machines: " + ", ".join(f"{w or 'unrecorded'} ({n} runs)" for w, n in where.most_common())
    return line


def platform_text(p: dict | None) -> str | None:
    if not p:
        return None
    libraries = ", ".join(f"{k} {p[k]}" for k in ("torch", "transformers", "gymnasium", "mujoco") if k in p)
    return f"{p.get('gpu') or p.get('machine', '?')}; {libraries}"


# The headline score averages the evaluations of the last fifth of training (at 100k env steps and an evaluation
# every 2,500: the 9 from 80k to the final one; every 10k: 3), so that one checkpoint's swing does not decide a
# comparison: on Hopper a policy's deterministic episodes barely differ, while its successive checkpoints do.
HEADLINE_FRACTION = 0.2
HEADLINE = "score, last 20 % of training"


def last_evaluations(m: dict, fraction: float = HEADLINE_FRACTION) -> list[dict]:
    """The run's evaluations at or after (1 − fraction) of its budget, in step order (the final one replaces a
    regular one at its step); without a recorded budget, of its last evaluation's step."""
    by_step = {h["step"]: h for h in m.get("history") or []}
    if not by_step:
        return []
    budget = m.get("budget") or max(by_step)
    return [by_step[s] for s in sorted(by_step) if s >= (1 - fraction) * budget]


def score_of(m: dict, headline: bool = False) -> float | None:
    """The expert-normalised score (the true return for a run without anchors): of its final evaluation, or with
    `headline` the mean of its evaluations in the last fifth of training. A diverged run scores 0, the uniform random
    policy's level, rather than being left out, which would favour the less stable method (without anchors it has
    no score: None)."""
    normalised = m.get("expert_return") is not None or "eval/normalised_score" in m
    key = "eval/normalised_score" if normalised else "eval/return_mean"
    if m.get("status", "finished") != "finished":
        return 0.0 if normalised else None
    values = [h[key] for h in last_evaluations(m) if h.get(key) is not None] if headline else []
    return float(np.mean(values)) if values else m.get(key)  # (no history: the final evaluation alone)


def first_evaluation(m: dict) -> dict | None:
    """A finished run's earliest evaluation: under a BC warm start and an evaluation before `learning_starts`, the
    warm-started actor alone, before any policy update."""
    history = m.get("history") or []
    if not history or m.get("status", "finished") != "finished":
        return None
    return min(history, key=lambda h: h["step"])


def first_score(m: dict) -> float | None:
    first = first_evaluation(m)
    return None if first is None else first.get("eval/normalised_score", first.get("eval/return_mean"))


def first_value(m: dict, key: str) -> float | None:
    """`key` at the run's first evaluation: for a learned reward evaluated before its first update (the comparisons
    evaluate at 3,000 env steps, before `learning_starts`), the randomly initialised r_θ, a bar any learning must
    clear."""
    first = first_evaluation(m) or {}
    if key not in first:  # a metric added since the run: r_θ as initialised, re-measured where that reproduced it
        first = (m.get("reevaluation") or {}).get("first_evaluation") or {}
    return first.get(key)


# the rewards that learn nothing, printed beside each pair accuracy (aihf.mujoco.reward_metrics)
PAIR_BASELINES = ("constant", "length", "policy", "demo_classifier")


def without_demonstrator(done: list[dict]) -> str:
    """Equal-length pair accuracy on the held-out pairs with no segment of the demonstrator's policy, with its
    baselines ('–' for runs recorded before the metric existed)."""
    key = "pref_accuracy_equal_length_without_demonstrator"
    if not any(m.get(f"eval/{key}") is not None for m in done):
        return "–"
    bases = [plain([m.get("baselines", {}).get(f"baseline/{b}/{key}") for m in done]) for b in PAIR_BASELINES]
    return (f"{cell([m.get(f'eval/{key}') for m in done])} "
            f"({' / '.join(bases)} / {plain_counted([first_value(m, f'eval/{key}') for m in done])})")


def level_gap(m: dict) -> float | None:
    """r_θ's mean per step on the demonstrations minus on the agent's latest steps, averaged over a finished run's
    evaluations: how much more the learned reward paid the replayed demonstrations than the agent's own steps while
    it trained (the final value alone is taken when the agent has caught up)."""
    gaps = [h["eval/reward_level_demos"] - h["eval/reward_level_agent"] for h in m.get("history") or []
            if h.get("eval/reward_level_demos") is not None and h.get("eval/reward_level_agent") is not None]
    return float(np.mean(gaps)) if gaps and m.get("status", "finished") == "finished" else None


# -- MuJoCo -------------------------------------------------------------------------------------------------------
def table(runs: list[dict], contrasts: list[tuple[str, str]] = (), within: tuple[str, ...] = ()) -> str:
    """`within`: method settings (say the recipe's parts) that the contrasts are made within, as a context, rather
    than across: an ablation compares aihf with rlhf under each variant of the recipe."""
    groups, varying, shared = group(runs, mujoco_config)
    base = lambda g, name, metric: plain([m.get("baselines", {}).get(f"baseline/{name}/{metric}") for m in g])  # noqa: E731
    first = lambda g, key: plain_counted([first_value(m, key) for m in g])  # noqa: E731
    head = ["seeds (finished)", "reward updates", HEADLINE, "IQM",
            "final score", "first evaluation (step)", "true return",
            "EPIC ↓ (constant 0.707 / demo classifier / MLP demo classifier / r_θ at first eval.)",
            "EPIC ↓, lower rungs (demo classifier / MLP demo classifier / r_θ at first eval.)",
            "pair acc., equal lengths (constant / length / policy / demo classifier / r_θ at first eval.)",
            "pair acc. (constant / length / policy / demo classifier / r_θ at first eval.)",
            "pair acc., equal lengths, no demonstrator segment (constant / length / policy / demo classifier / r_θ at "
            "first eval.)",
            "per-step Pearson / Spearman",
            "return corr. (length)", "r_θ per step: demos / agent (final; demos − agent over training)"]
    lines = [shared_line(shared, len(runs)), "",
             "| " + " | ".join([*varying, *head]) + " |", "|" + "---|" * (len(varying) + len(head))]
    for key, g in groups.items():
        conf = dict(key)
        done = [m for m in g if m.get("status", "finished") == "finished"]
        headline = [score_of(m, headline=True) for m in g]
        row = [str(conf[v]) for v in varying] + [
            f"{len(g)} ({len(done)})", plain([m.get("reward_updates") for m in done], 0),
            cell(headline), iqm_cell(headline), cell([score_of(m) for m in g]),
            f"{cell([first_score(m) for m in g])} ({plain([(first_evaluation(m) or {}).get('step') for m in g], 0)})",
            cell([m.get("eval/return_mean") for m in done], 1),
            *(f"{cell([m.get(f'eval/{key}') for m in done])} ({base(g, 'demo_classifier', key)} / "
              f"{base(g, 'demo_mlp_classifier', key)} / {first(done, f'eval/{key}')})"
              for key in ("epic", "epic_lower_rungs")),
            f"{cell([m.get('eval/pref_accuracy_equal_length') for m in done])} "
            f"({' / '.join(base(g, b, 'pref_accuracy_equal_length') for b in PAIR_BASELINES)} / "
            f"{first(done, 'eval/pref_accuracy_equal_length')})",
            f"{cell([m.get('eval/pref_accuracy') for m in done])} "
            f"({' / '.join(base(g, b, 'pref_accuracy') for b in PAIR_BASELINES)} / "
            f"{first(done, 'eval/pref_accuracy')})",
            without_demonstrator(done),
            " / ".join(plain([m.get(k) for m in done]) for k in ("eval/reward_pearson", "eval/reward_spearman")),
            f"{cell([m.get('eval/return_correlation') for m in done])} ({base(g, 'length', 'return_correlation')})",
            f"{plain([m.get('eval/reward_level_demos') for m in done], 2)} / "
            f"{plain([m.get('eval/reward_level_agent') for m in done], 2)} ({plain([level_gap(m) for m in done], 2)})"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", CAVEAT, "", per_seed(groups, varying)]
    for part in (primary_contrasts(groups, varying, contrasts, tuple(k for k in METHOD if k not in within),
                                   MUJOCO_MEASURES),
                 heldout_sampling(groups, varying, contrasts, tuple(k for k in METHOD if k not in within)),
                 matrices(groups, varying, METHOD, MUJOCO_MEASURES[:1], MUJOCO_MATRIX_NOTE),
                 improvement(groups, varying)):
        lines += ["", part] if part else []
    lines += ["", commits_line(runs)]
    return "\n".join(lines)


CAVEAT = ("Cells: mean over seeds [95 % t-interval] (min–max). Scores are expert-normalised (0: the uniform "
          "random policy, 1: the expert's demonstrations); the headline is the mean of each run's evaluations "
          "in the last 20 % of its budget, the final score its last evaluation alone (more episodes). The first "
          "evaluation's score is the policy before any RL update: under a BC warm start evaluated before "
          "learning_starts, the warm start alone (so it is the same for every preset of one recipe and seed); "
          "for sac a randomly initialised actor; for bc its first BC steps. A diverged seed "
          "counts in the seeds column and scores 0 (the random level) in the score columns; the other columns "
          "average the finished seeds. The IQM and the probability of improvement get a percentile-bootstrap "
          f"interval only from {BOOTSTRAP_MIN_SEEDS} seeds on (below that it covers far less than 95 %); with "
          "fewer than 4 seeds the IQM trims nothing and equals the mean, and with 4 it is the mean of the middle "
          "two. Reward metrics are on the dataset's held-out split, the same trajectories and pairs for every "
          "seed, so the intervals leave out that set's own sampling error (about ±0.05 at 95 % on an accuracy over "
          "300 independent pairs, more on the equal-length ones, and more again because the pairs are cut from a "
          "few held-out trajectories: 22 on Hopper; for the declared contrasts' EPIC differences the held-out "
          "sampling section resamples those trajectories, where the runs recorded it). EPIC's 500 transitions and 8 "
          "coverage states and actions are "
          "drawn with each run's seed, which moves one reward's EPIC by a few hundredths (a near-identical reward "
          "scored 0.58–0.65 over the five Hopper seeds' draws). Beside each: a "
          "constant reward, the episode-length proxy, `policy` (ranks a segment by its ladder policy's reward per "
          "step: it knows the ladder, which no learner does; a learned reward near it has learned how good each "
          "policy is, not more), `demo classifier` (the logit of a linear classifier of the run's own demonstrated "
          "(s, a) against the other ladder policies' training steps: a reward that has learned to recognise the "
          "demonstrations and nothing else; a learned reward near it has learned that, not more), `MLP demo "
          "classifier` (the same classification by a network of r_θ's shape, (64, 64) ReLU, 3,000 updates, the "
          "network at its lowest held-back cross-entropy kept: a flexible recogniser, not a closer reward, so a "
          "finding rather than a bar), and r_θ at the "
          "run's first evaluation (before any reward update when that "
          "evaluation precedes learning_starts: the randomly initialised network, which any learning must beat). "
          "Some held-out pairs (60 of 300 on Hopper) hold a segment of the demonstrator's own policy, which a reward "
          "fitted to its demonstrations recognises; the column without them shows what it learned beyond that. "
          "EPIC on the lower rungs: the same distance on held-out transitions of the ladder policies whose return "
          "is under half the demonstrator's (on Hopper the untrained policy to the 340k rung, 11 % of the held-out "
          "steps: the policies that fall, the 340k rung at about 85 % of the expert's speed until it does). "
          "Return correlation reads mostly the sign of the reward's level on this data (the length proxy scores "
          "about 1), not its shape. r_θ per step: the learned reward's mean on the demonstrations and on the "
          "agent's latest steps at the final evaluation, and in brackets their difference averaged over every "
          "evaluation (the first, before any reward update, included): under a recipe that replays the "
          "demonstrations, what that replay paid above the agent's own steps while it trained. "
          "Neither reward loss pins the level: the demonstration term (a difference of per-step means) ignores a "
          "constant offset, Bradley–Terry sees it only through pairs of segments of unequal length, and weight "
          "decay and the ±10 clamp also move it; in an env that terminates, the level decides whether staying "
          "alive pays (a negative level makes falling early pay).")


def per_seed(groups: dict[tuple, list[dict]], varying: list[str]) -> str:
    """Every run's headline score (and its learned reward's EPIC), by seed: with few seeds and scores that jump
    between failure and success, the intervals summarise a handful of numbers a reader should see."""
    seeds = sorted({m.get("seed") for g in groups.values() for m in g if m.get("seed") is not None})
    if not seeds:
        return ""
    def shown(m: dict | None) -> str:
        if m is None:
            return ""
        score = score_of(m, headline=True)
        epic = m.get("eval/epic") if m.get("status", "finished") == "finished" else None
        return ("–" if score is None else f"{score:.3f}") + ("" if epic is None else f" ({epic:.3f})")
    lines = [f"Per seed: {HEADLINE} (EPIC of the learned reward at the end, where there is one); a diverged "
             "run scores 0 in the summary and shows its status here.", "",
             "| " + " | ".join([*varying, *(f"seed {s}" for s in seeds)]) + " |",
             "|" + "---|" * (len(varying) + len(seeds))]
    for key, g in groups.items():
        by_seed = {m.get("seed"): m for m in g}
        cells = [shown(by_seed.get(s)) if by_seed.get(s, {}).get("status", "finished") == "finished"
                 else by_seed[s]["status"] for s in seeds]
        lines.append("| " + " | ".join([*(str(dict(key)[v]) for v in varying), *cells]) + " |")
    return "\n".join(lines)


def improvement(groups: dict[tuple, list[dict]], varying: list[str]) -> str:
    """P(A > B) of the headline score between every two methods (the METHOD settings) run in the same context
    (everything else: env, recipe, dataset, teacher, budget, pair count; no-pair methods join every count), with
    95 % bootstrap intervals."""
    if not any(v in METHOD for v in varying):
        return ""
    methods = [v for v in varying if v in METHOD]
    lines = ["Probability of improvement, P(row > column) of the score (last 20 % of training) over seeds, each "
             "method's seeds taken on their own (not paired), with a 95 % bootstrap interval only where both "
             f"methods have at least {BOOTSTRAP_MIN_SEEDS} seeds (below that it covers far less than 95 %, and the "
             "value describes these seeds rather than estimating anything):", ""]
    for context, keys in contexts(groups, METHOD).items():
        if len(keys) < 2:
            continue
        names = [label_of(k, distinguishing(keys, methods)) for k in keys]
        lines += [f"*{context_label(context, varying)}*", "", "| | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for a, ka in zip(names, keys):
            row = []
            for kb in keys:
                if ka == kb:
                    row.append("–")
                    continue
                x, y = ([score_of(m, headline=True) for m in groups[k]] for k in (ka, kb))
                p, lo, hi = stats.probability_of_improvement_ci(x, y)
                shown = not math.isnan(lo) and min(len(stats._finite(x)), len(stats._finite(y))) >= BOOTSTRAP_MIN_SEEDS
                row.append(f"{p:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if shown else ""))
            lines.append(f"| {a} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() if len(lines) > 2 else ""


def _finished(value: Callable[[dict], float | None]) -> Callable[[dict], float | None]:
    return lambda m: value(m) if m.get("status", "finished") == "finished" else None


MUJOCO_MEASURES = (
    Measure(HEADLINE, lambda m: score_of(m, headline=True)),
    Measure("final score", score_of),
    Measure("EPIC distance to the true reward (lower is closer)", _finished(lambda m: m.get("eval/epic"))),
    Measure("EPIC on the lower rungs' transitions (lower is closer)",
            _finished(lambda m: m.get("eval/epic_lower_rungs"))))

MUJOCO_MATRIX_NOTE = (
    "Paired by seed: at one seed every method draws the same demonstrations and pairs, starts from the same "
    "initial weights and is evaluated from the same start states; pairing narrows an interval only as far as the "
    "two methods' scores move together across seeds, and with one demonstration and few pairs they may not. Bold: "
    "the interval excludes 0 (unadjusted: the matrices hold many comparisons, so some bold cells are expected by "
    "chance; the primary contrasts, if any, are adjusted above). †n: only n seeds paired. Methods that use no "
    "preference pairs appear in every pair count.")


def context_label(context: tuple, varying: list[str]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in context if k in varying) or "all runs"


def label_of(key: tuple, varying: list[str]) -> str:
    conf = dict(key)
    return ", ".join(f"{conf[v]}" if v == "algo" else f"{v}={conf[v]}" for v in varying) or "all runs"


def plot_curves(runs: list[dict], out: Path, title: str) -> None:
    """Learning curves against env steps (mean ± std over seeds): presets that learn a reward in one panel, the
    rest (true-reward references, the constant control, behaviour cloning) in another, each named by the settings
    that tell it apart; a method without env steps (behaviour cloning's curve is over gradient steps) is a dotted
    level at its headline score."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups, varying, _ = group(runs, mujoco_config)
    keys = list(groups)
    short = [v for v in varying if v in ("algo", "pairs")]
    names = [label_of(k, short) for k in keys]
    if len(set(names)) < len(names):
        names = [label_of(k, varying) for k in keys]
    learns = [any((m.get("reward_updates") or 0) > 0 for m in groups[k]) for k in keys]
    panels = [p for p in ((True, "learned reward"), (False, "true reward, constant reward and BC")) if p[0] in learns]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), sharey=True, squeeze=False)
    for ax, (which, what) in zip(axes[0], panels):
        for i, (key, label) in enumerate((k, n) for k, n, w in zip(keys, names, learns) if w == which):
            g, colour = groups[key], f"C{i % 10}"
            curves = [[(h["step"], h.get("eval/normalised_score", h["eval/return_mean"])) for h in m["history"]]
                      for m in g if m.get("history")]
            steps = sorted(set.intersection(*[{s for s, _ in c} for c in curves])) if curves else []
            if len(steps) < 2 or all(m.get("env_steps", 1) == 0 for m in g):
                ax.axhline(np.nanmean([np.nan if v is None else v for v in (score_of(m, headline=True) for m in g)]),
                           ls=":", color=colour, label=f"{label} (no env steps)")
                continue
            ys = np.array([[dict(c)[s] for s in steps] for c in curves])
            ax.plot(steps, ys.mean(0), color=colour, label=label, lw=1.2)
            ax.fill_between(steps, ys.mean(0) - ys.std(0), ys.mean(0) + ys.std(0), color=colour, alpha=0.12)
        ax.set_xlabel("environment steps")
        ax.set_title(what, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("expert-normalised score")
    fig.suptitle(title + " (mean ± std over seeds; dotted: no learning curve)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


# -- language models ----------------------------------------------------------------------------------------------
# (column, metric keys, digits): a column is shown when some run has its first metric
LLM_COLUMNS = (("gold (sampled)", ("eval/gold_sampled",), 3), ("gold (greedy)", ("eval/gold_greedy",), 3),
               ("KL(π‖π_ref) per sequence", ("eval/kl",), 2), ("KL per token", ("eval/kl_per_token",), 3),
               ("held-out pref acc.", ("eval/pref_accuracy",), 3),
               ("length only (direction fit on training pairs)", ("baseline/length_pref_accuracy",), 3),
               ("π_ref zero-shot acc., summed / per token", ("eval/ref_loglik_pref_accuracy",
                                                              "eval/ref_loglik_per_token_pref_accuracy"), 3),
               ("sampled response tokens", ("eval/response_tokens",), 1),
               ("held-out demo log-lik./token", ("eval/demo_logp_per_token",), 3))


def _minus_reference(m: dict) -> float | None:
    acc, ref = m.get("eval/pref_accuracy"), m.get("eval/ref_loglik_pref_accuracy")
    return None if acc is None or ref is None else acc - ref


# the LLM table again with a column per pair count: (title, value of a run, digits, bold where the interval excludes 0)
PIVOTS = (("Gold reward of sampled responses", lambda m: m.get("eval/gold_sampled"), 3, False),
          ("Gold reward of the greedy response", lambda m: m.get("eval/gold_greedy"), 3, False),
          ("KL(π‖π_ref) per sequence", lambda m: m.get("eval/kl"), 2, False),
          ("Held-out preference accuracy", lambda m: m.get("eval/pref_accuracy"), 3, False),
          # (a method trained on no pairs is left out: π_ref itself ties every pair)
          ("Held-out preference accuracy minus π_ref's zero-shot ranking of the same pairs at the same seed (paired "
           "by seed; bold where the interval excludes 0; methods trained on pairs)",
           lambda m: _minus_reference(m) if m.get("num_prefs") else None, 3, True))


def settings_apart(keys, varying: list[str]) -> dict[str, list[str]]:
    """For each algo, the varying settings (other than the pair count and steps) that tell its rows apart: β in a β
    check, not λ_D, which differs between algos; a row is named by its algo and these."""
    others = [v for v in varying if v not in ("algo", "pairs", "steps")]
    return {a: [v for v in others if len({dict(k)[v] for k in keys if dict(k)["algo"] == a}) > 1]
            for a in {dict(k)["algo"] for k in keys}}


def by_pair_count(groups: dict[tuple, list[dict]], varying: list[str]) -> str:
    """One table per measure with a row per method and a column per preference-pair count, mean over seeds [95 %
    t-interval]; a method trained on no pairs is one value, in the first column. The method is named by its algo,
    and by the other settings that vary only where two rows share it."""
    counts = sorted({dict(k).get("pairs", 0) for k in groups} - {0})
    if "pairs" not in varying or len(counts) < 2:
        return ""
    rows: dict[tuple, dict[int, list[dict]]] = defaultdict(dict)
    for key, g in groups.items():
        rows[tuple((k, v) for k, v in key if k not in ("pairs", "steps"))][dict(key)["pairs"]] = g
    apart = settings_apart(rows, varying)

    def name(r: tuple) -> str:
        conf = dict(r)
        extra = [f"{v}={conf[v]}" for v in apart[conf["algo"]]]
        return ", ".join([f"`{conf['algo']}`", *extra]) + (" (no pairs)" if set(rows[r]) == {0} else "")

    out = []
    for title, value, digits, bold in PIVOTS:
        if not any(value(m) is not None for g in groups.values() for m in g):
            continue
        lines = [f"{title}:", "", "| method | " + " | ".join(f"N = {n}" for n in counts) + " |",
                 "|---|" + "---|" * len(counts)]
        for r, by_count in rows.items():
            cells = []
            for n in counts:
                g = by_count.get(n) or (by_count.get(0) if n == counts[0] else None)
                d, lo, hi = stats.t_interval([value(m) for m in g or [] if value(m) is not None])
                text = "" if math.isnan(d) else (f"{d:.{digits}f}" if math.isnan(lo)
                                                  else f"{d:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]")
                cells.append(f"**{text}**" if bold and text and not math.isnan(lo) and (lo > 0 or hi < 0) else text)
            if any(cells):
                lines.append(f"| {name(r)} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return "By preference-pair count, mean over seeds [95 % t-interval]:\n\n" + "\n\n".join(out)


def llm_table(runs: list[dict], contrasts: list[tuple[str, str]] = ()) -> str:
    groups, varying, shared = group(runs, llm_config)
    columns = [c for c in LLM_COLUMNS if any(c[1][0] in m for m in runs)]
    held = sorted({len(m["heldout_pairs"]) for m in runs if m.get("heldout_pairs")})
    lines = [shared_line(shared, len(runs)), "",
             "| " + " | ".join([*varying, "seeds", *(c[0] for c in columns)]) + " |",
             "|" + "---|" * (len(varying) + 1 + len(columns))]
    for key, g in groups.items():
        conf = dict(key)
        row = [str(conf[v]) for v in varying] + [str(len(g))]
        for _, metrics, digits in columns:
            row.append(" / ".join(cell([m.get(k) for m in g], digits) if k == metrics[0] and len(metrics) == 1
                                  else plain([m.get(k) for m in g], digits) for k in metrics))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Cells: mean over seeds [95 % t-interval] (min–max)."
              + (f" Held-out pairs per run: {', '.join(map(str, held))}." if held else "")]
    for part in (by_pair_count(groups, varying),
                 primary_contrasts(groups, varying, contrasts, LLM_METHOD, LLM_MEASURES),
                 llm_heldout_sampling(groups, varying, contrasts), paired_llm(groups, varying),
                 matrices(groups, varying, LLM_METHOD, LLM_MEASURES, LLM_MATRIX_NOTE)):
        lines += ["", part] if part else []
    lines += ["", commits_line(runs)]
    return "\n".join(lines)


def correct(pairs: list[dict]) -> dict[str, float]:
    """Each held-out pair's credit for a run: 1 ranked right, 0 wrong, 0.5 a tie."""
    return {p["pair"]: 1.0 if p["margin"] > 0 else 0.5 if p["margin"] == 0 else 0.0 for p in pairs}


def contexts(groups: dict[tuple, list[dict]], method: tuple[str, ...]) -> dict[tuple, list[tuple]]:
    """The groups by context (everything but the `method` settings: task or env, recipe, pair count, ...). Methods
    that use no pairs (LLM: sft, spin, π_ref itself; MuJoCo: irl, sac, bc, the constant control, sac_recipe) do not
    depend on the count, so they join every context with pairs, as baselines."""
    cells: dict[tuple, list[tuple]] = defaultdict(list)
    for key in groups:
        cells[tuple((k, v) for k, v in key if k not in method)].append(key)
    without = {c: keys for c, keys in cells.items() if dict(c).get("pairs") == 0}
    rest = lambda c: tuple((k, v) for k, v in c if k != "pairs")  # noqa: E731
    joined = set()
    for c in [c for c in cells if c not in without]:
        for w, keys in without.items():
            if rest(w) == rest(c):
                cells[c] += keys
                joined.add(w)
    for w in joined:  # a no-pair context that matches none (another budget, say) stays on its own
        del cells[w]
    return dict(sorted(cells.items(), key=lambda kv: in_order(kv[0])))


def llm_contexts(groups: dict[tuple, list[dict]]) -> dict[tuple, list[tuple]]:
    return contexts(groups, LLM_METHOD)


def paired_matrix(keys: list[tuple], groups: dict[tuple, list[dict]], names: list[str], value, seeds_all: int,
                  digits: int = 3) -> list[str]:
    """row − column of `value(run)`, paired by seed (the runs of one seed draw the same data and start from the
    same initialisation): the mean difference with its 95 % paired t-interval over the seeds both have, in bold
    where the interval excludes 0, marked † where fewer than `seeds_all` seeds are paired."""
    lines = ["| row − column | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for a, ka in zip(names, keys):
        row = []
        for kb in keys:
            diffs = seed_differences(groups[ka], groups[kb], value)
            if ka == kb or not diffs:
                row.append("–")
                continue
            d, lo, hi = stats.t_interval(diffs)
            text = difference_text(d, lo, hi, digits)
            text = f"**{text}**" if lo > 0 or hi < 0 else text
            row.append(text + (f" †{len(diffs)}" if len(diffs) < seeds_all else ""))
        lines.append(f"| {a} | " + " | ".join(row) + " |")
    return lines


def seed_differences(a: list[dict], b: list[dict], value) -> list[float]:
    """value(run of a) − value(run of b) for each seed both groups have a value at, in seed order."""
    xa = {m["seed"]: value(m) for m in a if value(m) is not None}
    xb = {m["seed"]: value(m) for m in b if value(m) is not None}
    return [xa[s] - xb[s] for s in sorted(set(xa) & set(xb))]


def difference_text(d: float, lo: float, hi: float, digits: int = 3) -> str:
    return f"{d:+.{digits}f}" + ("" if math.isnan(lo) else f" [{lo:+.{digits}f}, {hi:+.{digits}f}]")


# compared between methods when a context holds more than two
LLM_MEASURES = (Measure("gold reward of sampled responses", lambda m: m.get("eval/gold_sampled")),
                Measure("held-out preference accuracy", lambda m: m.get("eval/pref_accuracy"), pairs_only=True))


def distinguishing(keys: list[tuple], methods: list[str]) -> list[str]:
    """The method settings that name these groups apart: the preset alone where it does, else every one that
    varies among them."""
    varies = [v for v in methods if len({dict(k)[v] for k in keys}) > 1]
    return ["algo"] if "algo" in varies and len({dict(k)["algo"] for k in keys}) == len(keys) else varies


def matrices(groups: dict[tuple, list[dict]], varying: list[str], method: tuple[str, ...],
             measures: tuple[Measure, ...], note: str) -> str:
    """For each context of more than two methods, the paired differences between every two, per measure."""
    methods = [v for v in varying if v in method]
    lines = []
    for context, keys in contexts(groups, method).items():
        if len(keys) <= 2:
            continue
        label = context_label(context, varying)
        names = [label_of(k, distinguishing(keys, methods)) for k in keys]
        for measure in measures:
            shown = [(k, n) for k, n in zip(keys, names) if (not measure.pairs_only or dict(k)["pairs"] > 0)
                     and any(measure.value(m) is not None for m in groups[k])]
            if len(shown) < 2:
                continue
            seeds = sorted({m["seed"] for k, _ in shown for m in groups[k]})
            lines += [f"*{label}: {measure.what}, row − column, paired by seed ({len(seeds)} seeds) "
                      f"[95 % t-interval]*", "",
                      *paired_matrix([k for k, _ in shown], groups, [n for _, n in shown], measure.value,
                                     len(seeds)), ""]
    if lines:
        lines.append(note)
    return "\n".join(lines).rstrip()


LLM_MATRIX_NOTE = (
    "Paired by seed: at one seed every preset draws the same training rows and starts from the same "
    "initialisation; pairing narrows an interval only as far as the two presets' results move together across "
    "seeds. The interval is over seeds (the training "
    "randomness: initialisation, the data drawn, sampling) on one fixed set of evaluation prompts and held-out "
    "pairs; the error of that set's own sampling is not in it. Bold: the interval excludes 0 (unadjusted: the "
    "matrices hold many comparisons, so some bold cells are expected by chance; the primary contrasts, if any, are "
    "adjusted below). †n: only n seeds paired. Presets that use no preference pairs appear in every pair count "
    "(gold only).")


def declared_pairs(groups: dict[tuple, list[dict]], varying: list[str], contrasts,
                   method: tuple[str, ...]) -> list[tuple[str, str, tuple, tuple]]:
    """(context label, "a − b", key a, key b) of each declared contrast in every context that has both."""
    found = []
    for context, keys in contexts(groups, method).items():
        label = context_label(context, varying)
        for a, b in contrasts:
            ka = [k for k in keys if dict(k)["algo"] == a]
            kb = [k for k in keys if dict(k)["algo"] == b]
            if len(ka) == 1 and len(kb) == 1:
                found.append((label, f"{a} − {b}", ka[0], kb[0]))
    return found


def primary_contrasts(groups: dict[tuple, list[dict]], varying: list[str], contrasts, method: tuple[str, ...],
                      measures: tuple[Measure, ...]) -> str:
    """The comparisons declared before looking (`--contrasts A:B,...`, by the algo each run recorded), in every
    context that has both: the paired-by-seed difference with its 95 % t-interval and the t-test's p-value, Holm-
    adjusted over the whole family (every contrast in every context) of each measure."""
    found = declared_pairs(groups, varying, contrasts, method)
    if not found:
        return ""
    cells: list[list[tuple[str, float, float]]] = []
    spreads: list[list[float]] = []  # the primary measure's per-seed differences
    for measure in measures:
        results = []
        for _, _, ka, kb in found:
            diffs = seed_differences(groups[ka], groups[kb], measure.value)
            if measure is measures[0]:
                spreads.append(diffs)
            if not diffs or (measure.pairs_only and (dict(ka)["pairs"] == 0 or dict(kb)["pairs"] == 0)):
                results.append(("–", math.nan, math.nan))
                continue
            results.append((f"{difference_text(*stats.t_interval(diffs))} (n={len(diffs)})", stats.t_test_p(diffs),
                            stats.sign_flip_p(diffs)))
        adjusted = stats.holm([p for _, p, _ in results])
        cells.append([(t, p, e, q) for (t, p, e), q in zip(results, adjusted)])
    fmt = lambda p: "–" if math.isnan(p) else f"{p:.3f}"  # noqa: E731
    head = " | ".join(f"{m.what}: difference [95 %] | p (exact) | Holm p" for m in measures)
    families = [sum(1 for _, p, _, _ in column if not math.isnan(p)) for column in cells]
    family = families[0]
    seeds = max((len(d) for d in spreads), default=0)
    lines = [f"Primary contrasts (declared in advance), paired by seed; Holm's adjustment over every contrast and "
             f"count of each metric. The first metric ({measures[0].what}) is the primary one, the others "
             f"secondary. Significant from: the smallest mean difference Holm's first step could call "
             f"significant at that contrast's spread and seed count, in a family of {family}; 80 % power: the true "
             f"difference it would find 4 times in 5 at that spread (noncentral t; the spread is itself estimated "
             f"from these few seeds). A contrast below them is not evidence of no difference. Family sizes "
             f"(contrasts with a p-value): {', '.join(f'{m.what}: {n}' for m, n in zip(measures, families))}; a "
             f"secondary metric tested after the primary one failed is exploratory. p: Student's t-test; in brackets "
             f"the exact sign-flip test, which assumes nothing of the differences' distribution and cannot go below "
             f"2 / 2^n with n seeds ({2 / 2 ** seeds:.4f} at {seeds}): where the t-test passes and the exact test "
             f"cannot, normality carries the result (the exact p is not Holm-adjusted).", "",
             f"| | contrast | {head} | significant from (first metric) | 80 % power (first metric) |",
             "|---|---|" + "---|---|---|" * len(measures) + "---|---|"]
    for i, (label, name, _, _) in enumerate(found):
        row = [f"{t} | {fmt(p)}{'' if math.isnan(e) else f' ({e:.4f})'} | {'**' + fmt(q) + '**' if q < 0.05 else fmt(q)}"
               for t, p, e, q in (column[i] for column in cells)]
        bounds = [stats.smallest_significant_difference(spreads[i], family),
                  stats.difference_for_power(spreads[i], family)]
        lines.append(f"| {label} | {name} | " + " | ".join(row) + " | "
                     + " | ".join("–" if math.isnan(b) else f"±{b:.3f}" for b in bounds) + " |")
    return "\n".join(lines)


# the reward metrics measured again under resamplings of the held-out trajectories (reward_metrics.resampled)
RESAMPLED = (("epic", "EPIC"), ("epic_lower_rungs", "EPIC on the lower rungs"))


def with_second_source(per_seed: list[float], second_sd: float) -> str:
    """"<second source's SD> / <seeds' SE> | difference [95 %, both] (n=…)": a seed-mean difference with a second,
    independent source of error (the held-out set's sampling) beside the seeds', and the t-interval with both."""
    seed_se = float(np.std(per_seed, ddof=1) / math.sqrt(len(per_seed))) if len(per_seed) > 1 else math.nan
    d, lo, hi = stats.t_interval_with(per_seed, second_sd ** 2)
    return f"{second_sd:.3f} / {seed_se:.3f} | {difference_text(d, lo, hi)} (n={len(per_seed)})"


def heldout_sampling(groups: dict[tuple, list[dict]], varying: list[str], contrasts,
                     method: tuple[str, ...]) -> str:
    """The declared contrasts' reward-metric differences with the held-out trajectories resampled, seeds fixed:
    every run was scored on the same few trajectories, which the intervals over seeds leave out. For each
    resampling (the same draw for every run), the mean over seeds of the paired difference: its standard deviation
    over the resamplings beside the seeds' standard error, and the t-interval with both (SE² = s²/n + that
    variance), which is the one to read: two intervals that each exclude 0 need not do so together."""
    def resampled(g: list[dict], key: str) -> dict:
        return {m["seed"]: np.array(m["heldout_resampled"][key], dtype=np.float64) for m in g
                if m.get("status", "finished") == "finished" and (m.get("heldout_resampled") or {}).get(key)}
    rows, counts = [], set()
    for label, name, ka, kb in declared_pairs(groups, varying, contrasts, method):
        cells = []
        for key, _ in RESAMPLED:
            ra, rb = resampled(groups[ka], key), resampled(groups[kb], key)
            seeds = sorted(s for s in set(ra) & set(rb) if len(ra[s]) == len(rb[s]))
            if not seeds:
                cells.append("–")
                continue
            means = np.mean([ra[s] - rb[s] for s in seeds], axis=0)
            means = means[np.isfinite(means)]  # a resampling that left a subset no transitions
            counts.add(len(means))
            observed = seed_differences([m for m in groups[ka] if m["seed"] in seeds],
                                        [m for m in groups[kb] if m["seed"] in seeds],
                                        _finished(lambda m, k=key: m.get(f"eval/{k}")))
            cells.append(with_second_source(observed, float(means.std(ddof=1))))
        cells = [c if c != "–" else "– | –" for c in cells]
        if any(c != "– | –" for c in cells):
            rows.append(f"| {label} | {name} | " + " | ".join(cells) + " |")
    if not rows:
        return ""
    return "\n".join([
        f"Held-out sampling: every run is scored on the same few held-out trajectories, which the intervals over "
        f"seeds above leave out. Resampling those trajectories with replacement, seeds fixed "
        f"({'/'.join(map(str, sorted(counts)))} resamplings, the same for every run), gives the spread of the "
        f"seed-mean difference that the held-out set alone causes (its standard deviation, beside the seeds' "
        f"standard error), and the difference's 95 % t-interval with both (SE² = s²/n + that variance; "
        f"conservative, as the resampling spread already holds part of each seed's own). Approximate: the held-out "
        f"trajectories are few (on Hopper most transitions come from its 12 full-length ones), and a plain "
        f"resampling lets the mix of policies vary where the held-out set has a fixed number of each.", "",
        "| | contrast | " + " | ".join(f"{what}: held-out SD / seeds' SE | difference [95 %, both]"
                                       for _, what in RESAMPLED)
        + " |", "|---|---|" + "---|---|" * len(RESAMPLED), *rows])


def pair_sampled(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]]):
    """Per-pair credits of two sides by seed ({seed: {pair: credit}}, the same pairs at each seed): the per-seed
    accuracy differences, and the variance of their mean that the held-out pairs' own sampling causes, seeds fixed
    (a bootstrap of the pairs, computed exactly: the variance of the per-pair mean difference over pairs / their
    count). None where no seed has both sides on the same pairs."""
    seeds = sorted(s for s in set(a) & set(b) if set(a[s]) == set(b[s]) and a[s])
    if not seeds:
        return None
    ids = sorted(a[seeds[0]])
    if any(set(a[s]) != set(ids) for s in seeds):
        return None  # each seed its own held-out pairs (a split per seed): not one fixed set to resample
    d = np.array([[a[s][i] - b[s][i] for i in ids] for s in seeds])
    return d.mean(axis=1).tolist(), float(d.mean(axis=0).var(ddof=1) / len(ids))


def _credits(g: list[dict], margin: str = "margin") -> dict[int, dict[str, float]]:
    return {m["seed"]: correct([{"pair": p["pair"], "margin": p[margin]} for p in m["heldout_pairs"]])
            for m in g if m.get("status", "finished") == "finished" and m.get("heldout_pairs")
            and all(margin in p for p in m["heldout_pairs"])}


def llm_heldout_sampling(groups: dict[tuple, list[dict]], varying: list[str], contrasts) -> str:
    """Held-out accuracy again with the held-out pairs' sampling: every run is scored on the same held-out pairs, so
    the intervals over seeds say nothing of which pairs were held out. For each declared contrast, and for each
    method against π_ref's zero-shot ranking of the same pairs, the pairs' standard error of the seed-mean
    difference beside the seeds', and the t-interval and p with both (SE² = s²/n + pairs' variance; Holm over the
    declared contrasts)."""
    def sampled_cell(sampled) -> tuple[str, float]:
        diffs, pairs_var = sampled
        return with_second_source(diffs, math.sqrt(pairs_var)), stats.t_test_p_with(diffs, pairs_var)
    rows = []
    for label, name, ka, kb in declared_pairs(groups, varying, contrasts, LLM_METHOD):
        sampled = pair_sampled(_credits(groups[ka]), _credits(groups[kb]))
        if sampled is not None and dict(ka)["pairs"] and dict(kb)["pairs"]:
            rows.append((label, name, *sampled_cell(sampled)))
    adjusted = stats.holm([p for *_, p in rows])
    fmt = lambda p: "–" if math.isnan(p) else f"{p:.3f}"  # noqa: E731
    out = []
    if rows:
        out += ["Held-out pairs' sampling: every run is scored on the same held-out pairs, which the intervals over "
                "seeds above leave out. Resampling the pairs with replacement, seeds fixed, gives the spread of the "
                "seed-mean accuracy difference that the choice of held-out pairs alone causes (its standard error, "
                "computed exactly, beside the seeds'), and the difference's 95 % t-interval and p with both (SE² = "
                "s²/n + that variance; conservative, as the pairs' spread already holds part of each seed's own); "
                f"Holm over these {len(rows)}.", "",
                "| | contrast | held-out accuracy: pairs' SE / seeds' SE | difference [95 %, both] | p (both) | "
                "Holm p |", "|---|---|---|---|---|---|",
                *(f"| {label} | {name} | {text} | {fmt(p)} | {'**' + fmt(q) + '**' if q < 0.05 else fmt(q)} |"
                  for (label, name, text, p), q in zip(rows, adjusted))]
    ref_rows = []
    apart = settings_apart(groups, varying)
    for key, g in sorted(groups.items(), key=lambda kv: (dict(kv[0]).get("pairs") or 0, in_order(kv[0]))):
        conf = dict(key)
        if not conf.get("pairs"):
            continue  # π_ref itself, or a method trained on no pairs
        sampled = pair_sampled(_credits(g), _credits(g, "ref_margin"))
        if sampled is not None:
            text, p = sampled_cell(sampled)
            extra = [f"{v}={conf[v]}" for v in apart[conf["algo"]]]
            ref_rows.append(f"| {conf['pairs']} | {', '.join([conf['algo'], *extra])} | {text} | {fmt(p)} |")
    if ref_rows:
        out += ["", "The same for each method's held-out accuracy minus π_ref's zero-shot ranking of the same pairs "
                "(exploratory, unadjusted):", "",
                "| pairs | method | pairs' SE / seeds' SE | difference [95 %, both] | p (both) |", "|---|---|---|---|---|",
                *ref_rows]
    return "\n".join(out).strip()


def paired_llm(groups: dict[tuple, list[dict]], varying: list[str]) -> str:
    """Held-out accuracy of two methods run in the same context (where it holds exactly two), compared pair by
    pair on each seed's split (a paired interval over the pairs both scored) and over the seeds (Nadeau–Bengio's
    corrected interval, since random splits of one dataset overlap)."""
    lines = []
    for context, keys in llm_contexts(groups).items():
        if len(keys) != 2:
            continue
        label = context_label(context, varying)
        methods = [v for v in varying if v in LLM_METHOD]
        for i, ka in enumerate(keys):
            for kb in keys[i + 1:]:
                a = {m["seed"]: correct(m["heldout_pairs"]) for m in groups[ka] if m.get("heldout_pairs")}
                b = {m["seed"]: correct(m["heldout_pairs"]) for m in groups[kb] if m.get("heldout_pairs")}
                seeds = sorted(s for s in set(a) & set(b) if set(a[s]) == set(b[s]))
                if not seeds:
                    continue
                name_a, name_b = label_of(ka, methods), label_of(kb, methods)
                rows, deltas = [], []
                for s in seeds:
                    ids = sorted(a[s])
                    xa, xb = [a[s][p] for p in ids], [b[s][p] for p in ids]
                    d, lo, hi = stats.paired_difference(xa, xb)
                    deltas.append(d)
                    wa, wb = stats.wilson_interval(sum(xa), len(ids)), stats.wilson_interval(sum(xb), len(ids))
                    rows.append(f"| {s} | {len(ids)} | {np.mean(xa):.3f} [{wa[0]:.3f}, {wa[1]:.3f}] "
                                f"| {np.mean(xb):.3f} [{wb[0]:.3f}, {wb[1]:.3f}] | {d:+.3f} [{lo:+.3f}, {hi:+.3f}] "
                                f"| {sum(x != y for x, y in zip(xa, xb))} |")
                n_test = int(np.mean([len(a[s]) for s in seeds]))
                n_train = int(np.mean([m.get("num_prefs") or 0 for m in groups[ka] + groups[kb]]))
                pooled = (stats.corrected_resampled_t(deltas, n_test, n_train) if n_train > 0
                          else stats.t_interval(deltas))
                ci = "" if math.isnan(pooled[1]) else f" [{pooled[1]:+.3f}, {pooled[2]:+.3f}]"
                lines += [f"*{label}: {name_a} − {name_b}, held-out accuracy pair by pair*", "",
                          f"| seed (split) | pairs | {name_a} [Wilson 95 %] | {name_b} [Wilson 95 %] "
                          f"| difference [paired 95 %] | pairs ranked differently |", "|---|---|---|---|---|---|",
                          *rows,
                          f"| all {len(seeds)} | | | | {pooled[0]:+.3f}{ci} "
                          f"| {sum(d > 0 for d in deltas)} of {len(seeds)} seeds > 0 |", "",
                          "Over the seeds, the interval is Nadeau and Bengio's corrected resampled t "
                          f"(variance × (1/J + n_test/n_train), n_test {n_test}, n_train {n_train}): the splits are "
                          "random subsets of one dataset, so they overlap and a plain t-interval is too narrow.", ""]
    return "\n".join(lines).rstrip()


def plot_llm_curves(runs: list[dict], out: Path, title: str, metric: str = "eval/gold_sampled") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups, varying, _ = group(runs, llm_config)
    sizes = sorted({dict(k)["pairs"] for k in groups})
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), sharey=True, squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for key, g in groups.items():
            if dict(key)["pairs"] not in (0, size):
                continue
            curves = [[(h["step"], h[metric]) for h in m["history"] if metric in h] for m in g]
            steps = sorted(set.intersection(*[{s for s, _ in c} for c in curves]))
            if not steps:
                continue
            ys = np.array([[dict(c)[s] for s in steps] for c in curves])
            ax.plot(steps, ys.mean(0), marker="o", ms=3, label=label_of(key, [v for v in varying if v != "pairs"]))
            ax.fill_between(steps, ys.mean(0) - ys.std(0), ys.mean(0) + ys.std(0), alpha=0.15)
        ax.set_title(f"{title}: {size} preference pairs" if size else title)
        ax.set_xlabel("training steps (SFT warm start, reward fit, then the preset's steps)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(metric.split("/")[-1].replace("_", " "))
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def plot_scarcity(groups: dict[tuple, list[dict]], methods: list[str], panels, out: Path, title: str,
                  baselines=None) -> dict[str, dict[str, dict[int, float]]]:
    """Metrics against the number of preference pairs, one line per method (mean over seeds with its 95 %
    t-interval); methods that use no pairs are bands across the plot. `panels`: (metric name, its value of a
    run, axis label, whether no-pair methods have it); `baselines(ax, metric, sizes)` draws a panel's trivial
    baselines. Returns the plotted means: metric -> method -> pair count (0: a method that uses no pairs) -> mean."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    lines: dict[tuple, dict[int, list[dict]]] = defaultdict(dict)
    for key, g in groups.items():
        lines[tuple((k, v) for k, v in key if k != "pairs")][dict(key)["pairs"]] = g
    sizes = sorted({dict(k)["pairs"] for k in groups} - {0})
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5))
    plotted: dict[str, dict[str, dict[int, float]]] = defaultdict(dict)
    for ax, (metric, value, name, without_pairs) in zip(np.atleast_1d(axes), panels):
        ordered = sorted(lines.items(), key=lambda kv: str(kv[0]))
        names = distinguishing([k for k, _ in ordered], methods)
        for i, (key, by_size) in enumerate(ordered):
            colour, label = f"C{i % 10}", label_of(key, names)
            shift = 1.03 ** (i - len(ordered) / 2)  # side by side, so the intervals do not hide each other
            cis = {n: stats.t_interval([value(m) for m in g if value(m) is not None]) for n, g in by_size.items()}
            if set(by_size) == {0}:  # no pairs used: the same at every count
                point, low, high = cis[0]
                if not without_pairs or math.isnan(point):
                    continue
                ax.axhline(point, color=colour, ls=":", label=label)
                if not math.isnan(low):
                    ax.axhspan(low, high, color=colour, alpha=0.05)
                plotted[metric][label] = {0: point}
                continue
            xs = [n for n in sizes if n in cis and not math.isnan(cis[n][0])]
            if not xs:
                continue
            ys = np.array([cis[n] for n in xs])
            plotted[metric][label] = {n: float(y) for n, y in zip(xs, ys[:, 0])}
            low, high = np.nan_to_num(ys[:, 0] - ys[:, 1]), np.nan_to_num(ys[:, 2] - ys[:, 0])
            ax.errorbar([x * shift for x in xs], ys[:, 0], yerr=[low, high], color=colour, marker="o", ms=4,
                        capsize=3, label=label)
        if baselines is not None:
            baselines(ax, metric, sizes)
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.set_xlabel("preference pairs")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}: mean over seeds with 95 % t-intervals; dotted: methods that use no pairs", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return dict(plotted)


def _mean_by_size(groups: dict[tuple, list[dict]], value, sizes: list[int]) -> dict[int, float]:
    """The mean of value(run) over the runs at each pair count (where some run has it)."""
    found = {n: [value(m) for k, g in groups.items() if dict(k)["pairs"] == n for m in g] for n in sizes}
    found = {n: [x for x in v if x is not None] for n, v in found.items()}
    return {n: float(np.mean(v)) for n, v in found.items() if v}


def plot_mujoco_scarcity(runs: list[dict], out: Path, title: str) -> dict:
    """The headline score (as in the table: diverged seeds at 0), EPIC distance and equal-length pair accuracy
    (finished seeds) against the pair count, with the constant, length and policy baselines of the same data."""
    groups, varying, _ = group(runs, mujoco_config)

    def baselines(ax, metric, sizes):
        name = metric.removeprefix("eval/")
        for proxy, style in (("constant", "k--"), ("length", "k-."), ("policy", "k:"), ("demo_classifier", "c-.")):
            base = _mean_by_size(groups, lambda m: (m.get("baselines") or {}).get(f"baseline/{proxy}/{name}"), sizes)
            if base:
                ax.plot(list(base), list(base.values()), style, label=f"{proxy.replace('_', ' ')} reward")
        if metric != "score":  # the randomly initialised r_θ, where the first evaluation precedes any reward update
            untrained = _mean_by_size(groups, lambda m: first_value(m, metric), sizes)
            if untrained:
                ax.plot(list(untrained), list(untrained.values()), color="0.6", ls=(0, (1, 3)),
                        label="r_θ at first evaluation")

    return plot_scarcity(groups, [v for v in varying if v in METHOD],
                         [(name, measure.value, label, True) for name, measure, label in (
                             ("score", MUJOCO_MEASURES[0], "expert-normalised score, last 20 % of "
                                                           "training"),
                             ("eval/epic", MUJOCO_MEASURES[2], "EPIC distance ↓"),
                             ("eval/pref_accuracy_equal_length",
                              Measure("", _finished(lambda m: m.get("eval/pref_accuracy_equal_length"))),
                              "held-out pair accuracy, equal lengths"))],
                         out, title, baselines)


def plot_llm_scarcity(runs: list[dict], out: Path, title: str) -> dict:
    """Gold reward and held-out accuracy against the number of preference pairs, with the length-only rule and
    π_ref's zero-shot ranking as baselines of the accuracy."""
    groups, varying, _ = group(runs, llm_config)

    def baselines(ax, metric, sizes):
        if metric != "eval/pref_accuracy":
            return
        for key, style, what in (("baseline/length_pref_accuracy", "k--", "length only (direction fit on the pairs)"),
                                 ("eval/ref_loglik_pref_accuracy", "k-.",
                                  "π_ref zero-shot: log π_ref(y_w) > log π_ref(y_l)")):
            base = _mean_by_size(groups, lambda m: m.get(key), sizes)
            if base:
                ax.plot(list(base), list(base.values()), style, label=what)

    return plot_scarcity(groups, [v for v in varying if v in LLM_METHOD],
                         [(key, lambda m, key=key: m.get(key), name, without) for key, name, without in (
                             ("eval/gold_sampled", "gold reward (sampled)", True),
                             ("eval/pref_accuracy", "held-out preference accuracy", False))], out, title, baselines)


def plot_llm_accuracy(runs: list[dict], out: Path, title: str) -> None:
    """Without a gold reward: each run's held-out preference accuracy (one dot per seed, the mean as a bar),
    with the length-only baseline and π_ref's zero-shot accuracy of the same runs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups, varying, _ = group(runs, llm_config)
    fig, ax = plt.subplots(figsize=(max(6.5, 2 + 1.6 * len(groups)), 4.5))
    shown = [("eval/pref_accuracy", "held-out accuracy", "C0"), ("baseline/length_pref_accuracy", "length only", "C1"),
             ("eval/ref_loglik_pref_accuracy", "π_ref zero-shot (summed)", "C2")]
    for i, (key, g) in enumerate(groups.items()):
        for j, (metric, name, colour) in enumerate(shown):
            ys = [m[metric] for m in g if metric in m]
            if not ys:
                continue
            x = i + (j - 1) * 0.25
            ax.bar(x, np.mean(ys), width=0.22, color=colour, alpha=0.35, label=name if i == 0 else None)
            ax.scatter([x] * len(ys), ys, color=colour, s=14, zorder=3)
    ax.axhline(0.5, ls=":", color="grey")
    ax.set_xticks(range(len(groups)), [label_of(k, varying) for k in groups], fontsize=8)
    ax.set_ylim(0.3, 0.8)
    ax.set_ylabel("held-out preference accuracy")
    ax.set_title(f"{title}\n(dots: seeds; bars: means)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True, help="prefix: writes <out>.md and <out>.png")
    p.add_argument("--title", default="")
    p.add_argument("--contrasts", default="", help="comparisons declared in advance, A:B,... by recorded algo "
                                                   "(paired by seed, Holm-adjusted, in every context with both)")
    p.add_argument("--within", default="", help="MuJoCo method settings the contrasts are made within, joined by "
                                                "commas (e.g. 'BC warm start,demo replay' for a recipe ablation)")
    p.add_argument("--where", action="append", default=[], metavar="SETTING=V1,V2",
                   help="only the runs whose recorded setting (a column of the table: algo, pairs, β, ...) is one of "
                        "the values; repeat for several settings (e.g. --where pairs=30,100 --where algo=dpo,rlhf)")
    args = p.parse_args()
    contrasts = [tuple(c.split(":", 1)) for c in args.contrasts.split(",") if c]
    if any(len(c) != 2 for c in contrasts):
        raise SystemExit(f"--contrasts={args.contrasts}: expected A:B pairs joined by commas")
    within = tuple(w.strip() for w in args.within.split(",") if w.strip())
    if unknown := [w for w in within if w not in METHOD or w == "algo"]:
        raise SystemExit(f"--within={args.within}: {unknown} are not method settings; expected some of "
                         f"{[k for k in METHOD if k != 'algo']}")
    runs = load_runs(args.roots)
    if not runs:
        raise SystemExit(f"no metrics.json under {[str(r) for r in args.roots]}")
    runs = select(runs, parse_where(args.where))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    llm = [m for m in runs if m.get("domain") == "llm"]
    mujoco = [m for m in runs if m.get("domain") != "llm"]
    parts = []
    if mujoco:
        parts.append(table(mujoco, contrasts, within))
        plot_curves(mujoco, args.out.with_suffix(".png"), args.title)
        if len({m.get("num_prefs") for m in mujoco} - {0, None}) > 1:
            plot_mujoco_scarcity(mujoco, args.out.with_name(args.out.name + "-pairs.png"), args.title)
    if llm:
        parts.append(llm_table(llm, contrasts))
        png = args.out.with_suffix(".png") if not mujoco else args.out.with_name(args.out.name + "-llm.png")
        if any("eval/gold_sampled" in m for m in llm):
            plot_llm_curves(llm, png, args.title)
            if len({m.get("num_prefs") for m in llm} - {0, None}) > 1:
                plot_llm_scarcity(llm, png.with_name(png.stem + "-pairs.png"), args.title)
        else:
            plot_llm_accuracy(llm, png, args.title)
    md = "\n\n".join(parts)
    args.out.with_suffix(".md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
