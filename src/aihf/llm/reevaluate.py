"""Evaluate finished LLM runs again from their last checkpoints, all at this commit and with other evaluation
settings (more KL samples, say), so that runs trained at different commits are measured by one code and every
held-out pair's outcome is recorded for paired comparisons:

    python -m aihf.llm.reevaluate RUN_DIR [RUN_DIR ...] --out DIR [llm.train.eval_prompts=200 ...]

Each run's configuration is composed again from its own command line (`.hydra/overrides.yaml`) at this commit, the
module is built from it and loaded with `loop.init_from`'s checks (same data, preset and architecture), and the
evaluation runs with the run's own evaluation seed. Only evaluation settings may be overridden. The results go to
`DIR/<run name>/metrics.json`: the run's own metrics.json with the evaluation's metrics replaced, `heldout_pairs`,
and `reevaluation` (checkpoint, overrides, this commit). Nothing is written into the runs; an existing output is
never overwritten. `python -m aihf.report DIR` then tabulates them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from aihf.errors import ConfigError
from aihf.recompose import check_new_output, compose_run, new_outputs, save_output
# What a re-evaluation may change: how much it samples and in what batches, never what was trained or on what data.
EVAL_KEYS = ("llm.train.eval_prompts", "llm.train.eval_samples", "llm.train.eval_batch_size",
             "llm.train.max_new_tokens", "llm.train.sample_table_rows", "llm.train.torch_threads")
# Entries of the run's metrics.json that describe its training, not its evaluation, and so are kept.
KEEP = ("domain", "task", "algo", "seed", "weighting", "beta", "num_demos", "num_prefs", "demo_weight", "pref_weight",
        "git_commit", "git_commit_resumed", "platform", "steps", "sft_updates", "reward_updates", "policy_updates",
        "skipped_updates", "heldout_rows_with_training_prompts_dropped", "data_subset")


def check_overrides(overrides: list[str]) -> None:
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if "=" not in o or key not in EVAL_KEYS:
            raise ConfigError(f"reevaluate: {o!r} is not an evaluation setting; expected KEY=VALUE with KEY one of "
                              f"{', '.join(EVAL_KEYS)}")


def reevaluate(run: Path, out: Path, overrides: list[str], commit: str | None = None) -> dict:
    """`commit`: the code this process loaded (read at its start, so a commit made while it runs is not credited)."""
    from aihf.llm.module import LLMAIHF
    from aihf.provenance import git_commit, platform_record
    commit = commit or git_commit()
    check_overrides(overrides)
    ckpt = run / "checkpoints" / "last.ckpt"
    trained = run / "metrics.json"
    if not ckpt.is_file() or not trained.is_file():
        raise ConfigError(f"{run}: a finished run has checkpoints/last.ckpt and metrics.json; "
                          f"{'the checkpoint' if not ckpt.is_file() else 'metrics.json'} is missing")
    check_new_output(out)
    before = json.loads(trained.read_text())
    cfg = compose_run(run, overrides, out)
    if cfg.domain.name != "llm":
        raise ConfigError(f"{run} is a {cfg.domain.name} run; reevaluate evaluates LLM runs")
    t0 = time.perf_counter()
    module = LLMAIHF(cfg)
    module.init_from(str(ckpt))
    if module.steps_done != before.get("steps"):
        raise ConfigError(f"{ckpt} is at step {module.steps_done}, but the run finished at step {before.get('steps')}")
    held = len(module.data["heldout_prefs"])
    if before.get("num_prefs") and len(module.data["prefs"]) != before["num_prefs"]:
        raise ConfigError(f"{run}: composed again, the run has {len(module.data['prefs'])} training pairs, but it "
                          f"trained on {before['num_prefs']}: the data or its split changed since")
    metrics = module.seeded_evaluate()
    record = {**{k: before[k] for k in KEEP if k in before}, **metrics, "heldout_pairs": module.pair_outcomes,
              "reevaluation": {"run": str(run), "checkpoint": str(ckpt), "overrides": overrides,
                               "git_commit": commit, "platform": platform_record(), "heldout_pairs": held,
                               "wall_s": time.perf_counter() - t0,
                               "at_training": {k: before[k] for k in metrics if k in before}}}
    save_output(out, record)
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="finished LLM run directories")
    p.add_argument("--out", type=Path, required=True, help="a new folder; each run's results go to <out>/<run name>")
    args, overrides = p.parse_known_args()
    check_overrides(overrides)
    from aihf.provenance import git_commit
    commit = git_commit()
    for run, out in new_outputs(args.runs, args.out, lambda r: r.name):
        r = reevaluate(run, out, overrides, commit)
        shown = {k: round(r[k], 4) for k in ("eval/pref_accuracy", "baseline/length_pref_accuracy", "eval/kl",
                                             "eval/kl_se") if k in r}
        print(f"{run}: {shown} ({r['reevaluation']['wall_s']:.0f} s)", flush=True)


if __name__ == "__main__":
    try:
        main()
    except ConfigError as exc:
        raise SystemExit(f"Error: {exc}") from None
