"""Lightning callbacks that schedule evaluation and checkpoints on the loop's own progress axis.

A domain module exposes `progress` (env steps, or gradient steps for behaviour cloning), `budget` (the progress
at which training ends) and `evaluate(final: bool) -> dict`. Lightning's `global_step` counts optimiser steps
(four per SAC update here), so it cannot say when N env steps have passed: these callbacks read `progress`.
Evaluation runs before checkpointing at the same batch end, so a checkpoint holds the evaluation it follows.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


def crossed(before: int, after: int, every: int) -> bool:
    return every > 0 and after // every > before // every


class EvaluateEvery(Callback):
    """Evaluate every `every` units of progress, and at the end of the budget with the final settings."""

    def __init__(self, every: int):
        self.every = every
        self._last = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._last = pl_module.progress

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = pl_module.progress
        if now == self._last:
            return  # an iteration with nothing left to do (Lightning fetches one item ahead of the budget)
        if now >= pl_module.budget:
            metrics = pl_module.evaluate(final=True)
        elif crossed(self._last, now, self.every):
            metrics = pl_module.evaluate(final=False)
        else:
            return
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=1)


class CheckpointEvery(Callback):
    """A complete checkpoint every `every` units of progress and at the end: written to a temporary file and
    renamed (a crash mid-write leaves the previous checkpoints intact), `last.ckpt` pointing at the newest, the
    newest `keep` periodic ones kept.

    A checkpoint that falls due at the end of a batch is written at the start of the next one (Lightning fetches
    one item past the budget, so there always is one): by then the loggers hold that batch's row, so a run killed
    right after the checkpoint has lost no logged step."""

    def __init__(self, dirpath: str | Path, every: int, keep: int = 3):
        self.dirpath = Path(dirpath)
        self.every, self.keep = every, max(1, keep)
        self._last = None
        self._due = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._due:
            self.save(trainer, pl_module.progress)
            self._due = False
        self._last = pl_module.progress

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = pl_module.progress
        if now != self._last and (now >= pl_module.budget or crossed(self._last, now, self.every)):
            self._due = True

    def on_train_end(self, trainer, pl_module) -> None:
        if self._due:  # no batch followed the last one that was due (the stream ended without a look-ahead)
            self.save(trainer, pl_module.progress)
            self._due = False

    def save(self, trainer: pl.Trainer, progress: int) -> Path:
        path = self.dirpath / f"step_{progress:010d}.ckpt"
        tmp = path.with_name(path.name + ".tmp")
        trainer.save_checkpoint(tmp)  # writes on global rank zero only
        if trainer.is_global_zero:
            os.replace(tmp, path)
            link_tmp = self.dirpath / "last.ckpt.tmp"
            if link_tmp.exists():
                link_tmp.unlink()
            try:
                os.link(path, link_tmp)  # a second name, not a copy: replay buffers make checkpoints large
            except OSError:
                shutil.copyfile(path, link_tmp)
            os.replace(link_tmp, self.dirpath / "last.ckpt")
            for old in sorted(self.dirpath.glob("step_*.ckpt"))[:-self.keep]:
                old.unlink()
        trainer.strategy.barrier()
        return path
