"""Entry point: `python run.py algo=aihf domain=mujoco` (see README and conf/)."""

import sys

import hydra
from omegaconf import DictConfig

from aihf.config import register_configs
from aihf.errors import ConfigError, TrainingDiverged

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from aihf.app import run
    try:
        return run(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except TrainingDiverged as exc:
        print(f"error: training diverged: {exc}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
