"""Measure finished MuJoCo runs' learned rewards again from their last checkpoints, at this commit, so that reward
metrics added since they ran (pair accuracy without the demonstrator's segments, say) cover them too:

    python -m aihf.mujoco.reevaluate RUN_DIR [RUN_DIR ...] --out DIR

Each run's configuration is composed again from its own command line (`.hydra/overrides.yaml`), the module is built
from it and loaded with `loop.init_from`'s checks (same env, preset and architecture), and the dataset must be the
one the run learned from (its sha256). Only the learned reward is measured again: its held-out metrics, its level on
the demonstrations and on the agent's latest steps (from the checkpoint's replay buffer), and the baselines beside
them. No env is stepped and no policy evaluated, so the scores and the history stay those the run recorded. A run
without a learned reward (sac, bc, the constant control) is copied as it is, so that DIR holds the whole figure.
The results go to `DIR/<sweep>/<run>/metrics.json`: the run's own metrics.json with the reward metrics replaced and
`reevaluation` (checkpoint, this commit, the values at training, and `not_reproduced`: those the new measurement does
not equal exactly, also printed). Where the run's first evaluation came before `learning_starts` (so before any
reward update), r_θ as initialised from the run's seed is measured too, before the checkpoint is loaded: where it
reproduces every reward metric recorded there, it is kept as `reevaluation.first_evaluation`, and the report reads
metrics added since from it. A run restored from records (`aihf.figures restore`: its metrics.json without
checkpoints) that was measured again before is carried over as it is, its `reevaluation` naming the commit that
measured it; one that was not is refused. Nothing is written into the runs; an existing output is skipped.
`python -m aihf.report DIR` then tabulates them.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from aihf.errors import ConfigError
from aihf.recompose import check_new_output, compose_run, config_changes, new_outputs, save_output


def _not_reproduced(recorded: dict, measured: dict, prefix: str = "") -> list[str]:
    """The recorded values that the new measurement does not equal exactly (same checkpoint, data and EPIC draws:
    anything else means the code measures differently now, and the re-measured table is not the trained one's)."""
    def same(a, b) -> bool:
        if isinstance(a, dict) and isinstance(b, dict):
            return all(same(v, b.get(k)) for k, v in a.items())
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b or (a is None and isinstance(b, float) and math.isnan(b))  # NaN is stored as null
    return [prefix + k for k, v in recorded.items() if k in measured and not same(v, measured[k])]


def _check_dataset(run: Path, recorded: str | None, path: Path) -> None:
    """Refuse a run whose data file changed since it trained, before the module is built (from the path the module
    would load)."""
    from aihf.mujoco.datasets import dataset_sha256
    sha = dataset_sha256(path) if path.is_file() else "missing"
    if recorded is None or recorded != sha:
        raise ConfigError(f"{run} learned from a dataset with sha256 {str(recorded)[:12]}, but {path} now has "
                          f"{sha[:12]}")


def carried_over(run: Path, record: dict) -> bool:
    """A record measured again before, whose run has no checkpoint (`aihf.figures restore` writes back metrics, not
    checkpoints): `reevaluate` copies it as it is."""
    return "at_training" in (record.get("reevaluation") or {}) and not (run / "checkpoints" / "last.ckpt").is_file()


def reevaluate(run: Path, out: Path, commit: str | None = None) -> dict:
    """`commit`: the code this process loaded (read at its start, so a commit made while it runs is not credited)."""
    from aihf.mujoco.datasets import run_data_path
    from aihf.mujoco.module import MuJoCoAIHF
    from aihf.provenance import git_commit, platform_record
    from aihf.report import first_evaluation
    commit = commit or git_commit()
    ckpt = run / "checkpoints" / "last.ckpt"
    trained = run / "metrics.json"
    if not trained.is_file():
        raise ConfigError(f"{run}: a finished run has metrics.json; it is missing")
    check_new_output(out)
    before = json.loads(trained.read_text())
    if "env_id" not in before:
        raise ConfigError(f"{run} is not a MuJoCo run (its metrics.json names no env_id); aihf.mujoco.reevaluate "
                          f"measures MuJoCo runs")
    record = dict(before)
    if carried_over(run, before):  # so that its `reevaluation` still names the commit that measured it
        save_output(out, record)
        return record
    if before.get("status", "finished") == "finished" and before.get("reward_updates"):
        if not ckpt.is_file():
            raise ConfigError(f"{run}: its learned reward is measured from checkpoints/last.ckpt, which is missing "
                              f"(its checkpoints deleted, or restored from records saved before it was measured "
                              f"again); to train it again, remove {run} and its line in the records file, and run "
                              f"the figure again")
        t0 = time.perf_counter()
        cfg = compose_run(run, [], out)
        if cfg.domain.name != "mujoco":
            raise ConfigError(f"{run} is a {cfg.domain.name} run; aihf.mujoco.reevaluate measures MuJoCo runs")
        changed = config_changes(run, cfg)
        if changed:  # a default changed since the run: the metrics would be of another setting
            raise ConfigError(f"{run}: composed again at this commit, {len(changed)} setting(s) differ from the run's "
                              f"own .hydra/config.yaml, e.g. {changed[0]}")
        subset = before.get("data_subset") or {}
        _check_dataset(run, subset.get("dataset_sha256"), run_data_path(cfg))
        torch.set_num_threads(cfg.loop.torch_threads)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)  # as aihf.app does: the run's initial weights
        module = MuJoCoAIHF(cfg)
        try:
            # r_θ as initialised, before the checkpoint is loaded, for a first evaluation before learning_starts (no
            # reward update can precede it): where it reproduces that evaluation, metrics added since get its value
            first = first_evaluation(before) or {}
            early = bool(first) and first["step"] < cfg.policy.learning_starts
            initial = ({f"eval/{k}": v for k, v in module.heldout_metrics(module.learned_reward).items()}
                       if early else {})
            module.init_from(str(ckpt))
            if module.reward_updates != before["reward_updates"] or module.final_metrics is None:
                raise ConfigError(f"{ckpt} is at {module.env_steps} env steps and {module.reward_updates} reward "
                                  f"updates, not the finished run's {before['reward_updates']}")
            drawn = {k: v for k, v in module.data.subset().items() if k != "dataset"}
            differ = [k for k, v in drawn.items() if subset.get(k) != v]
            if differ:
                raise ConfigError(f"{run}: composed again, its data subset differs from the one it trained on "
                                  f"({', '.join(differ)})")
            measured = module.reward_metrics()
            baselines = module.heldout_metrics.baselines()
            resampled = module.heldout_metrics.resampled(module.learned_reward)
        finally:
            module.teardown("reevaluate")
        record.update(measured)
        record["baselines"] = {**before.get("baselines", {}), **baselines}
        record["heldout_resampled"] = resampled
        at_training = {k: before[k] for k in measured if k in before}
        record["reevaluation"] = {"run": str(run), "checkpoint": str(ckpt), "git_commit": commit,
                                  "platform": platform_record(),
                                  "wall_s": time.perf_counter() - t0, "at_training": at_training,
                                  "not_reproduced": _not_reproduced(at_training, measured)
                                  + _not_reproduced(before.get("baselines", {}), baselines, "baselines/")
                                  + _not_reproduced(before.get("heldout_resampled", {}), resampled,
                                                    "heldout_resampled/")}
        # kept only where it reproduces every value recorded there and one of them is finite: a null or missing
        # record proves nothing
        first_differ = _not_reproduced({k: v for k, v in first.items() if k in initial}, initial)
        matched = [k for k in initial if isinstance(first.get(k), float) and math.isfinite(first[k])]
        if not early:
            record["reevaluation"]["first_evaluation_not_reproduced"] = ["first evaluation at or after learning_starts"]
        elif first_differ or not matched:
            record["reevaluation"]["first_evaluation_not_reproduced"] = first_differ or ["no finite reward metric"]
        else:
            record["reevaluation"]["first_evaluation"] = {"step": first["step"], **initial}
    else:
        why = ("no learned reward to measure" if not before.get("reward_updates")
               else f"status {before.get('status')}: no final reward to measure")
        record["reevaluation"] = {"run": str(run), "git_commit": commit, "copied": why}
    save_output(out, record)
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="finished MuJoCo run directories")
    p.add_argument("--out", type=Path, required=True, help="a new folder; each run goes to <out>/<sweep>/<run>")
    args = p.parse_args()
    from aihf.provenance import git_commit
    commit = git_commit()
    refused = []
    for run, out in new_outputs(args.runs, args.out, lambda r: f"{r.parent.name}/{r.name}"):
        if not (run / "metrics.json").is_file():
            print(f"{run}: not finished (no metrics.json): skipped", flush=True)
            continue
        try:
            r = reevaluate(run, out, commit)
        except ConfigError as exc:  # the others are measured all the same; the step fails at the end
            print(f"Refused: {exc}", flush=True)
            refused.append(run)
            continue
        shown = {k.removeprefix("eval/"): round(r[k], 3) for k in (
            "eval/epic", "eval/pref_accuracy_equal_length", "eval/pref_accuracy_equal_length_without_demonstrator")
            if r.get(k) is not None}
        info = r["reevaluation"]
        wall, differ = info.get("wall_s"), info.get("not_reproduced") or []
        if carried_over(run, r):
            check = f"; measured at {str(info.get('git_commit'))[:7]} before it was restored: carried over as it is"
            check += f" (not reproduced then: {', '.join(differ)})" if differ else ""
            wall = None
        else:
            check = (f"; NOT REPRODUCED (recorded at training vs now): {', '.join(differ)}" if differ else
                     f"; {len(info['at_training'])} recorded metrics and the baselines reproduced"
                     if "at_training" in info else "")
            if "first_evaluation" in info:
                check += "; r_θ at the first evaluation reproduced"
            elif "first_evaluation_not_reproduced" in info:
                check += ("; r_θ at the first evaluation not reproduced "
                          f"({', '.join(info['first_evaluation_not_reproduced'])})")
        print(f"{out}: {shown or info.get('copied')}{check}" + (f" ({wall:.0f} s)" if wall else ""), flush=True)
    if refused:
        raise ConfigError(f"{len(refused)} run(s) could not be measured (each named above), e.g. {refused[0]}")


if __name__ == "__main__":
    try:
        main()
    except ConfigError as exc:
        raise SystemExit(f"Error: {exc}") from None
