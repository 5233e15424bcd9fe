"""Entry point: `python run.py algo=aihf domain=mujoco` (see README and conf/)."""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from aihf.config import register_configs
from aihf.errors import ConfigError, TrainingDiverged

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from aihf.app import run
    try:
        return run(cfg)
    except (ConfigError, TrainingDiverged) as exc:
        diverged = isinstance(exc, TrainingDiverged)
        print(f"error: {'training diverged: ' if diverged else ''}{exc}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra records the failed job, runs the rest of the sweep, then fails
        sys.exit(3 if diverged else 2)


if __name__ == "__main__":
    main()
