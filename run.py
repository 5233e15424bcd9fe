"""Entry point: `python run.py algo=aihf domain=mujoco` (see README and conf/)."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from aihf.config import register_configs
from aihf.errors import ConfigError, TrainingDiverged
from aihf.run_dir import discard_failed_start

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from aihf.app import run
    try:
        result = run(cfg)
        if cfg.get("optimized_metric") is None:
            return result
        if cfg.optimized_metric == "headline" and isinstance(result, dict):
            from aihf.report import score_of  # the comparisons' headline: not one checkpoint's swing
            headline = score_of(result, headline=True)
            if headline is not None:
                return float(headline)
        if not isinstance(result, dict) or not isinstance(result.get(cfg.optimized_metric), (int, float)):
            have = sorted(k for k, v in (result or {}).items() if isinstance(v, (int, float)))
            raise ConfigError(f"optimized_metric={cfg.optimized_metric}: the run has no such numeric result "
                              f"(it has {', '.join(have)})")
        return float(result[cfg.optimized_metric])
    except (ConfigError, TrainingDiverged) as exc:
        diverged = isinstance(exc, TrainingDiverged)
        print(f"error: {'training diverged: ' if diverged else ''}{exc}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra records the failed job (a refused one leaves no directory), runs the rest, then fails
        if not diverged:
            discard_failed_start(Path(HydraConfig.get().runtime.output_dir))  # a refused run leaves nothing behind
        sys.exit(3 if diverged else 2)


def cli() -> None:
    """`python run.py ...`: a misspelt key or a wrong type is one line (exit 2) before Hydra composes anything."""
    from aihf.checks import precheck_overrides
    try:
        precheck_overrides(sys.argv[1:], Path(__file__).resolve().parent / "conf")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
