"""A diverging run stops with one line naming the term and the step, exit code 3, its last good checkpoint kept
and metrics.json valid JSON (null, never NaN)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aihf.app import train
from aihf.errors import TrainingDiverged
from conftest import fast_cfg

ROOT = Path(__file__).resolve().parents[1]


def test_huge_learning_rate_stops_the_run(hopper_data, tmp_path):
    d = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "algo=sac", "debug=fast", f"data.path={hopper_data}",
                           "policy.critic_lr=1e8", "trainer.enable_checkpointing=true", "loop.checkpoint_every=100",
                           "loop.torch_threads=1", f"hydra.run.dir={d}"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 3
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: training diverged: losses/") and " at step " in line and "last finite value" in line
    step = int(line.split(" at step ")[1].split()[0])
    assert step >= 200  # updates start at learning_starts=200: the random phase was fine
    metrics = json.loads((d / "metrics.json").read_text())  # strict JSON: NaN would not parse as a number here
    assert metrics["status"] == "diverged" and metrics["error"] in line
    ckpt = torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["aihf"]["progress"] < step
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())  # the last good state


def test_non_finite_loss_is_named_with_its_last_finite_value(hopper_data, tmp_path):
    module_cfg = fast_cfg("sac", hopper_data, tmp_path)
    from aihf.mujoco.module import MuJoCoAIHF
    m = MuJoCoAIHF(module_cfg)
    m.check_finite({"losses/qf_loss": 1.5})
    with pytest.raises(TrainingDiverged, match=r"losses/qf_loss = inf at step 0 \(last finite value 1.5\)"):
        m.check_finite({"losses/qf_loss": math.inf})
    with torch.no_grad():
        m.policy.critic.net[0].weight[0, 0, 0] = math.nan
    with pytest.raises(TrainingDiverged, match="parameter policy.critic.net.0.weight"):
        m.check_finite({"losses/qf_loss": 1.0})
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"


def test_finished_metrics_are_strict_json(hopper_data, tmp_path):
    train(fast_cfg("aihf", hopper_data, tmp_path, ["loop.torch_threads=1"]))
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["status"] == "finished"


def test_language_model_run_stops_on_a_non_finite_loss(sort_data, tmp_path):
    from conftest import llm_cfg
    with pytest.raises(TrainingDiverged, match=r"^losses/sft_nll = nan at step 1$|= (nan|inf) at step \d+$"):
        train(llm_cfg("sft", sort_data, tmp_path, ["llm.policy.lr=1e30"]))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["domain"] == "llm"
