"""Evaluation videos (`loop.video=true`): one deterministic episode recorded with gymnasium's `RecordVideo`.

Training never renders, so it imports no OpenGL backend and runs on machines without one. A video needs one:
`choose_gl_backend` takes `MUJOCO_GL` when it is set, glfw when there is a display, else the first of egl and
osmesa that can make a context (each probed in a subprocess, because PyOpenGL binds its platform on first import
and cannot switch afterwards). It runs when the module is built, so a missing backend stops the run with one line
before any training, not after hours of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from aihf.errors import ConfigError

_PROBE = ("import os, sys; os.environ['MUJOCO_GL'] = sys.argv[1]; "
          "os.environ.setdefault('PYOPENGL_PLATFORM', sys.argv[1] if sys.argv[1] != 'glfw' else ''); "
          "import gymnasium as gym; e = gym.make('InvertedPendulum-v5', render_mode='rgb_array', width=32, height=32); "
          "e.reset(seed=0); assert e.render().shape == (32, 32, 3)")


def _works(backend: str) -> bool:
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    proc = subprocess.run([sys.executable, "-c", _PROBE, backend], capture_output=True, env=env, timeout=120)
    return proc.returncode == 0


def choose_gl_backend() -> str:
    """Pick (and export) the OpenGL backend MuJoCo renders with, or raise a one-line ConfigError."""
    chosen = os.environ.get("MUJOCO_GL")
    candidates = [chosen] if chosen else (["glfw"] if os.environ.get("DISPLAY") else ["egl", "osmesa"])
    for backend in candidates:
        if _works(backend):
            os.environ["MUJOCO_GL"] = backend
            if backend in ("egl", "osmesa"):
                os.environ["PYOPENGL_PLATFORM"] = backend
            return backend
    tried = ", ".join(candidates)
    raise ConfigError(f"loop.video=true needs an OpenGL backend for MuJoCo and none works here (tried MUJOCO_GL="
                      f"{tried}): install EGL or OSMesa (e.g. apt install libegl1 or libosmesa6), run with a display, "
                      f"or set loop.video=false")


def check_video_support() -> str:
    try:
        import moviepy  # noqa: F401  (RecordVideo writes mp4 files with it)
    except ImportError:
        raise ConfigError("loop.video=true needs moviepy to write mp4 files: pip install 'aihf[video]'") from None
    return choose_gl_backend()


@torch.no_grad()
def record_episode(policy, env_id: str, max_episode_steps: int | None, seed: int, folder: Path, name: str,
                   device: torch.device) -> tuple[Path, float, int]:
    """Record one deterministic episode to `folder/<name>-episode-0.mp4`; returns the file, the episode return and
    the frame rate."""
    from gymnasium.wrappers import RecordVideo
    env = RecordVideo(gym.make(env_id, max_episode_steps=max_episode_steps, render_mode="rgb_array"),
                      video_folder=str(folder), name_prefix=name, episode_trigger=lambda e: e == 0,
                      disable_logger=True)
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        act = policy.act(torch.as_tensor(obs, dtype=torch.float32, device=device)[None], deterministic=True)
        obs, reward, terminated, truncated, _ = env.step(act[0].cpu().numpy())
        total += float(reward)
        done = terminated or truncated
    fps = int(env.metadata.get("render_fps", 30))
    env.close()
    return folder / f"{name}-episode-0.mp4", total, fps


def log_video(loggers, path: Path, step: int, fps: int) -> None:
    """Send the video to W&B and TensorBoard when they are among the run's loggers (CSV keeps the file path)."""
    for logger in loggers:
        kind = type(logger).__name__
        if kind == "WandbLogger":
            logger.log_video("eval/video", [str(path)], step=step)
        elif kind == "TensorBoardLogger":
            from moviepy import VideoFileClip
            clip = VideoFileClip(str(path))
            frames = np.stack(list(clip.iter_frames()))  # (T, H, W, C) uint8
            clip.close()
            video = torch.from_numpy(frames).permute(0, 3, 1, 2)[None]  # (1, T, C, H, W)
            logger.experiment.add_video("eval/video", video, global_step=step, fps=fps)
