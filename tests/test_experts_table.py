"""The expert table reads an expert trained in parts (each part continued with loop.init_from in its own run)."""

import os

from aihf.mujoco.experts import env_of, eval_curve


def _run(root, name, rows):
    (root / name / "csv").mkdir(parents=True)
    lines = ["step,eval/return_mean,time/wall_s"] + [f"{s},{r},{w}" for s, r, w in rows]
    (root / name / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    (root / name / "csv" / "hparams.yaml").write_text("cfg:\n  env:\n    id: HalfCheetah-v5\n")
    return str(root / name)


def test_an_expert_in_parts_has_one_curve_in_env_step_order(tmp_path):
    first = _run(tmp_path, "a", [(10000, 100.0, 60.0), (20000, 200.0, 120.0), (30000, 250.0, 180.0)])
    # the continuation starts from the first part's 20k checkpoint: its 30k evaluation replaces the first's
    second = _run(tmp_path, "b", [(30000, 300.0, 190.0), (40000, 400.0, 250.0)])
    steps, returns, wall = eval_curve(f"{first}{os.pathsep}{second}")
    assert steps == [10000, 20000, 30000, 40000]
    assert returns == [100.0, 200.0, 300.0, 400.0]
    assert wall == 250.0
    assert env_of(f"{first}{os.pathsep}{second}") == "HalfCheetah-v5"
    assert eval_curve(first) == ([10000, 20000, 30000], [100.0, 200.0, 250.0], 180.0)
