"""The expert table and learning curves: what each shipped dataset's expert is and how it was trained.

    python -m aihf.mujoco.experts <expert run dir> [...] --data data/mujoco --out docs/results/experts
    python -m aihf.mujoco.experts experts/hopper:experts/hopper-2 ...   # an expert trained in parts
    python -m aihf.mujoco.experts experts/ant --save docs/results/runs/experts.jsonl     # keep its record
    python -m aihf.mujoco.experts docs/results/runs/experts.jsonl --out docs/results/experts   # table from records

An expert trained in parts (each part continued from the last one's checkpoint with loop.init_from into a run
directory of its own) is named by its run directories joined by ":", as for collect.ladder_dir: its curve is
the parts' evaluations in env-step order (a later part's at a step it shares with an earlier one), its wall time
the last part's (init_from carries the earlier parts' time).

An expert's record is what the table needs of its run: env, evaluation curve, training wall time and the machine
that trained it (the one `--save` runs on, or `--machine`). Experts take hours and their run directories are not
committed, so `--save` keeps the record in a small committed JSON-lines file (one line per env; saving an env again replaces its
line), and the table is made from that file once the run directories are gone.

For each expert (a run directory, or a record) and the dataset collected from it (`<data>/<env id>.npz` +
`.json`): env steps trained, training wall time and machine, the expert rung, its return over the dataset's
deterministic demonstrations (mean ± std: collect them with collect.num_demos=10 for 10 episodes), the random
policy's return, and the ladder's rungs. Writes <out>.md and the curves to <out>.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np

from aihf.paths import written_whole
from aihf.provenance import machine

RECORD_KEYS = ("env", "steps", "returns", "wall_s", "machine", "curve")


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


def record_of(run: str, trained_on: str | None = None) -> dict:
    """An expert run's record; its machine is this one unless `trained_on` names the one that trained it."""
    steps, returns, wall = eval_curve(run)
    return {"env": env_of(run), "steps": steps, "returns": returns, "wall_s": wall, "machine": trained_on or machine(),
            "curve": "every training-time evaluation (5 deterministic episodes)",
            "runs": [Path(part).name for part in run.split(os.pathsep)], "commits": run_commits(run)}


def run_commits(run: str) -> list[str]:
    """The commits the expert's parts trained at, as their metrics.json recorded them (a part stopped before its end
    wrote none), in order, each once."""
    commits = []
    for part in run.split(os.pathsep):
        f = Path(part) / "metrics.json"
        m = json.loads(f.read_text()) if f.is_file() else {}
        for c in (m.get("git_commit"), m.get("git_commit_resumed")):
            if c and c not in commits:
                commits.append(c)
    return commits


def short(commit: str) -> str:
    sha, _, dirty = commit.partition("-")
    return sha[:7] + (f"-{dirty}" if dirty else "")


def read_records(path: Path) -> list[dict]:
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
            missing = [key for key in RECORD_KEYS if key not in record]
        except ValueError as exc:
            raise SystemExit(f"{path}:{n}: not JSON ({exc})") from None
        if missing:
            raise SystemExit(f"{path}:{n}: an expert record needs {', '.join(RECORD_KEYS)}; missing {', '.join(missing)}")
        if len(record["steps"]) != len(record["returns"]):
            raise SystemExit(f"{path}:{n}: {len(record['steps'])} steps but {len(record['returns'])} returns")
        records.append(record)
    return records


def save_records(new: list[dict], path: Path) -> None:
    """Add the records to the file, each replacing the record of its env; written atomically."""
    by_env = {r["env"]: r for r in (read_records(path) if path.is_file() else [])}
    by_env.update({r["env"]: r for r in new})
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path) as tmp:
        tmp.write_text("".join(json.dumps(by_env[env], sort_keys=True) + "\n" for env in sorted(by_env)))


def records_of(sources: list[str], trained_on: str | None = None) -> list[dict]:
    """Records from run directories (an expert's parts joined by ':') and from `.jsonl` record files, in order."""
    out = []
    for source in sources:
        out += read_records(Path(source)) if source.endswith(".jsonl") else [record_of(source, trained_on)]
    return out


def table(records: list[dict], data: Path) -> tuple[str, dict]:
    from aihf.provenance import last_commit_of
    lines = ["| env | env steps trained | training wall time | machine | expert rung (env steps) | expert return, "
             "deterministic (mean ± std, episodes) | random return | rungs (env steps: eval return) | commits: expert "
             "trained / data collected / data shipped |",
             "|---|---|---|---|---|---|---|---|---|"]
    curves = {}
    for rec in records:
        env, steps = rec["env"], rec["steps"]
        curves[env] = (steps, rec["returns"], rec["curve"])
        trained = (f"| {env} | {max(steps) if steps else 0:,} | {rec['wall_s'] / 3600:.2f} h | {rec['machine']} ")
        meta_file = data / f"{env}.json"
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            expert = next(p for p in meta["policies"] if p["name"] == meta["expert"])
            ladder = sorted(meta["policies"][1:], key=lambda p: p["env_steps"])
            rungs = ", ".join(f"{p['env_steps'] // 1000}k: {p['eval_return']:.0f}" for p in ladder)
            ret = (f"{meta['expert_return']:.1f} ± {meta['expert_return_std']:.1f} "
                   f"({meta['counts']['demos']})")
            shipped = last_commit_of(data / f"{env}.npz")
            commits = " / ".join((", ".join(map(short, rec.get("commits") or [])) or "not recorded",
                                  short(meta["git_commit"]) if meta.get("git_commit") else "not recorded",
                                  short(shipped) if shipped else "not committed"))
            lines.append(trained + f"| {expert['env_steps']:,} | {ret} | {meta['random_return']:.1f} | {rungs} "
                                   f"| {commits} |")
        else:
            lines.append(trained + "| – | (no dataset) | – | – | – |")
    return "\n".join(lines), curves


def plot(curves: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.8), squeeze=False)
    for ax, (env, (steps, returns, what)) in zip(axes[0], curves.items()):
        ax.plot(np.array(steps) / 1000, returns, marker="o" if len(steps) < 30 else None, label=what)
        ax.set_title(f"{env}: SAC expert")
        ax.set_xlabel("env steps (thousands)")
        ax.set_ylabel("deterministic return (5 episodes)")
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+",
                   help="expert run directories (one expert's parts joined by ':') or .jsonl files of their records")
    p.add_argument("--data", type=Path, default=Path("data/mujoco"))
    p.add_argument("--out", type=Path, help="write the table to <out>.md and the curves to <out>.png")
    p.add_argument("--save", type=Path, help="add the experts' records to this .jsonl file (an env's replaces its own)")
    p.add_argument("--machine", help="the machine that trained the run directories given (default: this one)")
    args = p.parse_args()
    if not (args.out or args.save):
        p.error("nothing to do: give --out, --save or both")
    records = records_of(args.sources, args.machine)
    if args.save:
        save_records(records, args.save)
        print(f"{args.save}: records of {', '.join(r['env'] for r in records)}")
    if args.out:
        md, curves = table(records, args.data)
        md += ("\n\nRungs show the return of their training-time evaluation (5 deterministic episodes). The expert "
               "rung is the best over fresh deterministic episodes of the rungs with the best training-time "
               "evaluations (the dataset metadata's expert_selection, where recorded), and its return is measured "
               "afresh over the dataset's deterministic demonstrations. One thread per run, beside other runs on "
               "the same machine, so wall times are not a speed benchmark. Curves: "
               + "; ".join(f"{env}: {what}" for env, (_, _, what) in curves.items()) + ".\n")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(md)
        plot(curves, args.out.with_suffix(".png"))
        print(md)


if __name__ == "__main__":
    main()
