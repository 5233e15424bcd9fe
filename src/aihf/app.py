"""What `run.py` does with a composed config: validate it, then train or collect."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from aihf.errors import ConfigError

log = logging.getLogger("aihf")
TASKS = ("train", "collect", "import")


class AppendingCSVLogger:
    """Wraps Lightning's CSVLogger for a resumed run: the rows the interrupted run logged up to its checkpoint's
    step are kept (later ones, which the resumed run logs again, are dropped) and new rows are appended."""

    @staticmethod
    def make(run_dir: Path, resume_step: int | None):
        from pytorch_lightning.loggers import CSVLogger
        logger = CSVLogger(run_dir, name="csv", version="")
        path = Path(logger.log_dir) / "metrics.csv"
        kept = path.with_name("metrics.csv.resumed")  # survives a crash between the two steps below
        if resume_step is None or not (path.is_file() or kept.is_file()):
            return logger
        header, rows = AppendingCSVLogger.rows_up_to(kept if kept.is_file() else path, resume_step)
        AppendingCSVLogger.write(kept, header, rows)
        writer = logger.experiment  # Lightning's writer deletes metrics.csv when it is created
        writer.metrics_keys = header
        os.replace(kept, path)
        return logger

    @staticmethod
    def rows_up_to(path: Path, step: int) -> tuple[list[str], list[dict]]:
        import csv
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = []
            for row in reader:
                if None in row or None in row.values() or not str(row.get("step", "")).isdigit():
                    continue  # a row cut off when the run was killed mid-write
                if int(row["step"]) <= step:
                    rows.append(row)
        return header, rows

    @staticmethod
    def write(path: Path, header: list[str], rows: list[dict]) -> None:
        import csv

        from aihf.paths import written_whole
        with written_whole(path) as tmp, open(tmp, "w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=header)
            out.writeheader()
            out.writerows(rows)


def build_loggers(cfg: DictConfig, run_dir: Path, resume_step: int | None = None) -> list:
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
    loggers = []
    if cfg.logger.csv:
        loggers.append(AppendingCSVLogger.make(run_dir, resume_step))
    if cfg.logger.tensorboard:
        loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version=""))
    if cfg.logger.wandb:
        os.environ.setdefault("WANDB_MODE", cfg.logger.wandb_mode)  # offline works with no key and no network
        id_file = run_dir / "wandb_run_id"
        resume = {"id": id_file.read_text().strip(), "resume": "allow"} if resume_step is not None and \
            id_file.is_file() else {}
        logger = WandbLogger(project=cfg.logger.wandb_project, save_dir=str(run_dir),
                             name=f"{cfg.algo.name}-{cfg.domain.tag}-s{cfg.seed}",
                             config=OmegaConf.to_container(cfg, resolve=True), **resume)
        loggers.append(logger)
    return loggers


def build_trainer(cfg: DictConfig, run_dir: Path) -> pl.Trainer:
    """The Trainer without loggers (`train` attaches them once the Trainer is known to be buildable)."""
    callbacks = []
    if cfg.trainer.enable_progress_bar:
        from pytorch_lightning.callbacks import RichProgressBar
        callbacks.append(RichProgressBar(leave=True))
    # Checkpoint callbacks come from each domain module's configure_callbacks (they know their progress axis).
    return pl.Trainer(accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices, strategy=cfg.trainer.strategy,
                      precision=cfg.trainer.precision, max_epochs=1, logger=False,
                      callbacks=callbacks, enable_progress_bar=cfg.trainer.enable_progress_bar,
                      enable_checkpointing=False, enable_model_summary=False,
                      num_sanity_val_steps=0, log_every_n_steps=cfg.trainer.log_every_n_steps,
                      # The modules draw their own batches; the dataloader only counts steps, which every rank
                      # must take in full (a DistributedSampler would split them between the ranks).
                      use_distributed_sampler=False,
                      default_root_dir=str(run_dir))


def train(cfg: DictConfig) -> dict:
    """Train one run in cfg.run_dir (or continue one: loop.resume), holding its directory against other processes."""
    from aihf.run_dir import hold_run_dir, release_dir
    taken = [Path(cfg.run_dir)] if hold_run_dir(Path(cfg.run_dir)) else []  # (a Hydra job's is held by its callback)
    try:
        return _train(cfg, taken)
    finally:
        for path in taken:
            release_dir(path)


def _train(cfg: DictConfig, taken: list[Path]) -> dict:
    from aihf.checks import check_config, job_overrides
    from aihf.resume import check_same_run, load_checkpoint, resolve_resume, run_dir_of, schema_defaults
    from aihf.run_dir import check_new_run_dir, finished_record, hold_run_dir, save_metrics
    check_config(cfg, job_overrides())
    module_cls = hydra.utils.get_class(cfg.domain.module)
    record = finished_record(cfg, Path(cfg.run_dir))
    if record is not None:
        print(f"loop.resume=auto: the run in {cfg.run_dir} is finished (its metrics.json, no checkpoint); "
              f"nothing to resume")
        return record
    ckpt_path = resolve_resume(cfg.loop.resume, Path(cfg.run_dir))
    resume_step, resumed_state = None, None
    if ckpt_path is not None:
        if not getattr(module_cls, "EXACT_RESUME", False):
            raise ConfigError(f"loop.resume: the {cfg.domain.name} domain does not resume exactly yet; "
                              f"continue a run with loop.init_from")
        ckpt = load_checkpoint(ckpt_path, "loop.resume")
        state = ckpt.get(module_cls.STATE_KEY)
        if state is None or "hyper_parameters" not in ckpt:
            raise ConfigError(f"loop.resume={ckpt_path} is not a checkpoint of an aihf {module_cls.DOMAIN} run")
        added = check_same_run(ckpt["hyper_parameters"]["cfg"], OmegaConf.to_container(cfg, resolve=True),
                               "loop.resume", module_cls.resumable(cfg), schema_defaults())
        if added:
            print(f"loop.resume: {', '.join(added)} did not exist when the checkpoint was made; "
                  f"resumed at {'its default' if len(added) == 1 else 'their defaults'}")
        run_dir = run_dir_of(ckpt_path)
        with open_dict(cfg):
            cfg.run_dir = str(run_dir)
        if hold_run_dir(run_dir):  # resuming a run in another directory: that one is the run's
            taken.append(run_dir)
        resume_step, budget = state["progress"], module_cls.budget_of(cfg, state)
        if resume_step >= budget:
            if state["final_metrics"] is None:
                raise ConfigError(f"loop.resume: the checkpoint has taken {resume_step} steps, the budget is "
                                  f"{budget}: raise it above {resume_step} to continue the run")
            metrics = run_dir / "metrics.json"
            if not metrics.is_file():  # killed after its final checkpoint, before writing its results
                save_metrics(metrics, state["final_metrics"])
            print(f"loop.resume: the run in {run_dir} is finished ({resume_step} of {budget} steps); "
                  f"metrics in {metrics}")
            return json.loads(metrics.read_text())
        last = run_dir / "checkpoints" / "last.ckpt"
        if last.is_file() and not last.samefile(ckpt_path):
            newest = load_checkpoint(last, "loop.resume")[module_cls.STATE_KEY]["progress"]
            if newest > resume_step:
                raise ConfigError(f"loop.resume={ckpt_path} is at step {resume_step}, but the run's last checkpoint "
                                  f"is at step {newest}: resuming the older one would overwrite the run's later "
                                  f"outputs; start a new run from it with loop.init_from={ckpt_path}")
        # what the module checks against its own inputs once built (not the buffer: it is loaded by Lightning)
        resumed_state = {k: v for k, v in state.items() if k != "buffer"}
        del ckpt, state
    check_new_run_dir(Path(cfg.run_dir), resuming=ckpt_path is not None, resume_asked=cfg.loop.resume is not None)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = module_cls(cfg)  # validates config and data: bad input stops here, before any training
    if resumed_state is not None and hasattr(module, "check_resume"):
        module.check_resume(resumed_state)
    if cfg.loop.init_from:
        module.init_from(cfg.loop.init_from)
        if hasattr(module, "progress") and module.progress >= module.budget:
            raise ConfigError(f"loop.init_from={cfg.loop.init_from}: the checkpoint has already taken "
                              f"{module.progress} steps; raise the budget above that to continue it")
    run_dir = Path(cfg.run_dir)
    try:
        trainer = build_trainer(cfg, run_dir)  # an unusable accelerator or strategy fails here, before any logs
    except Exception as exc:  # Lightning's MisconfigurationException and friends
        raise ConfigError(f"trainer (accelerator={cfg.trainer.accelerator}, devices={cfg.trainer.devices}, "
                          f"strategy={cfg.trainer.strategy}): {str(exc).splitlines()[0]}") from None
    loggers = build_loggers(cfg, run_dir, resume_step)
    trainer.loggers = loggers
    try:
        trainer.fit(module, ckpt_path=ckpt_path, weights_only=True)
    finally:
        # Each run (each job of a --multirun sweep) is its own W&B run; an unfinished one would absorb the next.
        for logger in loggers:
            if type(logger).__name__ == "WandbLogger" and logger._experiment is not None:
                if trainer.is_global_zero:
                    (run_dir / "wandb_run_id").write_text(logger.experiment.id)
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
    from aihf.checks import check_config, job_overrides
    check_config(cfg, job_overrides())  # each job of a sweep (its swept values), and runs started from Python
    if cfg.task not in TASKS:
        raise ConfigError(f"task={cfg.task!r}: expected one of {TASKS}")
    if cfg.task in ("collect", "import") and cfg.domain.name != "mujoco":
        raise ConfigError(f"task={cfg.task} builds MuJoCo datasets, but this run has domain={cfg.domain.name}")
    if cfg.task == "collect":
        from aihf.mujoco.collect import collect
        return collect(cfg)
    if cfg.task == "import":
        from aihf.mujoco.importing import import_episodes
        return import_episodes(cfg)
    return train(cfg)
