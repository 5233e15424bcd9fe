"""loop.resume for the language-model domain: a run killed with SIGKILL right after a checkpoint and resumed ends
bit-identical to the uninterrupted run (weights, optimisers' effect, evaluation history, CSV log, samples), at an
evaluation step, at the end of the SFT stage and in the main stage; resuming a finished run says so."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RUN_PY = str(ROOT / "run.py")
# SIGKILL this process as soon as the checkpoint at step $AIHF_KILL_AT is complete.
KILL_AT = f"""
import os, runpy, signal, sys
from aihf.callbacks import CheckpointEvery
_save = CheckpointEvery.save
def save(self, trainer, progress):
    path = _save(self, trainer, progress)
    if progress == int(os.environ["AIHF_KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return path
CheckpointEvery.save = save
sys.argv = [{RUN_PY!r}, *sys.argv[1:]]
runpy.run_path({RUN_PY!r}, run_name="__main__")
"""


def _args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    paths = [f"llm.data.{k}={data / (k + '.jsonl')}" for k in ("demos", "prefs", "heldout_demos", "heldout_prefs",
                                                                  "eval_prompts")]
    # steps 1–2 SFT, 3 reward pre-fit, 4–7 RLOO with a reward step each; evaluations at 3 and 6 and the end
    return ["domain=llm", "algo=aihf", *paths, "algo.bc_warmstart_steps=2", "algo.reward_pretrain_steps=1",
            "llm.train.policy_steps=4", "llm.train.eval_every=3", "llm.train.batch_size=4", "llm.reward.batch_size=4",
            "llm.train.rl_prompts=2", "llm.train.rl_samples=2", "llm.train.eval_samples=1",
            "llm.train.max_new_tokens=6", "llm.policy.hidden_size=32", "llm.train.torch_threads=1",
            "llm.train.checkpoint_every=1", "llm.train.keep_checkpoints=10", "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run_dir}", *extra]


def _run(args: list[str], kill_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", KILL_AT] if kill_at is not None else [sys.executable, RUN_PY]
    if kill_at is not None:
        env["AIHF_KILL_AT"] = str(kill_at)
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def _csv(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as fh:
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in csv.DictReader(fh)]


def _history(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in h.items() if not k.startswith("time/")}
            for h in json.loads((run_dir / "metrics.json").read_text())["history"]]


@pytest.fixture(scope="module")
def uninterrupted(sort_data, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("llm_resume") / "full"
    proc = _run(_args(sort_data, run_dir))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir


@pytest.mark.parametrize("kill_at", [3, 2, 5], ids=["evaluation-step", "end-of-sft", "main-stage"])
def test_killed_and_resumed_run_equals_the_uninterrupted_one(kill_at, uninterrupted, sort_data, tmp_path):
    run_dir = tmp_path / "run"
    killed = _run(_args(sort_data, run_dir), kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL and not (run_dir / "metrics.json").exists()
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["aihf_llm"]["progress"] == kill_at
    resumed = _run(_args(sort_data, run_dir, "loop.resume=auto"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ours = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    theirs = torch.load(uninterrupted / "checkpoints" / "last.ckpt", weights_only=False)
    differ = [k for k in theirs["state_dict"] if not torch.equal(ours["state_dict"][k], theirs["state_dict"][k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
    assert _history(run_dir) == _history(uninterrupted)  # every evaluation, the one at the resume step included
    assert _csv(run_dir) == _csv(uninterrupted)
    assert (run_dir / "samples.jsonl").read_text() == (uninterrupted / "samples.jsonl").read_text()


def test_resuming_a_finished_run_says_so(uninterrupted, sort_data):
    before = (uninterrupted / "metrics.json").read_text()
    proc = _run(_args(sort_data, uninterrupted, "loop.resume=auto"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "is finished (7 of 7 steps)" in proc.stdout
    assert (uninterrupted / "metrics.json").read_text() == before


def test_the_evaluation_schedule_does_not_change_training(sort_data, tmp_path):
    """Evaluations sample from their own stream: the same run evaluated every 2 steps or only at the end ends with
    bitwise the same weights (which is why a resumed run may change llm.train.eval_every)."""
    from aihf.app import train
    from conftest import llm_cfg
    extra = ["algo.bc_warmstart_steps=2", "algo.reward_pretrain_steps=1", "llm.train.policy_steps=3",
             "trainer.enable_checkpointing=true"]
    train(llm_cfg("aihf", sort_data, tmp_path / "rare", extra))
    train(llm_cfg("aihf", sort_data, tmp_path / "often", [*extra, "llm.train.eval_every=2"]))
    rare, often = (torch.load(tmp_path / d / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
                   for d in ("rare", "often"))
    assert all(torch.equal(rare[k], often[k]) for k in rare)
    assert len(json.loads((tmp_path / "often" / "metrics.json").read_text())["history"]) == 3  # steps 2, 4, 6


def test_the_commit_a_run_started_at_is_its_provenance_and_a_resume_under_other_code_is_named(sort_data, tmp_path,
                                                                                              monkeypatch):
    """metrics.json names the code a run started with (read when its module is built, not when it finishes, so
    commits made while it trains are not credited with it); a resume under another commit is recorded beside it."""
    from aihf import provenance
    from aihf.llm.module import LLMAIHF
    from conftest import llm_cfg
    monkeypatch.setattr(provenance, "git_commit", lambda: "aaa")
    import aihf.llm.module as llm_module
    monkeypatch.setattr(llm_module, "git_commit", lambda: "aaa")
    module = LLMAIHF(llm_cfg("sft", sort_data, tmp_path))
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["aihf_llm"]["git_commit"] == "aaa"
    monkeypatch.setattr(provenance, "git_commit", lambda: "bbb")  # committed since, or continued elsewhere
    assert provenance.commit_record(module.started_commit) == {"git_commit": "aaa", "git_commit_resumed": "bbb"}
    monkeypatch.setattr(llm_module, "git_commit", lambda: "bbb")
    resumed = LLMAIHF(llm_cfg("sft", sort_data, tmp_path))
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.started_commit == "aaa"
    monkeypatch.setattr(provenance, "git_commit", lambda: "aaa")
    assert provenance.commit_record(resumed.started_commit) == {"git_commit": "aaa"}
