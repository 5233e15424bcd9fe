"""Aggregate runs (their metrics.json) into a markdown table over seeds and PNG learning curves.

    python -m aihf.report <runs dir> [more dirs] --out docs/results/hopper --title "Hopper-v5"

MuJoCo runs are grouped by (env, algo, number of demonstrations, number of preference pairs, weighting), with mean ± std
over seeds of the final true return and expert-normalised score, plus the learned reward's held-out accuracy.
Language-model runs (domain llm) are grouped by (task, algo, demonstrations, preference pairs, weighting), with the
gold reward of sampled and greedy generations, KL(π‖π_ref), held-out preference accuracy and demonstration
log-likelihood.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

ORDER = ["sac", "bc", "irl", "rlhf", "aihf"]
LLM_ORDER = ["reference", "sft", "spin", "dpo", "ipo", "rpo", "rlhf", "aihf", "aihf_dpo", "aihf_selfplay", "rm"]
LLM_PREFS = {"sft": False, "spin": False, "reference": False}


def load_runs(roots: list[Path]) -> list[dict]:
    runs = []
    for root in roots:
        for f in sorted(Path(root).rglob("metrics.json")):
            m = json.loads(f.read_text())
            m["_path"] = str(f.parent)
            runs.append(m)
    return runs


def group_key(m: dict) -> tuple:
    demos = m["num_demos"] if m["algo"] not in ("sac",) else 0
    prefs = m["num_prefs"] if m["algo"] in ("aihf", "rlhf") else 0
    weighting = m.get("weighting", "mean") if m["algo"] == "aihf" else "–"
    return m["env_id"], m["algo"], demos, prefs, weighting, m.get("num_envs", 1)


def fmt(values: list[float], digits: int = 1) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return "–"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0:.{digits}f}"


def table(runs: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for m in runs:
        groups[group_key(m)].append(m)
    keys = sorted(groups, key=lambda k: (k[0], ORDER.index(k[1]) if k[1] in ORDER else 99, k[3], k[5]))
    lines = ["| env | algo | demos | pref pairs | weighting | envs | seeds | env steps | true return | normalised score "
             "| held-out pref acc. | return corr. | train env steps/s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k in keys:
        g = groups[k]
        steps = sorted({m["env_steps"] if m["algo"] != "bc" else m["policy_updates"] for m in g})
        step_txt = "/".join(str(s) for s in steps) + (" (grad steps)" if k[1] == "bc" else "")
        sps = [m["env_steps"] / m["train_wall_s"] for m in g if m.get("train_wall_s") and m["algo"] != "bc"]
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {k[4]} | {k[5]} | {len(g)} | {step_txt} "
                     f"| {fmt([m['eval/return_mean'] for m in g])} "
                     f"| {fmt([m.get('eval/normalised_score') for m in g], 3)} "
                     f"| {fmt([m.get('eval/pref_accuracy') for m in g], 3)} "
                     f"| {fmt([m.get('eval/return_correlation') for m in g], 3)} | {fmt(sps, 0) if sps else '–'} |")
    return "\n".join(lines)


def llm_key(m: dict) -> tuple:
    prefs = m["num_prefs"] if LLM_PREFS.get(m["algo"], True) else 0
    return m["task"], m["algo"], m["num_demos"], prefs, m.get("weighting", "mean")


def llm_table(runs: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for m in runs:
        groups[llm_key(m)].append(m)
    keys = sorted(groups, key=lambda k: (k[0], k[3] if k[3] else -1,
                                         LLM_ORDER.index(k[1]) if k[1] in LLM_ORDER else 99))
    lines = ["| task | algo | demos | pref pairs | weighting | seeds | gold (sampled) | gold (greedy) | KL(π‖π_ref) "
             "| held-out pref acc. | demo log-lik./token |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for k in keys:
        g = groups[k]
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3] or '–'} | {k[4]} | {len(g)} "
                     f"| {fmt([m.get('eval/gold_sampled') for m in g], 3)} "
                     f"| {fmt([m.get('eval/gold_greedy') for m in g], 3)} "
                     f"| {fmt([m.get('eval/kl') for m in g], 2)} "
                     f"| {fmt([m.get('eval/pref_accuracy') for m in g], 3)} "
                     f"| {fmt([m.get('eval/demo_logp_per_token') for m in g], 3)} |")
    return "\n".join(lines)


def plot_llm_curves(runs: list[dict], out: Path, title: str, metric: str = "eval/gold_sampled") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for m in runs:
        groups[llm_key(m)].append(m)
    sizes = sorted({k[3] for k in groups if k[3]}) or [0]
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), sharey=True, squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for k in sorted(groups, key=lambda k: LLM_ORDER.index(k[1]) if k[1] in LLM_ORDER else 99):
            if k[3] not in (0, size):
                continue
            curves = [[(h["step"], h[metric]) for h in m["history"] if metric in h] for m in groups[k]]
            steps = sorted(set.intersection(*[{s for s, _ in c} for c in curves]))
            if not steps:
                continue
            ys = np.array([[dict(c)[s] for s in steps] for c in curves])
            ax.plot(steps, ys.mean(0), marker="o", ms=3, label=k[1])
            ax.fill_between(steps, ys.mean(0) - ys.std(0), ys.mean(0) + ys.std(0), alpha=0.15)
        ax.set_title(f"{title}: {size} preference pairs" if size else title)
        ax.set_xlabel("training steps (SFT warm start, reward fit, then the preset's steps)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(metric.split("/")[-1].replace("_", " "))
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def plot_curves(runs: list[dict], out: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for m in runs:
        if m["algo"] != "bc":
            groups[group_key(m)].append(m)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k in sorted(groups, key=lambda k: (ORDER.index(k[1]) if k[1] in ORDER else 99, k[3])):
        curves = [[(h["step"], h.get("eval/normalised_score", h["eval/return_mean"])) for h in m["history"]]
                  for m in groups[k]]
        steps = sorted(set.intersection(*[{s for s, _ in c} for c in curves]))
        if not steps:
            continue
        ys = np.array([[dict(c)[s] for s in steps] for c in curves])
        label = f"{k[1]}" + (f" (P={k[3]})" if k[3] else "") + (f" {k[4]}" if k[1] == "aihf" else "") + \
            (f" {k[5]} envs" if k[5] != 1 else "")
        ax.plot(steps, ys.mean(0), label=label)
        ax.fill_between(steps, ys.mean(0) - ys.std(0), ys.mean(0) + ys.std(0), alpha=0.2)
    for m in runs:
        if m["algo"] == "bc":
            ax.axhline(m.get("eval/normalised_score", np.nan), ls=":", color="grey")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("expert-normalised score")
    ax.set_title(title + " (dotted: bc runs)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True, help="prefix: writes <out>.md and <out>.png")
    p.add_argument("--title", default="")
    args = p.parse_args()
    runs = load_runs(args.roots)
    if not runs:
        raise SystemExit(f"no metrics.json under {[str(r) for r in args.roots]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    llm = [m for m in runs if m.get("domain") == "llm"]
    mujoco = [m for m in runs if m.get("domain") != "llm"]
    parts = []
    if mujoco:
        parts.append(table(mujoco))
        plot_curves(mujoco, args.out.with_suffix(".png"), args.title)
    if llm:
        parts.append(llm_table(llm))
        plot_llm_curves(llm, args.out.with_suffix(".png") if not mujoco else
                        args.out.with_name(args.out.name + "-llm.png"), args.title)
    md = "\n\n".join(parts)
    args.out.with_suffix(".md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
