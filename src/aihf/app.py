"""What `run.py` does with a composed config: validate it, then train or collect."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from aihf.errors import ConfigError

log = logging.getLogger("aihf")
TASKS = ("train", "collect")


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger
    loggers = []
    if cfg.logger.csv:
        loggers.append(CSVLogger(run_dir, name="csv", version=""))
    if cfg.logger.tensorboard:
        loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version=""))
    if cfg.logger.wandb:
        os.environ.setdefault("WANDB_MODE", cfg.logger.wandb_mode)  # offline works with no key and no network
        loggers.append(WandbLogger(project=cfg.logger.wandb_project, save_dir=str(run_dir),
                                   name=f"{cfg.algo.name}-{cfg.domain.tag}-s{cfg.seed}",
                                   config=OmegaConf.to_container(cfg, resolve=True)))
    return loggers


def build_trainer(cfg: DictConfig, run_dir: Path, loggers: list) -> pl.Trainer:
    callbacks = []
    if cfg.trainer.enable_progress_bar:
        from pytorch_lightning.callbacks import RichProgressBar
        callbacks.append(RichProgressBar(leave=True))
    if cfg.trainer.enable_checkpointing:
        from pytorch_lightning.callbacks import ModelCheckpoint
        callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0))
    return pl.Trainer(accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices, strategy=cfg.trainer.strategy,
                      precision=cfg.trainer.precision, max_epochs=1, logger=loggers or False,
                      callbacks=callbacks, enable_progress_bar=cfg.trainer.enable_progress_bar,
                      enable_checkpointing=cfg.trainer.enable_checkpointing, enable_model_summary=False,
                      num_sanity_val_steps=0, log_every_n_steps=cfg.trainer.log_every_n_steps,
                      # The modules draw their own batches; the dataloader only counts steps, which every rank
                      # must take in full (a DistributedSampler would split them between the ranks).
                      use_distributed_sampler=False,
                      default_root_dir=str(run_dir))


def train(cfg: DictConfig) -> dict:
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module_cls = hydra.utils.get_class(cfg.domain.module)
    module = module_cls(cfg)  # validates config and data: bad input stops here, before any training
    if cfg.loop.init_from:
        module.init_from(cfg.loop.init_from)
    run_dir = Path(cfg.run_dir)
    loggers = build_loggers(cfg, run_dir)
    trainer = build_trainer(cfg, run_dir, loggers)
    try:
        trainer.fit(module)
    finally:
        # Each run (each job of a --multirun sweep) is its own W&B run; an unfinished one would absorb the next.
        for logger in loggers:
            if type(logger).__name__ == "WandbLogger" and logger._experiment is not None:
                logger.experiment.finish()
    result = module.final_metrics
    if hasattr(module, "summary"):
        print(module.summary())
        return result
    score = result.get("eval/normalised_score")
    print(f"final true return {result['eval/return_mean']:.1f} ± {result['eval/return_std']:.1f} "
          f"over {cfg.loop.final_eval_episodes} episodes ({cfg.env.id}, algo={cfg.algo.name}, seed={cfg.seed}); "
          f"expert-normalised score {'n/a' if score is None else f'{score:.3f}'}; "
          f"metrics in {run_dir / 'metrics.json'}")
    return result


def run(cfg: DictConfig) -> dict | None:
    if cfg.task not in TASKS:
        raise ConfigError(f"task={cfg.task!r}: expected one of {TASKS}")
    if cfg.task == "collect":
        from aihf.mujoco.collect import collect
        return collect(cfg)
    return train(cfg)
