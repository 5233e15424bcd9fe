"""Fixtures: a tiny dataset made by aihf's own pipeline (random-weight ladder → task=collect), and config
composition through Hydra's compose API, exactly as run.py composes it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from aihf.config import register_configs  # noqa: E402
from aihf.mujoco.sac import TanhGaussianActor  # noqa: E402

CONF = str(Path(__file__).resolve().parents[1] / "conf")
register_configs()


def compose_cfg(overrides: list[str], run_dir: Path | None = None):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir) if run_dir else "."
    return cfg


def write_ladder(ladder: Path, env_id="Hopper-v5", obs_dim=11, act_dim=3, rungs=3, hidden=(16,)):
    """Rungs with random weights whose output scale grows with the rung, so returns differ."""
    ladder.mkdir(parents=True, exist_ok=True)
    for i in range(rungs):
        torch.manual_seed(i)
        actor = TanhGaussianActor(obs_dim, act_dim, list(hidden), -torch.ones(act_dim), torch.ones(act_dim))
        with torch.no_grad():
            actor.mean.weight.mul_(1 + 3 * i)
        torch.save({"actor": actor.state_dict(), "env_id": env_id, "env_steps": 1000 * i, "eval_return": float(i),
                    "hidden": list(hidden), "obs_dim": obs_dim, "act_dim": act_dim,
                    "action_low": [-1.0] * act_dim, "action_high": [1.0] * act_dim}, ladder / f"step_{i:08d}.pt")
    return ladder


@pytest.fixture(scope="session")
def hopper_data(tmp_path_factory) -> Path:
    from aihf.mujoco.collect import collect
    root = tmp_path_factory.mktemp("data")
    ladder = write_ladder(root / "ladder")
    out = root / "hopper.npz"
    cfg = compose_cfg([f"collect.ladder_dir={ladder}", f"collect.output={out}", "task=collect",
                       "env.max_episode_steps=60", "collect.num_demos=2", "collect.rollouts_per_rung=3",
                       "collect.random_rollouts=3", "collect.num_pairs=60", "collect.num_heldout_pairs=20",
                       "teacher.return_scale=1.0"])
    collect(cfg)
    return out


def fast_cfg(algo: str, data: Path, run_dir: Path, extra: list[str] = ()):
    data_override = [f"data.path={data}"] if data is not None else []
    return compose_cfg([f"algo={algo}", "debug=fast", *data_override, "data.num_prefs=20",
                        "algo.reward_pretrain_steps=3", *extra], run_dir)


@pytest.fixture(scope="session")
def sort_data(tmp_path_factory) -> Path:
    """A small copy of the built-in sort task, made by the same generator as data/llm/sort."""
    from aihf.llm.sort_task import build
    out = tmp_path_factory.mktemp("sort")
    build(out, seed=1, num_demos=64, num_prefs=64, num_heldout_prefs=16, num_heldout_demos=16, num_eval_prompts=8)
    return out


def llm_cfg(algo: str, data: Path, run_dir: Path, extra: list[str] = ()):
    """An LLM preset for a few steps of each stage on a tiny model, offline."""
    paths = [f"llm.data.{k}={data / (k + '.jsonl')}" for k in ("demos", "prefs", "heldout_demos", "heldout_prefs",
                                                                  "eval_prompts")]
    return compose_cfg(["domain=llm", f"algo={algo}", *paths, "llm.train.policy_steps=3", "llm.train.batch_size=4",
                        "llm.reward.batch_size=4", "llm.train.rl_prompts=2", "llm.train.rl_samples=2",
                        "llm.train.eval_every=0", "llm.train.eval_samples=1", "llm.policy.hidden_size=32",
                        "llm.train.max_new_tokens=8", "trainer.enable_progress_bar=false",
                        "trainer.enable_checkpointing=false", "llm.train.torch_threads=1", *extra], run_dir)


def fit(module, tmp_path):
    import pytorch_lightning as pl
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(module)
    return trainer
