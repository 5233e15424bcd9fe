"""Continuing an earlier run (`loop.init_from`), shared by the domain modules: every piece of training state is
owned by the module, so its checkpoint alone restores models, optimisers, counters and generators."""

from __future__ import annotations

from pathlib import Path

import torch

from aihf.errors import ConfigError


class StepIndices(torch.utils.data.Dataset):
    """Lightning needs a dataloader; the domain modules draw their own data (from checkpointed generators), so
    each item is just the index of one loop iteration."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class Continuable:
    """Mixin for a LightningModule whose `on_save_checkpoint` stores its loop state under `STATE_KEY`."""

    STATE_KEY = "aihf"
    DOMAIN = ""

    def init_from(self, path: str) -> None:
        """Load an earlier run's checkpoint; its optimiser states are applied once the optimisers exist."""
        if not Path(path).is_file():
            raise ConfigError(f"loop.init_from={path} does not exist")
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if self.STATE_KEY not in ckpt:
            raise ConfigError(f"loop.init_from={path} is not a checkpoint of an aihf {self.DOMAIN} run")
        self.load_state_dict(ckpt["state_dict"])
        self.on_load_checkpoint(ckpt)
        self._pending_optimizer_states = ckpt["optimizer_states"]

    def restore_pending_optimizers(self, optimizers) -> None:
        for opt, state in zip(optimizers, getattr(self, "_pending_optimizer_states", [])):
            opt.load_state_dict(state)
        self._pending_optimizer_states = []
