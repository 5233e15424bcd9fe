"""loop.resume: a run killed with SIGKILL and resumed ends exactly where the same run uninterrupted ends.

The runs are real `run.py` processes (Hydra, the CSV logger, the checkpoint callback and the exit codes as a user
gets them). They are started together and shared by the tests of this file:

A  the uninterrupted run (1200 env steps, a checkpoint every 300, an evaluation every 600);
B  the same command, SIGKILLed from outside soon after its first checkpoint (300) appears, as soon as it has also
   logged a later step (which the resumed run logs again), then resumed (loop.resume=auto);
C  the same command, SIGKILLed from inside right after writing its first checkpoint, before Lightning has logged
   that step (the worst moment for a crash), then resumed with a smaller budget (loop.total_env_steps=600);
E  loop.resume=auto in an empty directory with a 600-step budget: a fresh run;
M  a copy of the killed C, resumed with a different network (policy.hidden): refused;
D  a copy of the finished A, resumed with a larger budget (1500); and B, once finished, is resumed again.
C's resumption, E and D run in this process (`aihf.app.train` on the config run.py composes), which saves
interpreter start-ups (about 5 s each); the others are separate processes, started together where they can be.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from aihf.app import train
from aihf.errors import ConfigError
from conftest import compose_cfg, fast_cfg

RUN_PY = str(Path(__file__).resolve().parents[1] / "run.py")
BASE = ["algo=aihf", "debug=fast", "data.num_prefs=20", "algo.reward_pretrain_steps=3",
        "trainer.enable_checkpointing=true", "loop.checkpoint_every=300", "loop.total_env_steps=1200",
        "loop.eval_every=600", "loop.torch_threads=1"]
TIMEOUT = 300  # seconds for any one process: a hang fails the test instead of blocking the suite
# wall-clock time, the only state a resume may change; and the commits a run records, provenance rather than
# state, which differ when a commit is made in the checkout while the test's runs start
WALL_KEYS = ("time/wall_s", "train_wall_s", "wall_s", "git_commit", "git_commit_resumed")
EVAL_STEPS = [600, 1200]

# Run as a script: SIGKILL this process right after the first checkpoint is complete (last.ckpt in place),
# before Lightning logs the metrics of that step.
KILL_AFTER_FIRST_CHECKPOINT = f"""
import os, runpy, signal, sys
from aihf.callbacks import CheckpointEvery
_save = CheckpointEvery.save
def save(self, trainer, progress):
    path = _save(self, trainer, progress)
    os.kill(os.getpid(), signal.SIGKILL)
    return path
CheckpointEvery.save = save
sys.argv = [{RUN_PY!r}, *sys.argv[1:]]
runpy.run_path({RUN_PY!r}, run_name="__main__")
"""


def _env() -> dict:
    return {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}


class Proc:
    """A run.py process with its output in files (pipes could fill up and block it)."""

    def __init__(self, name: str, args: list[str], logs: Path, cwd: Path, script: str = RUN_PY):
        self.name = name
        self.out, self.err = logs / f"{name}.out", logs / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.popen = subprocess.Popen([sys.executable, script, *args], stdout=out, stderr=err, cwd=cwd,
                                          env=_env())

    def wait(self) -> int:
        return self.popen.wait(timeout=TIMEOUT)

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


def _args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [*BASE, f"data.path={data}", f"hydra.run.dir={run_dir}", *extra]


def _in_process_cfg(data: Path, run_dir: Path, *extra: str):
    """The config run.py composes from _args(data, run_dir, *extra)."""
    return compose_cfg([*BASE, f"data.path={data}", *extra], run_dir)


def _finished(proc: Proc) -> Proc:
    rc = proc.wait()
    assert rc == 0, f"{proc.name} exited with {rc}:\n{proc.stderr[-3000:]}"
    return proc


def _logged_steps(path: Path) -> list[int]:
    """The steps of the complete rows of a metrics.csv that its run may be writing right now."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    if not lines:
        return []
    header = lines[0].split(",")
    if "step" not in header:
        return []
    i = header.index("step")
    fields = [line.split(",") for line in lines[1:]]
    return [int(f[i]) for f in fields if len(f) == len(header) and f[i].isdigit()]


def _progress(ckpt: Path) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["aihf"]["progress"]


def _ckpts(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


@pytest.fixture(scope="module")
def runs(hopper_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    logs, cwd = root / "logs", root / "cwd"
    logs.mkdir()
    cwd.mkdir()
    killer = root / "kill_after_first_checkpoint.py"
    killer.write_text(KILL_AFTER_FIRST_CHECKPOINT)
    d = {k: root / k for k in "ABCE"}
    out = {"dirs": d, "root": root, "cwd": cwd, "logs": logs, "data": hopper_data}
    procs: list[Proc] = []

    def start(name, *extra, script=RUN_PY, run_dir=None):
        procs.append(Proc(name, _args(hopper_data, run_dir or d[name[0]], *extra), logs, cwd, script))
        return procs[-1]

    try:
        a = start("A")
        b = start("B")
        c = start("C", script=str(killer))
        last_b, csv_b = d["B"] / "checkpoints" / "last.ckpt", d["B"] / "csv" / "metrics.csv"
        deadline = time.monotonic() + TIMEOUT
        while not (last_b.exists() and max(_logged_steps(csv_b), default=0) > 300):
            assert b.popen.poll() is None, f"B ended before it was killed:\n{b.stderr[-3000:]}"
            assert time.monotonic() < deadline, "B wrote no checkpoint"
            time.sleep(0.01)
        os.kill(b.popen.pid, signal.SIGKILL)
        out["B_killed"] = {"rc": b.wait(), "metrics_json": (d["B"] / "metrics.json").exists(),
                           "progress": _progress(last_b), "checkpoints": _ckpts(d["B"]),
                           "logged": _logged_steps(csv_b)}
        out["C_killed"] = {"rc": c.wait(), "metrics_json": (d["C"] / "metrics.json").exists(),
                           "progress": _progress(d["C"] / "checkpoints" / "last.ckpt"),
                           "checkpoints": _ckpts(d["C"])}
        out["B_record"] = (d["B"] / ".hydra" / "overrides.yaml").read_bytes()
        b2 = start("B_resumed", "loop.resume=auto")
        # M: a copy of the killed C, resumed with a different network: refused
        d["M"] = root / "M"
        shutil.copytree(d["C"], d["M"], copy_function=shutil.copy2)
        out["M_before"] = _snapshot(d["M"])
        mismatch = start("mismatch", f"loop.resume={d['M']}", "policy.hidden=[16,16]", run_dir=root / "mismatch_out")
        d["E"].mkdir()
        for name in "CE":  # C: resume; E: an empty directory
            train(_in_process_cfg(hopper_data, d[name], "loop.resume=auto", "loop.total_env_steps=600"))
        out["procs"] = {p.name: _finished(p) for p in (a, b2)}
        out["procs"]["mismatch"] = mismatch
        out["mismatch_rc"] = mismatch.wait()
        yield out
    finally:
        for p in procs:
            p.kill()


def _snapshot(run_dir: Path) -> dict:
    """Modification time and bytes of a run's files (Hydra's own .hydra/ and run.log aside)."""
    files = [p for p in sorted(run_dir.rglob("*")) if p.is_file() and ".hydra" not in p.parts and p.name != "run.log"]
    return {str(p.relative_to(run_dir)): (p.stat().st_mtime_ns, p.read_bytes()) for p in files}


def _without_wall(x):
    if isinstance(x, dict):
        return {k: _without_wall(v) for k, v in x.items() if k not in WALL_KEYS}
    if isinstance(x, list):
        return [_without_wall(v) for v in x]
    return x


def _assert_same(a, b, where: str) -> None:
    """Exact equality of nested checkpoint content (tensors bit for bit, NaN equal to NaN)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"{where}: nan != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _load(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def _assert_same_final_state(x: Path, y: Path) -> None:
    cx, cy = _load(x), _load(y)
    assert cx["state_dict"].keys() == cy["state_dict"].keys()
    different = [k for k, v in cx["state_dict"].items() if not torch.equal(v, cy["state_dict"][k])]
    assert not different, f"state_dict tensors that differ: {different}"
    _assert_same(cx["optimizer_states"], cy["optimizer_states"], "optimizer_states")
    sx, sy = cx["aihf"], cy["aihf"]
    # the physics of the episodes in progress (MjData also holds timers, so compare its state, not its bytes)
    ex, ey = sx["rollout"].pop("envs"), sy["rollout"].pop("envs")
    assert len(ex) == len(ey)
    for i, (u, v) in enumerate(zip(ex, ey)):
        du, dv = (pickle.loads(s["mjdata"].numpy().tobytes()) for s in (u, v))
        for field in ("qpos", "qvel", "act", "ctrl", "qacc_warmstart", "time"):
            assert np.array_equal(getattr(du, field), getattr(dv, field)), f"env {i}: mjData.{field} differs"
        _assert_same({k: u[k] for k in u if k != "mjdata"}, {k: v[k] for k in v if k != "mjdata"}, f"env {i}")
    # replay buffer, episodes in progress, generators, counters, evaluation history
    _assert_same(_without_wall(sx), _without_wall(sy), "checkpoint['aihf']")


def _csv(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _steps(rows: list[dict]) -> list[int]:
    return [int(r["step"]) for r in rows]


def _assert_same_csv(x: list[dict], y: list[dict]) -> None:
    """Same step column; equal values in every column but wall-clock time and steps per second."""
    assert _steps(x) == _steps(y)
    for rx, ry in zip(x, y):
        keys = {k for k in (*rx, *ry) if not k.startswith("time/") and k != "charts/SPS"}
        diff = {k: (rx.get(k, ""), ry.get(k, "")) for k in keys if rx.get(k, "") != ry.get(k, "")}
        assert not diff, f"step {rx['step']}: {diff}"


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# -- the killed run resumes exactly --------------------------------------------------------------------------------
def test_killed_run_died_before_finishing(runs):
    killed = runs["B_killed"]
    assert killed["rc"] == -signal.SIGKILL
    assert not killed["metrics_json"]
    assert killed["progress"] == 300 and killed["checkpoints"] == ["last.ckpt", "step_0000000300.ckpt"]
    assert max(killed["logged"]) > 300  # rows after the checkpoint: the resumed run must not log them twice


def test_resumed_run_equals_uninterrupted_run(runs):
    a, b = runs["dirs"]["A"], runs["dirs"]["B"]
    _assert_same_final_state(a, b)
    assert _ckpts(a) == _ckpts(b) == ["last.ckpt", "step_0000000900.ckpt", "step_0000001200.ckpt"]
    ma, mb = _metrics(a), _metrics(b)
    assert ma["env_steps"] == 1200 and [h["step"] for h in ma["history"]] == EVAL_STEPS
    assert _without_wall(ma) == _without_wall(mb)
    rows_a, rows_b = _csv(a), _csv(b)
    steps = _steps(rows_b)
    assert steps == sorted(set(steps)), f"step column not strictly increasing: {steps}"
    _assert_same_csv(rows_a, rows_b)


def test_resume_keeps_the_original_hydra_record(runs):
    b = runs["dirs"]["B"]
    assert (b / ".hydra" / "overrides.yaml").read_bytes() == runs["B_record"]  # the command that started B
    assert "loop.resume=auto" not in runs["B_record"].decode()
    assert "loop.resume=auto" in (b / ".hydra" / "resume-1" / "overrides.yaml").read_text()  # the one continuing it


def test_crash_between_checkpoint_and_its_log_row_loses_no_row(runs):
    """Killed right after its checkpoint at 300 is written, before that step's metrics reach the CSV: the resumed
    run must still end with one row per 100 steps, the same as the uninterrupted run's."""
    killed = runs["C_killed"]
    assert killed["rc"] == -signal.SIGKILL and not killed["metrics_json"] and killed["progress"] == 300
    c = runs["dirs"]["C"]
    assert _metrics(c)["env_steps"] == 600
    rows_a, rows_c = _csv(runs["dirs"]["A"]), _csv(c)
    assert _steps(rows_c) == list(range(100, 601, 100)), f"steps after the resume: {_steps(rows_c)}"
    _assert_same_csv(rows_a[:6], rows_c)


def test_resume_with_smaller_budget_equals_fresh_run_of_that_budget(runs):
    """C (killed at 300, resumed with total_env_steps=600) ends in the state of E, a fresh 600-step run: changing a
    resumable key changes nothing but the budget (the replay buffer moves into a smaller one intact)."""
    c, e = runs["dirs"]["C"], runs["dirs"]["E"]
    _assert_same_final_state(c, e)
    assert _without_wall(_metrics(c)) == _without_wall(_metrics(e))


def test_auto_resume_in_empty_directory_starts_fresh(runs):
    e, a = runs["dirs"]["E"], runs["dirs"]["A"]
    m = _metrics(e)
    assert m["env_steps"] == 600 and [h["step"] for h in m["history"]] == [600]
    assert _ckpts(e) == ["last.ckpt", "step_0000000300.ckpt", "step_0000000600.ckpt"]
    # the same run as the plain command's (A) up to its own end: started from step 0 with the same generators
    _assert_same_csv(_csv(a)[:6], _csv(e))


def test_resume_with_budget_below_progress_is_refused(runs, tmp_path):
    """A checkpoint at 300 resumed with loop.total_env_steps=200: nothing is left to run and the final evaluation
    is behind it; like loop.init_from, say so with a ConfigError (run.py: one line, exit code 2)."""
    from aihf.errors import ConfigError
    run_dir = tmp_path / "M"
    shutil.copytree(runs["dirs"]["M"], run_dir, copy_function=shutil.copy2)
    with pytest.raises(ConfigError):
        train(_in_process_cfg(runs["data"], run_dir, "loop.resume=auto", "loop.total_env_steps=200"))


def test_resume_on_a_replaced_dataset_is_refused_before_anything_is_written(runs, tmp_path):
    """The config can be unchanged while the file under data.path (the shipped one, say) was replaced: a run that
    learned from other data must not go on with this one. (Its checkpoint's record is edited to another file's.)"""
    import torch
    from aihf.errors import ConfigError
    run_dir = tmp_path / "M"
    shutil.copytree(runs["dirs"]["M"], run_dir, copy_function=shutil.copy2)
    ckpt_file = run_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=False)
    assert len(ckpt["aihf"]["dataset_sha256"]) == 64  # recorded when the checkpoint was written
    ckpt["aihf"]["dataset_sha256"] = "0" * 64
    torch.save(ckpt, ckpt_file)
    before = _snapshot(run_dir)
    with pytest.raises(ConfigError, match="sha256 000000000000, but .* now has [0-9a-f]{12}"):
        train(_in_process_cfg(runs["data"], run_dir, "loop.resume=auto", "loop.total_env_steps=600"))
    assert _snapshot(run_dir) == before


def test_a_run_that_reads_the_dataset_for_its_anchors_only_resumes_on_a_new_one(hopper_data, tmp_path):
    """An expert (sac) reads the shipped dataset for its normalisation anchors only; collecting that dataset again
    from the expert's own ladder must not stop the expert from continuing. A run that draws demonstrations or pairs
    from it is refused."""
    from aihf.errors import ConfigError
    from aihf.mujoco.module import MuJoCoAIHF
    other = {"dataset_sha256": "0" * 64}
    expert = MuJoCoAIHF(fast_cfg("sac", hopper_data, tmp_path / "sac"))
    assert expert.data is not None and expert.data.num_demos == 0 and expert.data.num_prefs == 0
    expert.check_resume(other)
    learner = MuJoCoAIHF(fast_cfg("aihf", hopper_data, tmp_path / "aihf"))
    learner.check_resume({"dataset_sha256": learner.data.dataset.sha256})
    with pytest.raises(ConfigError, match="resume with the file it started on"):
        learner.check_resume(other)


# -- one step axis in metrics.csv ----------------------------------------------------------------------------------
@pytest.mark.parametrize("run", ["A", "B"])
def test_csv_has_one_monotone_step_axis(runs, run):
    rows = _csv(runs["dirs"][run])
    steps = _steps(rows)
    # one row per training_step: loop.steps_per_iteration=100 env steps, no duplicates, nothing else
    assert steps == list(range(100, 1201, 100))
    eval_cols = [k for k in rows[0] if k.startswith("eval/")]
    assert "eval/return_mean" in eval_cols and "eval/pref_accuracy" in eval_cols
    for r in rows:
        filled = [k for k in eval_cols if r[k] != ""]
        if int(r["step"]) in EVAL_STEPS:
            assert filled == eval_cols, f"step {r['step']}: evaluation columns missing"
        else:
            assert not filled, f"step {r['step']}: evaluation values repeated from an earlier step: {filled}"
        assert r["time/wall_s"] != "" and r["charts/SPS"] != ""
    # the evaluations in the CSV are those of metrics.json's history
    history = _metrics(runs["dirs"][run])["history"]
    logged = [float(r["eval/return_mean"]) for r in rows if r["eval/return_mean"] != ""]
    assert logged == pytest.approx([h["eval/return_mean"] for h in history], rel=1e-6)


# -- resuming finished runs, and with changed settings ---------------------------------------------------------------
@pytest.fixture(scope="module")
def followups(runs):
    """Resume the finished B again (a process), and meanwhile, in this process, a copy of A (D) with a larger
    budget (1200 -> 1500)."""
    d, root, data = runs["dirs"], runs["root"], runs["data"]
    d["D"] = root / "D"
    shutil.copytree(d["A"], d["D"], copy_function=shutil.copy2)
    before = _snapshot(d["B"])
    finished = Proc("finished", _args(data, d["B"], "loop.resume=auto"), runs["logs"], runs["cwd"])
    try:
        extended = train(_in_process_cfg(data, root / "extend_out", f"loop.resume={d['D']}",
                                         "loop.total_env_steps=1500"))
        yield {"finished": finished, "finished_rc": finished.wait(), "before": before, "dirs": d,
               "extended": extended}
    finally:
        finished.kill()


def test_resuming_finished_run_changes_nothing(followups):
    proc = followups["finished"]
    assert followups["finished_rc"] == 0, proc.stderr[-3000:]
    said = [line for line in proc.stdout.splitlines() if "finished" in line]
    assert len(said) == 1 and str(followups["dirs"]["B"].resolve()) in said[0], proc.stdout[-3000:]
    after = _snapshot(followups["dirs"]["B"])
    assert after.keys() == followups["before"].keys()
    changed = [k for k, v in after.items() if v != followups["before"][k]]
    assert not changed, f"modified by resuming a finished run: {changed}"


def test_resume_with_changed_model_is_refused(runs):
    proc = runs["procs"]["mismatch"]
    assert runs["mismatch_rc"] == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line message, got:\n{proc.stderr[-3000:]}"
    assert lines[0].startswith("error: ") and "policy.hidden" in lines[0]
    assert "Traceback" not in proc.stderr
    assert _snapshot(runs["dirs"]["M"]) == runs["M_before"]  # the refused run wrote nothing


def test_resume_with_larger_budget_continues_the_run(followups):
    d = followups["dirs"]["D"]
    first, m = _metrics(followups["dirs"]["A"]), _metrics(d)
    assert followups["extended"]["env_steps"] == 1500
    assert m["env_steps"] == 1500
    assert m["policy_updates"] == first["policy_updates"] + 300  # one update per env step, 1201..1500
    assert m["reward_updates"] == first["reward_updates"] + 3 * 5  # phases at 1300, 1400, 1500; 5 steps each
    assert [h["step"] for h in m["history"]] == [*EVAL_STEPS, 1500]
    assert [h["final"] for h in m["history"]][-1] is True
    assert _progress(d / "checkpoints" / "last.ckpt") == 1500
    assert _ckpts(d) == ["last.ckpt", "step_0000001200.ckpt", "step_0000001500.ckpt"]
    rows = _csv(d)
    assert _steps(rows) == list(range(100, 1501, 100))
    _assert_same_csv(_csv(followups["dirs"]["A"]), rows[:12])  # the first 1200 steps' rows are kept as they were


def test_a_key_new_since_the_checkpoint_is_accepted_only_at_its_default():
    """Checkpoints outlive schema changes: a key added later, left at its default, resumes (new options default to
    what was done before); set to anything else, or a key the schema has since lost, still refuses."""
    from aihf.resume import check_same_run, schema_defaults
    saved = {"llm": {"data": {"split_seed": 1}}, "policy": {"hidden": [32, 32]}}
    now = {"llm": {"data": {"split_seed": 1, "split_fold": 0, "split_folds": 0}}, "policy": {"hidden": [32, 32]}}
    assert check_same_run(saved, now, "loop.resume", (), schema_defaults()) == ["llm.data.split_fold",
                                                                              "llm.data.split_folds"]
    with pytest.raises(ConfigError, match="llm.data.split_folds='<absent>', this run has llm.data.split_folds=5"):
        check_same_run(saved, {**now, "llm": {"data": {**now["llm"]["data"], "split_folds": 5}}}, "loop.resume", (),
                       schema_defaults())
    with pytest.raises(ConfigError, match="policy.hidden=\\[32, 32\\], this run has policy.hidden='<absent>'"):
        check_same_run(saved, {"llm": now["llm"]}, "loop.resume", (), schema_defaults())
    with pytest.raises(ConfigError, match="llm.data.split_fold='<absent>'"):  # without the schema: strict
        check_same_run(saved, now, "loop.resume", ())


def test_a_key_whose_default_changed_resumes_only_at_the_value_the_run_had():
    """llm.data.subset defaults to random draws, but runs made before it existed took the first rows: resuming one
    needs subset=first (BEFORE_KEY_EXISTED), and the refusal says so."""
    from aihf.resume import check_same_run, schema_defaults
    saved = {"llm": {"data": {"split_seed": 1}}}
    old = {"llm": {"data": {"split_seed": 1, "subset": "first", "subset_seed": None}}}
    assert check_same_run(saved, old, "loop.resume", (), schema_defaults()) == ["llm.data.subset",
                                                                              "llm.data.subset_seed"]
    with pytest.raises(ConfigError, match="made before llm.data.subset existed.*resume with llm.data.subset=first"):
        check_same_run(saved, {"llm": {"data": {**old["llm"]["data"], "subset": "random"}}}, "loop.resume", (),
                       schema_defaults())


def test_teacher_settings_change_on_resume_only_where_the_teacher_did_not_label_the_run():
    """With data.relabel=true the teacher labels the training pairs at load: a changed teacher is another run."""
    from omegaconf import OmegaConf

    from aihf.errors import ConfigError
    from aihf.mujoco.module import MuJoCoAIHF
    from aihf.resume import check_same_run
    for relabel in (True, False):
        saved = {"data": {"relabel": relabel}, "teacher": {"mistake_prob": 0.0}}
        now = {"data": {"relabel": relabel}, "teacher": {"mistake_prob": 0.1}}
        resumable = MuJoCoAIHF.resumable(OmegaConf.create(now))
        if relabel:
            with pytest.raises(ConfigError, match="made with teacher.mistake_prob=0.0, this run has teacher"):
                check_same_run(saved, now, "loop.resume", resumable)
        else:
            assert check_same_run(saved, now, "loop.resume", resumable) == []


def test_a_run_whose_pairs_the_teacher_relabelled_resumes_only_with_that_teacher(hopper_data, tmp_path):
    from aihf.app import train
    from aihf.errors import ConfigError
    from conftest import fast_cfg
    extra = ["loop.total_env_steps=200", "loop.torch_threads=1", "data.relabel=true",
             "trainer.enable_checkpointing=true"]
    train(fast_cfg("aihf", hopper_data, tmp_path, extra))
    with pytest.raises(ConfigError, match="made with teacher.mistake_prob=0.0, this run has teacher.mistake_prob=0.1"):
        train(fast_cfg("aihf", hopper_data, tmp_path, [*extra, "loop.total_env_steps=400", "loop.resume=auto",
                                                       "teacher.mistake_prob=0.1"]))
    continued = train(fast_cfg("aihf", hopper_data, tmp_path, [*extra, "loop.total_env_steps=400", "loop.resume=auto"]))
    assert continued["env_steps"] == 400
