"""A run directory belongs to one run: a new run never writes into another run's outputs.

Hydra names run directories by time, so two runs collide only when `hydra.run.dir` is given. Then the run is refused
before anything is written, unless it resumes that run (`loop.resume`), which appends to its logs. The check runs
twice: as a Hydra callback before Hydra saves its own `.hydra/` files (so even those stay the earlier run's), and
in `aihf.app.train` for runs started from Python.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from aihf.errors import ConfigError

# What a run leaves behind. `.hydra/` and the job log are Hydra's, written before aihf's code runs.
RUN_OUTPUTS = ("metrics.json", "csv/metrics.csv", "checkpoints", "tensorboard", "wandb", "ladder", "videos")
HYDRA_OUTPUTS = (".hydra",)


def earlier_outputs(run_dir: Path, names=RUN_OUTPUTS) -> list[str]:
    return [n for n in names if (run_dir / n).exists()]


def check_new_run_dir(run_dir: Path, resuming: bool, names=RUN_OUTPUTS, resume_asked: bool = False) -> None:
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return  # DDP workers share rank zero's run directory
    found = [] if resuming else earlier_outputs(run_dir, names)
    if found and resume_asked:
        raise ConfigError(f"loop.resume=auto: {run_dir} holds another run's outputs ({', '.join(found)}) but no "
                          f"checkpoint to resume from (checkpoints/last.ckpt); choose a new hydra.run.dir")
    if found:
        raise ConfigError(f"{run_dir} holds another run's outputs ({', '.join(found)}): choose a new hydra.run.dir, "
                          f"or continue that run with loop.resume={run_dir}")


class ProtectRunDir(Callback):
    """Hydra callback (conf/config.yaml): refuses a single run aimed at an earlier run's directory, before Hydra
    writes its config snapshot there."""

    def on_run_start(self, config, **kwargs) -> None:
        if os.environ.get("LOCAL_RANK", "0") != "0":
            return  # a DDP worker that Lightning started in rank zero's (already checked) directory
        try:
            check_new_run_dir(Path(config.hydra.run.dir), config.loop.resume is not None,
                              RUN_OUTPUTS + HYDRA_OUTPUTS)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
