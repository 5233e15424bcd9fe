"""What SAC's own training logs say about runs that score low: the policy's entropy at its first logged update, the
temperature α and the critic's mean Q on its batches at the end, and the largest mean Q of the run.

An exploratory check on finished MuJoCo runs (docs/results.md, HalfCheetah), read from each run's csv/metrics.csv;
records restored from docs/results/runs/*.jsonl have no logs and are named as skipped. The mean Q is over the
critic's training batch, so under demo replay a quarter of it is the demonstration's states; on HalfCheetah (no
termination, γ = 0.99) a return of R per 1,000 steps puts an honest Q near R / 1,000 / (1 − γ) = R / 10.

    python bench/critic_logs.py runs/halfcheetah/halfcheetah-oracle-recipe-s*/0-* runs/halfcheetah/halfcheetah-no-pairs-s*/1-sac-*
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def read(run: Path) -> dict[str, float] | None:
    import pandas as pd
    log = run / "csv" / "metrics.csv"
    if not (log.is_file() and (run / "metrics.json").is_file()):  # a restored record, or a run not finished
        return None
    df = pd.read_csv(log)
    losses = df.dropna(subset=["losses/q_mean"]).sort_values("step")
    if losses.empty:
        return None
    metrics = json.loads((run / "metrics.json").read_text())
    return {"algo": metrics["algo"], "seed": metrics["seed"],
            "entropy, first update": float(losses["losses/entropy"].iloc[0]),
            "α, end": float(losses["losses/alpha"].iloc[-1]),
            "mean Q, end": float(losses["losses/q_mean"].iloc[-1]),
            "mean Q, largest": float(losses["losses/q_mean"].max()),
            "episodic return, last 5": float(df["charts/episodic_return"].dropna().iloc[-5:].mean()),
            "final score": float(metrics["eval/normalised_score"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    args = p.parse_args()
    rows, skipped = [], []
    for run in args.runs:
        row = read(run)
        (rows.append(row) if row else skipped.append(run.name))
    if not rows:
        raise SystemExit("no run with a training log among the arguments")
    cols = [k for k in rows[0] if k not in ("algo", "seed")]
    cell = lambda x: f"{x:.3f}" if abs(x) < 10 else f"{x:.0f}"  # noqa: E731
    print("| algo | seed | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 2))
    for r in sorted(rows, key=lambda r: (r["algo"], r["seed"])):
        print(f"| {r['algo']} | {r['seed']} | " + " | ".join(cell(r[c]) for c in cols) + " |")
    for algo in sorted({r["algo"] for r in rows}):
        mine = [r for r in rows if r["algo"] == algo]
        print(f"| {algo} | mean of {len(mine)} | " + " | ".join(cell(float(np.mean([r[c] for r in mine])))
                                                              for c in cols) + " |")
    if skipped:
        print(f"\nskipped (no training log, a restored record, or not finished): {', '.join(skipped)}")


if __name__ == "__main__":
    main()
