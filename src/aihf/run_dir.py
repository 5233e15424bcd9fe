"""A run directory belongs to one run: a new run never writes into another run's outputs.

Hydra names run directories by time, so two runs collide only when `hydra.run.dir` is given. Then the run is refused
before anything is written, unless it resumes that run (`loop.resume`), which appends to its logs. The check runs
twice: as a Hydra callback before Hydra saves its own `.hydra/` files (so even those stay the earlier run's; for a
sweep, before any job), and in `aihf.app.train` for runs started from Python.

A run directory in use is refused too: a training run holds a lock on its directory (flock, which the kernel drops
when the process ends, even when it is killed), as does a sweep on its sweep directory and a figure on its root, so a
second process aimed there (a continued sweep launched twice, say) stops in one line instead of training over it.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; run directories are then not locked
    fcntl = None

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import open_dict, read_write

from aihf.errors import ConfigError

# What a run leaves behind. (`.hydra/` and the job log alone are what a run that failed at start-up leaves: such a
# directory may be reused, so a corrected command can run where the failed one was pointed.)
RUN_OUTPUTS = ("metrics.json", "csv/metrics.csv", "checkpoints", "tensorboard", "wandb", "ladder", "videos",
               "samples.jsonl")


def json_safe(value):
    """For strict JSON: non-finite floats (an undefined metric) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def save_metrics(path: Path, record: dict) -> None:
    """A run's metrics.json: strict JSON, written whole (its presence is what marks a run finished)."""
    import json

    from aihf.paths import written_whole
    with written_whole(path) as tmp:
        tmp.write_text(json.dumps(json_safe(record), indent=2, allow_nan=False))


def earlier_outputs(run_dir: Path) -> list[str]:
    return [n for n in RUN_OUTPUTS if (run_dir / n).exists()]


def finished_without_checkpoint(run_dir: Path) -> bool:
    """A finished run's record (metrics.json) with no checkpoint beside it: a run whose checkpoints were removed, or
    one restored from a figure's committed records (`python -m aihf.figures restore`). `loop.resume=auto` leaves
    it as it is, so a sweep continued over such runs runs only the others."""
    return (run_dir / "metrics.json").is_file() and not (run_dir / "checkpoints" / "last.ckpt").is_file()


def finished_record(cfg, run_dir: Path) -> dict | None:
    """Under `loop.resume=auto`, the metrics of the finished run without checkpoints in `run_dir` (None if it holds
    none): refused if it is another run's record, or if the run stopped below the budget asked for now."""
    if cfg.loop.resume != "auto" or not finished_without_checkpoint(run_dir):
        return None
    import json

    import hydra
    from omegaconf import OmegaConf
    metrics = run_dir / "metrics.json"
    record = json.loads(metrics.read_text())
    expected = [("algo", cfg.algo.name), ("seed", cfg.seed), ("env_id", OmegaConf.select(cfg, "env.id")),
            ("weighting", OmegaConf.select(cfg, "algo.weighting")),
            ("demo_weight", OmegaConf.select(cfg, "algo.demo_weight")),
            ("pref_weight", OmegaConf.select(cfg, "algo.pref_weight"))]
    # the data counts a run used (0 where its preset reads no demonstrations or no pairs), and the teacher where it
    # labelled the run's pairs
    expected += [(k, OmegaConf.select(cfg, f"data.{k}")) for k in ("num_demos", "num_prefs") if record.get(k)]
    if OmegaConf.select(cfg, "data.relabel"):
        expected.append(("teacher", OmegaConf.to_container(cfg.teacher)))
    for key, ours in expected:
        if key in record and ours is not None and record[key] != ours:
            raise ConfigError(f"loop.resume=auto: {metrics} is the record of another run ({key} {record[key]!r}, "
                              f"this run's {ours!r}); choose a new hydra.run.dir")
    budget = hydra.utils.get_class(cfg.domain.module).budget_of(cfg)
    if "budget" in record and record["budget"] < budget:
        raise ConfigError(f"loop.resume=auto: the run in {run_dir} finished at {record['budget']} steps and left no "
                          f"checkpoint to continue from (checkpoints/last.ckpt); the budget is now {budget}: choose "
                          f"a new hydra.run.dir")
    return record


# Directories this process holds locked, with the descriptor that holds each lock.
_held: dict[Path, int] = {}


def _close_held_in_child() -> None:
    """A forked child (an async vector env's worker, say) must not keep its parent's locks alive."""
    for fd in _held.values():
        os.close(fd)
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_child)


def _holder(path: Path) -> str:
    """The process holding a flock on `path`, from /proc/locks (Linux), else "another process"."""
    try:
        st = path.stat()
        device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 14476 08:01:1234 0 EOF"; waiters carry "->"
            if (len(fields) >= 6 and fields[1] == "FLOCK" and "->" not in fields
                    and fields[5] == f"{device}:{st.st_ino}"):
                return f"pid {fields[4]}"
    except OSError:
        pass
    return "another process"


def _try_lock(path: Path) -> int | None | str:
    """A descriptor of `path` holding its lock; the holder's name if another process holds it; None where there is
    nothing to lock (no such directory, no flock: Windows, and network mounts such as NFS, where flock on a
    directory is not supported, so runs there are not protected)."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # gone, not a directory, not readable
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return _holder(path)
    except OSError:
        os.close(fd)
        return None


def in_use(path: Path) -> str | None:
    """Who holds `path` locked, if another process does. (A probe holds the lock for microseconds; `hold_dir`
    retries past it.)"""
    path = path.resolve()
    if path in _held:
        return None
    got = _try_lock(path)
    if isinstance(got, int):
        os.close(got)  # closing the only descriptor drops the lock
        return None
    return got


def _rank_zero() -> bool:
    # The global rank where a launcher gives one (torchrun: RANK; srun starts every task before Lightning sets
    # LOCAL_RANK: SLURM_PROCID); else Lightning's own multi-node launch, where node N's first process has
    # LOCAL_RANK 0 but NODE_RANK N.
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key):
            return os.environ[key] == "0"
    return os.environ.get("NODE_RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def hold_dir(path: Path, what: str, advice: str) -> bool:
    """Lock `path` for this process until `release_dir` (or the process's end): refused if another holds it.
    Returns whether this call took the lock (False: already held here, or nothing to lock)."""
    if not _rank_zero():
        return False  # DDP workers run in rank zero's run directory, which rank zero holds
    path = path.resolve()
    if path in _held:
        return False
    for attempt in range(20):  # past another process's momentary probe (in_use, `figures progress`)
        got = _try_lock(path)
        if not isinstance(got, str):
            break
        time.sleep(0.05)
    if isinstance(got, str):
        raise ConfigError(f"{what}={path} is in use by {got}: {advice}")
    if got is None:
        return False
    _held[path] = got
    return True


def hold_run_dir(run_dir: Path) -> bool:
    return hold_dir(run_dir, "hydra.run.dir", "a run is training there; wait for it to end, or choose a new "
                                              "hydra.run.dir")


def release_dir(path: Path) -> None:
    fd = _held.pop(path.resolve(), None)
    if fd is not None:
        os.close(fd)


def check_new_run_dir(run_dir: Path, resuming: bool, resume_asked: bool = False) -> None:
    if not _rank_zero():
        return  # DDP workers share rank zero's (already checked) run directory
    found = [] if resuming else earlier_outputs(run_dir)
    if found and resume_asked:
        raise ConfigError(f"loop.resume=auto: {run_dir} holds another run's outputs ({', '.join(found)}) but no "
                          f"checkpoint to resume from (checkpoints/last.ckpt); choose a new hydra.run.dir")
    if found:
        raise ConfigError(f"{run_dir} holds another run's outputs ({', '.join(found)}): choose a new hydra.run.dir, "
                          f"or continue that run with loop.resume={run_dir}")


# Run directories that this process's run created (before the job starts: Hydra, or for a single run the callback
# that holds it), each with the topmost
# directory that the run created on the way to it: a run that fails at start-up removes them again.
_created: dict[Path, Path] = {}
HYDRA_FILES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")


def note_new_dir(run_dir: Path) -> None:
    run_dir = run_dir.absolute()
    if run_dir.exists():
        return
    top = run_dir
    while not top.parent.exists():
        top = top.parent
    _created[run_dir] = top


# A resume into its run's own directory: where Hydra's snapshot of this launch goes, and each job log's size and
# modification time before the launch (a refused resume leaves the run's files as they were).
_resumes: dict[Path, tuple[Path, dict[Path, tuple[int, int]]]] = {}


def keep_earlier_record(config, run_dir: Path) -> None:
    """A resume writes Hydra's config snapshot of this launch to .hydra/resume-<n>/, beside the original's in
    .hydra/, never over it: the run's record keeps the command that started it and every one that continued it."""
    launch = note_launch(run_dir.absolute())
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.output_subdir = str(launch.relative_to(run_dir.absolute()))


def note_launch(run_dir: Path) -> Path:
    """This launch's record in a resumed run: the next free .hydra/resume-<n>/, noted with each job log's size and
    modification time now, so that a launch refused at start-up can be undone (`discard_failed_start`)."""
    n = 1
    while (run_dir / ".hydra" / f"resume-{n}").exists():
        n += 1
    logs = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.glob("*.log")}
    _resumes[run_dir] = (run_dir / ".hydra" / f"resume-{n}", logs)
    return run_dir / ".hydra" / f"resume-{n}"


# A sweep's job continued in its directory: Hydra writes the job's config snapshot over .hydra/ before any callback
# runs in the job, so the sweep sets the original aside first and the job puts it back.
STASH = ".hydra/original"


def stash_job_record(job_dir: Path) -> None:
    """Before a sweep continues its jobs: keep the original .hydra/ snapshot of each job that ran (an earlier stash,
    left by a job killed before it ended, is that original and stays). Written whole or not at all."""
    stash = job_dir / STASH
    if (stash.is_dir() or ".interrupted-" in job_dir.name or not earlier_outputs(job_dir)
            or not all((job_dir / f).is_file() for f in HYDRA_FILES)):
        return
    tmp = stash.with_name(stash.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in HYDRA_FILES:
        shutil.copy2(job_dir / f, tmp / Path(f).name)
    os.replace(tmp, stash)


def restore_job_record(job_dir: Path) -> None:
    """In a continued job, once Hydra has written this launch's snapshot: move it to .hydra/resume-<n>/ and copy the
    original back into .hydra/, as a single run's resume leaves them. The stash stays until the job ends, so a job
    run again in the same launch (a SLURM requeue) or killed part-way restores from it again."""
    stash = job_dir / STASH
    if not all((stash / Path(f).name).is_file() for f in HYDRA_FILES):
        return
    launch = note_launch(job_dir)
    launch.mkdir()
    for f in HYDRA_FILES:
        if (job_dir / f).is_file():
            os.replace(job_dir / f, launch / Path(f).name)
        shutil.copy2(stash / Path(f).name, job_dir / f)


def _undo_refused_resume(run_dir: Path) -> None:
    record, logs = _resumes.pop(run_dir, (None, {}))
    if in_use(run_dir):
        return  # another process trains there now: its files are not this launch's to undo
    if record is not None and record.is_dir():
        shutil.rmtree(record)
    for path, (size, mtime_ns) in logs.items():  # Hydra's job log is appended to: cut it back to what it was
        if path.is_file() and path.stat().st_size > size:
            os.truncate(path, size)
            os.utime(path, ns=(mtime_ns, mtime_ns))
    for path in set(run_dir.glob("*.log")) - set(logs):  # a job log this launch began
        path.unlink()


def discard_failed_start(run_dir: Path) -> None:
    """A run refused at start-up leaves nothing behind: remove the directory Hydra made for it, if this run created
    it and it holds nothing but Hydra's config snapshot and an empty or start-up job log; a refused resume leaves
    its run's directory as it was."""
    run_dir = run_dir.absolute()
    if run_dir in _resumes:
        _undo_refused_resume(run_dir)
        return
    top = _created.pop(run_dir, None)
    if top is None or not run_dir.is_dir() or in_use(run_dir):
        return  # (in use: another process started there meanwhile, and the directory is its)
    files = {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if not p.is_dir()}
    if not files <= set(HYDRA_FILES) | {f for f in files if "/" not in f and f.endswith(".log")}:
        return  # something else was written: keep it all
    shutil.rmtree(run_dir)
    d = run_dir.parent
    while d != top.parent and d.is_dir() and not any(d.iterdir()):
        d.rmdir()
        d = d.parent


def check_writable(target: Path, key: str) -> None:
    """The directory can be made and written: refused in one line now rather than as Hydra's traceback later."""
    existing = target.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key}={target} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={target} cannot be written: {existing} is not writable")


def _refuse(exc: ConfigError) -> None:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)


class ProtectRunDir(Callback):
    """Hydra callback (conf/config.yaml): refuses a run aimed at an earlier run's directory (or a sweep at an earlier
    sweep's), before Hydra writes its config snapshot there."""

    def on_run_start(self, config, **kwargs) -> None:
        from aihf.resume import resolve_resume, run_dir_of
        run_dir = Path(config.hydra.run.dir)
        note_new_dir(run_dir)
        try:
            check_writable(run_dir, "hydra.run.dir")
            run_dir.mkdir(parents=True, exist_ok=True)  # (Hydra makes it anyway) held before Hydra writes there
            hold_run_dir(run_dir)  # held until the run ends
            if finished_record(config, run_dir) is not None:
                keep_earlier_record(config, run_dir)  # aihf.app.train says it is finished and returns its metrics
                return
            ckpt = resolve_resume(config.loop.resume, run_dir)
            resuming_here = ckpt is not None and run_dir_of(ckpt) == run_dir.resolve()
            check_new_run_dir(run_dir, resuming_here, resume_asked=config.loop.resume == "auto")
        except ConfigError as exc:
            discard_failed_start(run_dir)  # the directory made above for this run (not one another process holds)
            release_dir(run_dir)
            _refuse(exc)
        if resuming_here:
            keep_earlier_record(config, run_dir)

    def on_run_end(self, config, **kwargs) -> None:
        release_dir(Path(config.hydra.run.dir))

    def on_job_start(self, config, **kwargs) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(config.hydra.runtime.output_dir).absolute()
        try:
            hold_run_dir(job_dir)  # held until the job ends, its clean-up included
        except ConfigError:
            return  # in use by another process: aihf.app.train refuses the job in one line; touch nothing here
        restore_job_record(job_dir)
        if job_dir not in self._earlier_jobs:
            _created[job_dir] = job_dir  # Hydra has just made it for this job

    def on_job_end(self, config, job_return, **kwargs) -> None:
        job_dir = Path(config.hydra.runtime.output_dir).absolute()
        if job_return.status == JobStatus.FAILED and isinstance(job_return._return_value, ConfigError):
            discard_failed_start(job_dir)
        if config.hydra.mode == RunMode.MULTIRUN and job_dir.resolve() in _held:
            shutil.rmtree(job_dir / STASH, ignore_errors=True)
            release_dir(job_dir)

    def on_multirun_start(self, config, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        existed = sweep.is_dir()
        # Job directories that were there before this sweep (left by a failed earlier start) are not its to remove.
        self._earlier_jobs = {j.absolute() for j in sweep.iterdir()} if existed else set()
        try:
            check_writable(sweep, "hydra.sweep.dir")
            sweep.mkdir(parents=True, exist_ok=True)  # (Hydra makes it anyway) so that it can be held from the start
            hold_dir(sweep, "hydra.sweep.dir", "another sweep is running there; wait for it to end")
            busy = [(job, in_use(job)) for job in sorted(sweep.iterdir()) if job.is_dir()]
            busy = [(job, holder) for job, holder in busy if holder]
            if busy:
                raise ConfigError(f"hydra.sweep.dir={sweep}: its run {busy[0][0].name} is in use by {busy[0][1]}; "
                                  f"wait for it to end")
        except ConfigError as exc:
            release_dir(sweep)
            _refuse(exc)
        if config.loop.resume is not None:
            for job in self._earlier_jobs:
                if job.is_dir():
                    stash_job_record(job)
        if config.loop.resume is not None or not existed:
            return
        found = sorted(str(job.relative_to(sweep)) for job in sweep.iterdir() if job.is_dir() and earlier_outputs(job))
        if found:
            release_dir(sweep)
            _refuse(ConfigError(f"hydra.sweep.dir={sweep} holds an earlier sweep's runs ({', '.join(found[:3])}"
                                f"{', ...' if len(found) > 3 else ''}): choose a new hydra.sweep.dir"))

    def on_multirun_end(self, config, **kwargs) -> None:
        release_dir(Path(config.hydra.sweep.dir))
