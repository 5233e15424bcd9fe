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
    pattern = r"^(loss/\w+|train/policy_grad_norm) = (nan|inf) at step \d+ \(last finite value [-\d]"
    with pytest.raises(TrainingDiverged, match=pattern):
        train(llm_cfg("sft", sort_data, tmp_path, ["llm.policy.lr=1e30"]))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["domain"] == "llm"


class _NanGradient(torch.autograd.Function):
    """The identity whose gradient is NaN: a finite loss with a broken backward pass."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.nan


def _poison(monkeypatch, owner, name, bad_calls: set[int], corrupt=lambda out: out * math.nan):
    """Make the given calls (1-based) of owner.name return a corrupted value (NaN by default), as a bad batch would."""
    real, calls = getattr(owner, name), {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        return corrupt(out) if calls["n"] in bad_calls else out
    monkeypatch.setattr(owner, name, poisoned)
    return calls


def test_skip_mode_drops_exactly_the_bad_updates(hopper_data, tmp_path, monkeypatch):
    from aihf.mujoco.module import MuJoCoAIHF
    snapshots = []  # the critic's weights at each reward lookup, i.e. before each critic update
    real = MuJoCoAIHF.batch_rewards

    def watched(self, batch):
        snapshots.append([p.detach().clone() for p in self.policy.critic.parameters()])
        return real(self, batch)
    monkeypatch.setattr(MuJoCoAIHF, "batch_rewards", watched)
    _poison(monkeypatch, MuJoCoAIHF, "batch_rewards", {5, 6, 7})  # NaN rewards: three critic losses NaN
    train(fast_cfg("sac", hopper_data, tmp_path, ["loop.nonfinite=skip", "loop.torch_threads=1"]))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["skipped_updates"] == 3
    same = [all(torch.equal(a, b) for a, b in zip(s, t)) for s, t in zip(snapshots, snapshots[1:])]
    assert same[4:7] == [True, True, True]  # the updates after lookups 5, 6 and 7 left the critic untouched
    assert not any(same[:4]) and not any(same[7:20])  # every other update changed it
    csv = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "charts/skipped_updates" in csv.splitlines()[0]


def test_stop_mode_names_the_poisoned_term(hopper_data, tmp_path, monkeypatch):
    from aihf.mujoco.module import MuJoCoAIHF
    _poison(monkeypatch, MuJoCoAIHF, "batch_rewards", {5})
    # updates start at learning_starts=200, one per env step: the 5th reward lookup is at env step 204
    with pytest.raises(TrainingDiverged, match=r"^losses/qf_loss = nan at step 204 \(last finite value \d"):
        train(fast_cfg("sac", hopper_data, tmp_path, ["loop.torch_threads=1", "loop.steps_per_iteration=1"]))
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"


def test_language_model_skip_mode_counts_and_finishes(sort_data, tmp_path, monkeypatch):
    from conftest import llm_cfg
    from aihf import objectives
    _poison(monkeypatch, objectives, "nll_loss", {2})
    train(llm_cfg("sft", sort_data, tmp_path, ["llm.train.nonfinite=skip"]))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["skipped_updates"] == 1


def test_language_model_stop_names_the_last_finite_value(sort_data, tmp_path, monkeypatch):
    from conftest import llm_cfg
    from aihf import objectives
    _poison(monkeypatch, objectives, "nll_loss", {2})
    with pytest.raises(TrainingDiverged, match=r"^loss/sft = nan at step 2 \(last finite value \d"):
        train(llm_cfg("sft", sort_data, tmp_path))


def test_language_model_divergence_keeps_the_last_good_checkpoint(sort_data, tmp_path, monkeypatch):
    from conftest import llm_cfg
    from aihf import objectives
    _poison(monkeypatch, objectives, "nll_loss", {3})
    short = ["algo.bc_warmstart_steps=2"]  # a budget of 2 + 3 steps
    ckpts = [*short, "trainer.enable_checkpointing=true", "llm.train.checkpoint_every=1", "llm.train.keep_checkpoints=2"]
    with pytest.raises(TrainingDiverged, match=r"^loss/sft = nan at step 3 .*the last checkpoint in .*checkpoints"):
        train(llm_cfg("sft", sort_data, tmp_path / "run", ckpts))
    d = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in d.glob("step_*.ckpt")) == ["step_0000000001.ckpt", "step_0000000002.ckpt"]
    last = torch.load(d / "last.ckpt", weights_only=False)
    assert last["aihf_llm"]["steps_done"] == 2
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    monkeypatch.undo()  # the checkpoint is usable: a run continues from it to the end of its budget
    train(llm_cfg("sft", sort_data, tmp_path / "next", [*short, f"loop.init_from={d / 'last.ckpt'}"]))
    metrics = json.loads((tmp_path / "next" / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["steps"] == 5


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_language_model_nan_gradient_of_a_finite_loss(sort_data, tmp_path, monkeypatch, mode):
    from conftest import llm_cfg
    from aihf import objectives
    _poison(monkeypatch, objectives, "nll_loss", {2}, corrupt=_NanGradient.apply)
    cfg = llm_cfg("sft", sort_data, tmp_path, [f"llm.train.nonfinite={mode}"])
    if mode == "stop":
        with pytest.raises(TrainingDiverged, match=r"^train/policy_grad_norm = nan at step 2 \(last finite value \d"):
            train(cfg)
    else:
        train(cfg)
        metrics = json.loads((tmp_path / "metrics.json").read_text())
        assert metrics["skipped_updates"] == 1 and metrics["status"] == "finished"


def test_skip_mode_catches_a_nan_gradient_of_a_finite_loss(hopper_data, tmp_path, monkeypatch):
    from aihf.mujoco.sac import SACPolicy
    _poison(monkeypatch, SACPolicy, "critic_loss", {3}, corrupt=lambda out: (_NanGradient.apply(out[0]), out[1]))
    train(fast_cfg("sac", hopper_data, tmp_path, ["loop.nonfinite=skip", "loop.torch_threads=1"]))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["skipped_updates"] == 1
