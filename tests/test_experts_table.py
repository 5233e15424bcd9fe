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


def test_an_experts_record_makes_the_same_table_once_its_run_directory_is_gone(tmp_path, capsys):
    import json
    import shutil

    import pytest

    from aihf.mujoco.experts import read_records, record_of, records_of, save_records, table

    run = _run(tmp_path, "cheetah", [(10000, 100.0, 60.0), (20000, 250.0, 120.0)])
    records = tmp_path / "experts.jsonl"
    save_records([record_of(run)], records)
    from_run, curves = table(records_of([run]), tmp_path / "no-data")
    shutil.rmtree(run)
    from_records, _ = table(records_of([str(records)]), tmp_path / "no-data")
    assert from_records == from_run
    assert "| HalfCheetah-v5 | 20,000 | 0.03 h |" in from_run and "(no dataset)" in from_run
    assert curves["HalfCheetah-v5"][:2] == ([10000, 20000], [100.0, 250.0])

    # saving an env again replaces its record; another env's is kept
    other = dict(read_records(records)[0], env="Ant-v5", steps=[5000], returns=[1.0])
    save_records([other], records)
    save_records([dict(other, returns=[2.0])], records)
    assert [(r["env"], r["returns"]) for r in read_records(records)] == [("Ant-v5", [2.0]),
                                                                         ("HalfCheetah-v5", [100.0, 250.0])]

    records.write_text(records.read_text() + json.dumps({"env": "Walker2d-v5", "steps": [1], "returns": []}) + "\n")
    with pytest.raises(SystemExit, match=r"experts.jsonl:3: an expert record needs .* missing wall_s, machine, curve"):
        read_records(records)


def test_the_table_names_the_commits_that_trained_collected_and_shipped_each_expert(tmp_path):
    import json

    from aihf.mujoco.experts import record_of, table
    from aihf.provenance import PROJECT, last_commit_of
    first = _run(tmp_path, "a", [(10000, 100.0, 60.0)])
    second = _run(tmp_path, "b", [(20000, 200.0, 120.0)])
    (tmp_path / "a" / "metrics.json").write_text(json.dumps({"git_commit": "a" * 40}))
    (tmp_path / "b" / "metrics.json").write_text(json.dumps({"git_commit": "a" * 40,
                                                             "git_commit_resumed": "b" * 40 + "-dirty"}))
    record = record_of(f"{first}{os.pathsep}{second}")
    assert record["commits"] == ["a" * 40, "b" * 40 + "-dirty"]  # in order, each once
    data = tmp_path / "data"
    data.mkdir()
    meta = {"policies": [{"name": "random", "env_steps": 0, "eval_return": None},
                         {"name": "r20000", "env_steps": 20000, "eval_return": 200.0}], "expert": "r20000",
            "expert_return": 210.0, "expert_return_std": 1.0, "random_return": -5.0, "counts": {"demos": 10},
            "git_commit": "c" * 40}
    (data / "HalfCheetah-v5.json").write_text(json.dumps(meta))
    md, _ = table([record], data)
    assert md.splitlines()[2].endswith("| aaaaaaa, bbbbbbb-dirty / ccccccc / not committed |")
    # a record from before commits were kept, a dataset from before collect wrote its commit
    (data / "HalfCheetah-v5.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "git_commit"}))
    assert table([dict(record, commits=[])], data)[0].splitlines()[2].endswith(
        "| not recorded / not recorded / not committed |")
    # a tracked file: the commit that last changed it
    shipped = last_commit_of(PROJECT / "pyproject.toml")
    assert shipped is not None and len(shipped) == 40 and last_commit_of(tmp_path / "nowhere.npz") is None
