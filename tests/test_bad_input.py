"""Bad input stops the run before training with one line naming the problem; earlier outputs are untouched."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from aihf.app import train
from aihf.errors import ConfigError
from conftest import compose_cfg, fast_cfg

ROOT = Path(__file__).resolve().parents[1]


def copy_dataset(src: Path, dst: Path, **changes) -> Path:
    with np.load(src, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(changes)
    np.savez(dst, **arrays)
    dst.with_suffix(".json").write_text(src.with_suffix(".json").read_text())
    return dst


def test_misspelt_key_is_named():
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as exc:
        compose_cfg(["algo.demo_wieght=1"])
    assert "demo_wieght" in str(exc.value) + str(exc.value.__cause__)


def test_wrong_type_is_named():
    with pytest.raises((ConfigCompositionException, ValidationError)) as exc:
        compose_cfg(["algo.demo_weight=abc"])
    assert "demo_weight" in str(exc.value) + str(exc.value.__cause__)


def test_run_py_reports_misspelt_key_in_one_line():
    proc = subprocess.run([sys.executable, "run.py", "algo.demo_wieght=1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "demo_wieght" in proc.stderr


def test_observation_dimension_mismatch(hopper_data, tmp_path):
    bad = copy_dataset(hopper_data, tmp_path / "bad.npz",
                       obs=np.zeros((np.load(hopper_data)["obs"].shape[0], 5), np.float32))
    with pytest.raises(ConfigError, match="observations have dimension 5.*Hopper-v5 has observation dimension 11"):
        train(fast_cfg("aihf", bad, tmp_path))


def test_action_dimension_mismatch(hopper_data, tmp_path):
    bad = copy_dataset(hopper_data, tmp_path / "bad.npz",
                       act=np.zeros((np.load(hopper_data)["act"].shape[0], 6), np.float32))
    with pytest.raises(ConfigError, match="actions have dimension 6"):
        train(fast_cfg("irl", bad, tmp_path))


def test_missing_data_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        train(fast_cfg("aihf", tmp_path / "nope.npz", tmp_path))


def test_corrupt_data_file(hopper_data, tmp_path):
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(hopper_data.read_bytes()[:500])
    with pytest.raises(ConfigError, match="corrupt"):
        train(fast_cfg("aihf", bad, tmp_path))


def test_nan_in_data(hopper_data, tmp_path):
    obs = np.load(hopper_data)["obs"].copy()
    obs[7, 2] = np.nan
    bad = copy_dataset(hopper_data, tmp_path / "nan.npz", obs=obs)
    with pytest.raises(ConfigError, match="obs contains NaN or inf \\(first at row 7\\)"):
        train(fast_cfg("aihf", bad, tmp_path))


def test_preset_needing_preferences_given_none(hopper_data, tmp_path):
    with pytest.raises(ConfigError, match="data.num_prefs=0"):
        train(fast_cfg("rlhf", hopper_data, tmp_path, ["data.num_prefs=0"]))


def test_unknown_env_id(hopper_data, tmp_path):
    with pytest.raises(ConfigError, match="env.id='Hoppper-v5'"):
        train(fast_cfg("sac", hopper_data, tmp_path, ["env.id=Hoppper-v5"]))


def test_collect_never_overwrites(hopper_data, tmp_path):
    from aihf.mujoco.collect import collect
    before = hopper_data.read_bytes()
    cfg = compose_cfg(["task=collect", f"collect.ladder_dir={tmp_path}", f"collect.output={hopper_data}"])
    with pytest.raises(ConfigError, match="already exists"):
        collect(cfg)
    assert hopper_data.read_bytes() == before


def test_a_dataset_write_killed_midway_leaves_nothing_that_blocks_the_rerun(hopper_data, tmp_path, monkeypatch):
    """Interrupted while compressing (a killed collect, a full disk): no truncated .npz and no lone .json stay behind
    to make the rerun refuse with "already exists"; the rerun writes the same dataset."""
    from aihf.mujoco.datasets import load_dataset
    data = load_dataset(hopper_data)
    out = tmp_path / "d.npz"
    real = np.savez_compressed

    def dies_midway(file, **arrays):
        real(file, **dict(list(arrays.items())[:2]))  # part of the arrays reach the disk
        assert not out.exists()  # ... not under the dataset's name: a SIGKILL now would leave nothing there
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        data.save(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.setattr(np, "savez_compressed", real)
    data.save(out)
    again = load_dataset(out)
    assert again.metadata == data.metadata
    assert all(np.array_equal(again.arrays[k], v) for k, v in data.arrays.items())


def test_bad_data_leaves_earlier_run_untouched(hopper_data, tmp_path):
    train(fast_cfg("sac", hopper_data, tmp_path, ["loop.total_env_steps=300"]))
    snapshot = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError):
        train(fast_cfg("aihf", tmp_path / "missing.npz", tmp_path))
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == snapshot


def test_deepspeed_without_its_package_is_refused_in_one_line(monkeypatch):
    import importlib.util

    from aihf.checks import check_strategy
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^trainer.strategy=deepspeed_stage_2 needs the deepspeed package: "
                                          r"pip install deepspeed$"):
        check_strategy(compose_cfg(["domain=llm", "algo=dpo", "trainer=deepspeed"]))
    check_strategy(compose_cfg(["domain=llm", "algo=dpo", "trainer=fsdp"]))  # a GPU config passes the checks
