"""A run never writes into another run's directory: refused in one line, the earlier run's files byte-identical
(Hydra's own .hydra/ snapshot included); resuming that run is the one way to continue it."""

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aihf.app import train
from aihf.errors import ConfigError
from conftest import fast_cfg

ROOT = Path(__file__).resolve().parents[1]


def snapshot(d: Path) -> dict:
    return {p.relative_to(d): (p.read_bytes(), p.stat().st_mtime_ns) for p in d.rglob("*") if p.is_file()}


def run_py(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture(scope="module")
def earlier_run(hopper_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("earlier") / "run"
    proc = run_py("algo=sac", "debug=fast", f"data.path={hopper_data}", "loop.total_env_steps=200",
                  "policy.learning_starts=100", "loop.torch_threads=1", "trainer.enable_checkpointing=true",
                  f"hydra.run.dir={d}", cwd=d.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (d / ".hydra" / "config.yaml").is_file() and (d / "metrics.json").is_file()
    return d


def test_new_run_in_an_earlier_runs_directory_is_refused_before_anything_is_written(earlier_run, hopper_data):
    before = snapshot(earlier_run)
    proc = run_py("algo=aihf", "debug=fast", f"data.path={hopper_data}", f"hydra.run.dir={earlier_run}",
                  cwd=earlier_run.parent)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: {earlier_run} holds another run's outputs (metrics.json, csv/metrics.csv, checkpoints): "
                     f"choose a new hydra.run.dir, or continue that run with loop.resume={earlier_run}"]
    assert snapshot(earlier_run) == before  # bytes and modification times, .hydra/ and run.log included


def test_train_from_python_refuses_too(earlier_run, hopper_data):
    before = snapshot(earlier_run)
    with pytest.raises(ConfigError, match="holds another run's outputs"):
        train(fast_cfg("sac", hopper_data, earlier_run))
    assert snapshot(earlier_run) == before


def test_auto_resume_without_a_checkpoint_says_so(hopper_data, tmp_path):
    """A finished run without checkpoints is left as it is; asked for more steps, it says it cannot continue, and
    an unfinished one without a checkpoint is not written over."""
    done = train(fast_cfg("sac", hopper_data, tmp_path, ["loop.total_env_steps=200", "loop.torch_threads=1"]))
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()
    again = train(fast_cfg("sac", hopper_data, tmp_path, ["loop.total_env_steps=200", "loop.resume=auto"]))
    assert again == json.loads((tmp_path / "metrics.json").read_text()) and again["history"] == done["history"]
    with pytest.raises(ConfigError, match="finished at 200 steps and left no checkpoint to continue from .* the "
                                          "budget is now 400"):
        train(fast_cfg("sac", hopper_data, tmp_path, ["loop.total_env_steps=400", "loop.resume=auto"]))
    (tmp_path / "metrics.json").unlink()  # killed before its first checkpoint: its logs are there, no results
    with pytest.raises(ConfigError, match="loop.resume=auto: .* but no checkpoint to resume from"):
        train(fast_cfg("sac", hopper_data, tmp_path, ["loop.resume=auto"]))


def test_a_finished_run_without_checkpoints_resumed_from_the_command_line_keeps_its_record(hopper_data, tmp_path):
    """A run directory as `aihf.figures restore` leaves it (or a finished run whose checkpoints were removed):
    `loop.resume=auto` exits 0 saying it is finished, its metrics.json and .hydra/ stay as they were, and Hydra's
    snapshot of this launch goes beside them (.hydra/resume-1/)."""
    import shutil
    run = tmp_path / "run"
    train(fast_cfg("sac", hopper_data, run, ["loop.total_env_steps=200", "loop.torch_threads=1"]))
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("the original launch\n")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    proc = run_py("algo=sac", "debug=fast", f"data.path={hopper_data}", "loop.total_env_steps=200",
                  "loop.torch_threads=1", f"hydra.run.dir={run}", "loop.resume=auto", cwd=tmp_path)
    assert proc.returncode == 0 and "is finished (its metrics.json, no checkpoint)" in proc.stdout, proc.stderr[-2000:]
    assert all(p.read_bytes() == content for p, content in before.items())
    assert "loop.resume=auto" in (run / ".hydra" / "resume-1" / "overrides.yaml").read_text()
    assert not (run / "checkpoints").exists()


def test_resuming_the_earlier_run_is_allowed(earlier_run, hopper_data):
    """A finished run that kept its checkpoints: `loop.resume=auto` exits 0 saying it is finished, and every file
    the run wrote (metrics, logs, checkpoints) stays byte for byte, untouched; only Hydra's snapshot of this launch
    is added."""
    before = {p: v for p, v in snapshot(earlier_run).items() if ".hydra" not in p.parts}
    assert any(p.suffix == ".ckpt" for p in before)
    proc = run_py("algo=sac", "debug=fast", f"data.path={hopper_data}", "loop.total_env_steps=200",
                  "policy.learning_starts=100", "loop.torch_threads=1", "trainer.enable_checkpointing=true",
                  f"hydra.run.dir={earlier_run}", "loop.resume=auto", cwd=earlier_run.parent)
    assert proc.returncode == 0 and "is finished (200 of 200 steps)" in proc.stdout, proc.stderr[-2000:]
    assert {p: v for p, v in snapshot(earlier_run).items() if ".hydra" not in p.parts} == before


def test_a_sweep_into_an_earlier_sweep_is_refused_and_a_failed_job_does_not_stop_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    common = ["-m", "algo=sac", "debug=fast", "loop.torch_threads=1", "loop.total_env_steps=300",
              f"hydra.sweep.dir={sweep}"]
    first = run_py(*common, "policy.critic_lr=1e8,3e-4", cwd=tmp_path)
    assert first.returncode != 0 and "error: training diverged: losses/" in first.stderr
    assert json.loads((sweep / "0-sac-s0" / "metrics.json").read_text())["status"] == "diverged"
    assert json.loads((sweep / "1-sac-s0" / "metrics.json").read_text())["status"] == "finished"  # it still ran
    before = snapshot(sweep)
    again = run_py(*common, "seed=0", cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"error: hydra.sweep.dir={sweep} holds an earlier sweep's runs (0-sac-s0, 1-sac-s0): choose a new "
        f"hydra.sweep.dir"]
    assert snapshot(sweep) == before


def test_resuming_an_older_checkpoint_of_a_run_is_refused(hopper_data, tmp_path):
    extra = ["trainer.enable_checkpointing=true", "loop.checkpoint_every=100", "loop.keep_checkpoints=10",
             "loop.torch_threads=1"]
    train(fast_cfg("sac", hopper_data, tmp_path, extra))
    before = snapshot(tmp_path)
    older = tmp_path / "checkpoints" / "step_0000000300.ckpt"
    with pytest.raises(ConfigError, match="is at step 300, but the run's last checkpoint is at step 600"):
        train(fast_cfg("sac", hopper_data, tmp_path / "elsewhere", [*extra, f"loop.resume={older}",
                                                                   "loop.total_env_steps=400"]))
    assert snapshot(tmp_path) == before


def test_a_failed_start_leaves_no_directory_and_a_directory_without_outputs_can_be_used(tmp_path):
    d = tmp_path / "run" / "nested"
    bad = run_py("algo=sac", "debug=fast", "env.num_envs=3", f"hydra.run.dir={d}", cwd=tmp_path)
    assert bad.returncode == 2 and "is not a multiple of env.num_envs=3" in bad.stderr
    assert not (tmp_path / "run").exists()  # neither the run directory nor the parent it made
    (d / ".hydra").mkdir(parents=True)  # a directory with no run outputs, e.g. left by an older aihf's failed start
    (d / ".hydra" / "config.yaml").write_text("old: true\n")
    good = run_py("algo=sac", "debug=fast", "loop.total_env_steps=300", "loop.torch_threads=1", f"hydra.run.dir={d}",
                  cwd=tmp_path)
    assert good.returncode == 0 and (d / "metrics.json").is_file(), good.stderr[-2000:]


HOLD = ("import sys, time; from pathlib import Path; from aihf.run_dir import hold_dir; "
        "hold_dir(Path(sys.argv[1]), 'x', 'y'); print('held', flush=True); time.sleep(300)")


@contextlib.contextmanager
def held_by_another_process(path: Path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_run_directory_in_use_is_refused_until_its_process_ends_even_killed(earlier_run, hopper_data):
    from aihf.run_dir import in_use
    before = snapshot(earlier_run)
    with held_by_another_process(earlier_run) as pid:
        assert in_use(earlier_run) == f"pid {pid}"
        proc = run_py("algo=sac", "debug=fast", f"data.path={hopper_data}", "loop.total_env_steps=200",
                      "policy.learning_starts=100", "loop.torch_threads=1", "trainer.enable_checkpointing=true",
                      f"hydra.run.dir={earlier_run}", "loop.resume=auto", cwd=earlier_run.parent)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [
            f"error: hydra.run.dir={earlier_run.resolve()} is in use by pid {pid}: a run is training there; wait for "
            f"it to end, or choose a new hydra.run.dir"]
        with pytest.raises(ConfigError, match=f"is in use by pid {pid}"):
            train(fast_cfg("sac", hopper_data, earlier_run, ["loop.resume=auto"]))
    assert snapshot(earlier_run) == before
    assert in_use(earlier_run) is None  # the kernel dropped the killed holder's lock: nothing stale is left


def long_run_until(path: Path, args: list[str], cwd: Path) -> subprocess.Popen:
    """A SAC run of 200k env steps (it outlasts the test), once `path` exists or the process has ended."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args, "algo=sac", "debug=fast",
                             "loop.total_env_steps=200000", "loop.torch_threads=1"],
                            cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(6000):
        if path.is_file() or proc.poll() is not None:
            break
        time.sleep(0.01)
    return proc


def test_a_training_run_holds_its_directory(hopper_data, tmp_path):
    """A sweep's job (as a figure runs them) holds its own run directory while it trains, and the sweep its own."""
    from aihf.run_dir import in_use
    d = tmp_path / "sweep" / "0-sac-s0"
    proc = long_run_until(d / "csv" / "metrics.csv", ["-m", "seed=0", f"data.path={hopper_data}",
                                                      f"hydra.sweep.dir={d.parent}"], cwd=tmp_path)
    try:
        assert proc.poll() is None, "the run ended before it could be looked at"
        assert in_use(d) == f"pid {proc.pid}"
        assert in_use(d.parent) == f"pid {proc.pid}"  # the sweep holds its directory, new as it was
    finally:
        proc.kill()
        proc.wait()
    assert in_use(d) is None


def test_a_single_run_holds_its_new_directory_before_hydra_writes_there(hopper_data, tmp_path):
    """Two commands aimed at the same new hydra.run.dir: the first holds it from the start, so the second is refused
    before its Hydra writes its config snapshot over the first's."""
    from aihf.run_dir import in_use
    d = tmp_path / "new" / "run"
    proc = long_run_until(d / ".hydra" / "overrides.yaml", [f"data.path={hopper_data}", f"hydra.run.dir={d}"],
                          cwd=tmp_path)
    try:
        assert proc.poll() is None, "the run ended before it could be looked at"
        assert in_use(d) == f"pid {proc.pid}"
        for _ in range(3000):  # its snapshot written to the end: it is training
            if (d / "csv" / "metrics.csv").is_file():
                break
            time.sleep(0.01)
        before = (d / ".hydra" / "overrides.yaml").read_bytes()
        second = run_py("algo=bc", "debug=fast", f"data.path={hopper_data}", f"hydra.run.dir={d}", cwd=tmp_path)
        assert second.returncode == 2 and "is in use by pid" in second.stderr
        assert (d / ".hydra" / "overrides.yaml").read_bytes() == before
    finally:
        proc.kill()
        proc.wait()


def test_a_sweep_or_figure_in_use_is_refused_before_anything_is_written(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "0-sac-s0").mkdir(parents=True)
    (sweep / "0-sac-s0" / "run.log").write_text("training\n")
    before = snapshot(sweep)
    with held_by_another_process(sweep / "0-sac-s0") as pid:
        proc = run_py("-m", "algo=sac", "debug=fast", "seed=0", "loop.resume=auto", f"hydra.sweep.dir={sweep}",
                      cwd=tmp_path)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [
            f"error: hydra.sweep.dir={sweep}: its run 0-sac-s0 is in use by pid {pid}; wait for it to end"]
    assert snapshot(sweep) == before
    with held_by_another_process(tmp_path) as pid:
        fig = subprocess.run([sys.executable, "-m", "aihf.figures", "run", "comparison_hopper", "--root",
                              str(tmp_path)], capture_output=True, text=True, timeout=120)
        assert fig.returncode == 1
        assert fig.stderr.strip().splitlines()[-1] == (
            f"error: --root={tmp_path.resolve()} is in use by pid {pid}: another `aihf.figures run` is running its "
            f"figure; wait for it to end")
    assert snapshot(sweep) == before


def test_a_continued_sweep_keeps_each_jobs_original_record(hopper_data, tmp_path):
    """Hydra writes a job's config snapshot over .hydra/ before any callback runs in the job; a sweep continued with
    loop.resume=auto still leaves .hydra/ as the command that started the job, this launch's in .hydra/resume-1/,
    and a continuation refused at start-up leaves no record of itself."""
    from aihf.run_dir import HYDRA_FILES
    sweep, job = tmp_path / "sweep", tmp_path / "sweep" / "0-sac-s0"
    common = ["-m", "algo=sac", "debug=fast", "seed=0", f"data.path={hopper_data}", "loop.torch_threads=1",
              "policy.learning_starts=100", "trainer.enable_checkpointing=true", f"hydra.sweep.dir={sweep}"]
    first = run_py(*common, "loop.total_env_steps=200", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    original = {f: (job / f).read_bytes() for f in HYDRA_FILES}
    again = run_py(*common, "loop.total_env_steps=400", "loop.resume=auto", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((job / "metrics.json").read_text())["env_steps"] == 400  # continued, not restarted
    assert {f: (job / f).read_bytes() for f in HYDRA_FILES} == original
    assert "loop.total_env_steps=400" in (job / ".hydra" / "resume-1" / "overrides.yaml").read_text()
    assert not (job / ".hydra" / "original").exists()
    before = snapshot(job)
    refused = run_py(*common, "loop.total_env_steps=600", "loop.resume=auto", "policy.hidden=[16,16]", cwd=tmp_path)
    assert refused.returncode != 0 and "policy.hidden" in refused.stderr
    assert snapshot(job) == before  # .hydra/ and its resume-1/ as they were, no resume-2/, the job log cut back


def test_a_finished_record_of_other_data_or_another_teacher_is_not_taken_for_this_run(hopper_data, tmp_path):
    """loop.resume=auto returns a finished run's record only when it is this run's: the same data counts, and the
    same teacher where the teacher labelled the run's pairs."""
    extra = ["loop.total_env_steps=200", "loop.torch_threads=1", "data.relabel=true"]
    train(fast_cfg("aihf", hopper_data, tmp_path, extra))
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()
    again = [*extra, "loop.resume=auto"]
    assert train(fast_cfg("aihf", hopper_data, tmp_path, again))["num_prefs"] == 20  # its own: returned as it is
    with pytest.raises(ConfigError, match=r"record of another run \(num_prefs 20, this run's 30\)"):
        train(fast_cfg("aihf", hopper_data, tmp_path, [*again, "data.num_prefs=30"]))
    with pytest.raises(ConfigError, match=r"record of another run \(teacher .*'mistake_prob': 0.0.*'mistake_prob': 0.1"):
        train(fast_cfg("aihf", hopper_data, tmp_path, [*again, "teacher.mistake_prob=0.1"]))


@pytest.mark.parametrize("env,checked", [({"SLURM_PROCID": "1"}, False), ({"RANK": "2", "LOCAL_RANK": "0"}, False),
                                         ({"LOCAL_RANK": "1"}, False), ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False),
                                         ({"SLURM_PROCID": "0"}, True), ({}, True)])
def test_only_the_global_rank_zero_checks_the_run_directory(earlier_run, monkeypatch, env, checked):
    """Under srun every task starts with SLURM_PROCID but no LOCAL_RANK (and under Lightning's multi-node launch node N
    with NODE_RANK N, LOCAL_RANK 0): a worker must not refuse the directory into
    which rank zero's Hydra has just written, and rank zero must still refuse an earlier run's directory."""
    from aihf.run_dir import check_new_run_dir
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if checked:
        with pytest.raises(ConfigError, match="holds another run's outputs"):
            check_new_run_dir(earlier_run, resuming=False)
    else:
        check_new_run_dir(earlier_run, resuming=False)


def test_a_metrics_file_killed_mid_write_is_never_left_truncated(tmp_path, monkeypatch):
    """metrics.json marks a run finished (a continued sweep skips it, the report reads it): an interrupted write
    leaves the earlier file or none, never a partial one."""
    from aihf.run_dir import save_metrics
    path = tmp_path / "metrics.json"
    save_metrics(path, {"headline": 0.5, "epic": float("nan")})
    assert json.loads(path.read_text()) == {"headline": 0.5, "epic": None}
    before = path.read_bytes()

    def dies_midway(self, text, *args, **kwargs):
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])  # half the record reaches the disk
        assert path.read_bytes() == before  # ... not the file's place: a SIGKILL now would leave it whole
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save_metrics(path, {"headline": 0.9})
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
