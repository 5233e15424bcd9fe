"""Evaluation videos: recorded when asked, and a machine that cannot render stops the run with one line before
any training (training itself never needs OpenGL)."""

import json

import pytest

from aihf.app import train
from aihf.errors import ConfigError
from aihf.mujoco import video
from aihf.mujoco.module import MuJoCoAIHF
from conftest import fast_cfg


def test_training_imports_no_gl_backend():
    """The training and evaluation code paths load no OpenGL module (a fresh process, with MUJOCO_GL unset)."""
    import os
    import subprocess
    import sys
    code = ("import sys, numpy as np, torch; import aihf.mujoco.module; "
            "from aihf.mujoco.envs import make_vector_env; from aihf.mujoco.evaluation import PolicyEvaluator; "
            "from aihf.mujoco.sac import SACPolicy; e = make_vector_env('Hopper-v5', 2, 20); e.reset(seed=0); "
            "[e.step(np.zeros((2, 3), np.float32)) for _ in range(30)]; "
            "p = SACPolicy(11, 3, [-1.0] * 3, [1.0] * 3, hidden=(8,)); "
            "PolicyEvaluator('Hopper-v5', 20, 0).evaluate(p, 2, torch.device('cpu')); "
            "gl = [m for m in sys.modules if m == 'OpenGL' or m.startswith(('OpenGL.', 'mujoco.egl', 'mujoco.osmesa'))]; "
            "assert not gl, gl")
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_unusable_backend_stops_the_run_before_training(hopper_data, tmp_path, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "no-such-backend")
    with pytest.raises(ConfigError, match="loop.video=true needs an OpenGL backend.*no-such-backend"):
        MuJoCoAIHF(fast_cfg("sac", hopper_data, tmp_path, ["loop.video=true"]))
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.json").exists()


def test_final_evaluation_video(hopper_data, tmp_path, monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    try:
        video.choose_gl_backend()
    except ConfigError:
        pytest.skip("no OpenGL backend on this machine")
    pytest.importorskip("moviepy")
    train(fast_cfg("sac", hopper_data, tmp_path, ["loop.total_env_steps=300", "loop.video=true"]))
    path = json.loads((tmp_path / "metrics.json").read_text())["video"]
    assert path.endswith(".mp4") and (tmp_path / "videos").is_dir()
    assert (tmp_path / "videos" / path.split("/")[-1]).stat().st_size > 1000
