"""After-the-fact readings of a MuJoCo preference-scarcity study, from its records file (not declared contrasts).

Paired by seed over the runs of `aihf` and `rlhf` in their most common configuration (recipe and data) at every pair
count recorded: the per-seed slope of the score (last 20 %, and final) and of EPIC on log10 N (the pairs are nested
within a seed, so this is the paired trend estimate), each preset's difference from the constant-reward control and
from the recipe's oracle (`sac_recipe`), EPIC, EPIC on the lower rungs and pair accuracy without the demonstrator
against each run's own linear demonstration classifier, EPIC against its MLP classifier, accuracy against the
`policy` baseline, the change on the lower rungs from each reward's first evaluation (the same for `irl`), and
`aihf − rlhf` on accuracy. Every line is an unadjusted one-sample t-test over seeds with its 95 % t-interval and
the count of positive differences: many tests, so any one small p is weak evidence.
docs/results.md quotes them as post hoc.

    python bench/study_posthoc.py docs/results/runs/halfcheetah.jsonl
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from aihf.figures import read_records
from aihf.report import mujoco_config, score_of
from aihf.stats import t_interval, t_test_p

ACC = "pref_accuracy_equal_length_without_demonstrator"


# The settings every compared run shares with the study's `aihf` runs (the recipe's and the data's), so that a
# records file that also holds ablations, other recipes or other budgets contributes only the study's cells.
SHARED = ("env", "recipe", "BC warm start", "demo replay", "weighting", "β", "α learned", "demos", "demo policy",
          "teacher", "dataset", "budget", "envs")
# `sac` and `bc` take no recipe: they share the data and the budget only.
NO_RECIPE = ("env", "dataset", "budget", "envs")


def load(path: Path) -> dict[tuple[str, int], dict[int, dict]]:
    """(algo, pairs) -> {seed: metrics} for the runs in the most common configuration of `aihf`'s runs (with
    `sac` and `bc` on the same data and budget). A cell whose runs differ in any other recorded setting (λ_D, λ_P,
    ...) is refused rather than pooled."""
    runs = list(read_records(path).values())
    configs = [mujoco_config(m) for m in runs]
    aihf = Counter(tuple(c[k] for k in SHARED) for c in configs if c["algo"] == "aihf").most_common(2)
    if not aihf:
        raise SystemExit(f"{path}: no aihf run recorded")
    if len(aihf) == 2 and aihf[0][1] == aihf[1][1]:
        raise SystemExit(f"{path}: aihf's runs are split evenly between two configurations ({aihf[0][1]} runs each): "
                         f"which one is the study is ambiguous")
    reference = dict(zip(SHARED, aihf[0][0]))
    by: dict[tuple[str, int], dict[int, dict]] = {}
    settings: dict[tuple[str, int], dict] = {}
    for m, c in zip(runs, configs):
        keys = NO_RECIPE if c["algo"] in ("sac", "bc") else SHARED
        if any(c[k] != reference[k] for k in keys):
            continue
        cell = (m["algo"], m["num_prefs"])
        if settings.setdefault(cell, c) != c:
            apart = sorted(k for k in c if c[k] != settings[cell][k])
            raise SystemExit(f"{path}: {m['algo']} runs at {m['num_prefs']} pairs differ in {', '.join(apart)}: "
                             f"more than one configuration in one cell")
        if m["seed"] in by.setdefault(cell, {}):
            raise SystemExit(f"{path}: two {m['algo']} runs at {m['num_prefs']} pairs, seed {m['seed']}, in one "
                             f"configuration")
        by[cell][m["seed"]] = m
    for ref in (("constant", 0), ("sac_recipe", 0), ("irl", 0)):
        if ref not in by:
            print(f"(no {ref[0]} runs in this configuration: its lines are left out)")
    return by


def paired(d) -> str:
    d = np.asarray(d, float)
    mean, low, high = t_interval(d)
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] p {t_test_p(d):.3f} ({(d > 0).sum()} of {len(d)} > 0)"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("records", type=Path)
    args = ap.parse_args(argv)
    by = load(args.records)
    counts = sorted(n for a, n in by if a == "aihf" and (("rlhf", n) in by))
    seeds = sorted(set.intersection(*(set(by[(a, n)]) for a in ("aihf", "rlhf") for n in counts)))
    if len(counts) < 2 or len(seeds) < 2:
        raise SystemExit(f"{args.records}: need aihf and rlhf at 2 or more pair counts over 2 or more seeds; found "
                         f"counts {counts}, seeds {seeds}")
    x = np.log10(counts)
    print(f"pair counts {counts}, seeds {seeds}")

    def slope(value) -> list[float]:
        return [np.polyfit(x, [value(n, s) for n in counts], 1)[0] for s in seeds]

    def runs(a, n, s):
        return by[(a, n)][s]
    headline = lambda m: score_of(m, headline=True)  # noqa: E731
    for name, f in (("score, last 20 %", headline), ("final score", score_of), ("EPIC", lambda m: m["eval/epic"])):
        for a in ("aihf", "rlhf"):
            print(f"{name}: {a} means", [round(float(np.mean([f(runs(a, n, s)) for s in seeds])), 3) for n in counts])
            print(f"{name}: {a} slope per decade", paired(slope(lambda n, s, a=a: f(runs(a, n, s)))))
        print(f"{name}: aihf − rlhf slope per decade",
              paired(slope(lambda n, s: f(runs("aihf", n, s)) - f(runs("rlhf", n, s)))))
    for ref in ("constant", "sac_recipe"):
        if (ref, 0) in by:
            for a in ("aihf", "rlhf"):
                for n in counts:
                    print(f"{a} − {ref} at {n}", paired([headline(runs(a, n, s)) - headline(by[(ref, 0)][s])
                                                          for s in seeds]))
    for a, ns in (("aihf", counts), ("rlhf", counts), ("irl", [0])):
        for n in ns:
            if (a, n) not in by:
                continue
            g = [runs(a, n, s) for s in seeds]
            for key in ("epic", "epic_lower_rungs", ACC):
                print(f"{a} {n}: {key} − linear demo classifier",
                      paired([m["eval/" + key] - m["baselines"]["baseline/demo_classifier/" + key] for m in g]))
            print(f"{a} {n}: {ACC} − policy baseline",
                  paired([m["eval/" + ACC] - m["baselines"]["baseline/policy/" + ACC] for m in g]))
            print(f"{a} {n}: EPIC − MLP demo classifier",
                  paired([m["eval/epic"] - m["baselines"]["baseline/demo_mlp_classifier/epic"] for m in g]))
            print(f"{a} {n}: epic_lower_rungs − its first evaluation",
                  paired([m["eval/epic_lower_rungs"] - m["reevaluation"]["first_evaluation"]["eval/epic_lower_rungs"]
                          for m in g]))
    for n in counts:
        print(f"{ACC}: aihf − rlhf at {n}",
              paired([runs("aihf", n, s)["eval/" + ACC] - runs("rlhf", n, s)["eval/" + ACC] for s in seeds]))


if __name__ == "__main__":
    main()
