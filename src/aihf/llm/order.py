"""Data order like a real trainer's: each data part is read in shuffled epochs without replacement.

Every epoch's permutation is a function of (seed, part, epoch), so the whole order state is two integers
(epoch, position) that a checkpoint stores and a resumed run continues from mid-epoch. Under DDP every rank draws
the same permutation and takes its own slice of each step's indices, as `DistributedSampler` does: one step of
`world` ranks × k indices reads the same items as one process taking world × k.
"""

from __future__ import annotations

import zlib

import torch


class EpochOrder:
    def __init__(self, n: int, seed: int, part: str, rank: int = 0, world: int = 1):
        if n <= 0:
            raise ValueError(f"no {part} to draw from")
        self.n, self.rank, self.world = n, rank, world
        self.seed = (seed * 1_000_003 + zlib.crc32(part.encode())) % 2**62
        self.epoch, self.pos = 0, 0
        self._perm: tuple[int, list[int]] | None = None

    def permutation(self, epoch: int) -> list[int]:
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            self._perm = (epoch, torch.randperm(self.n, generator=gen).tolist())
        return self._perm[1]

    def take(self, k: int) -> list[int]:
        """This rank's k indices of the next world × k in the order (a batch may run across an epoch's end)."""
        need, step = self.world * k, []
        while len(step) < need:
            n = min(need - len(step), self.n - self.pos)
            step += self.permutation(self.epoch)[self.pos:self.pos + n]
            self.pos += n
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
        return step[self.rank * k:(self.rank + 1) * k]

    @property
    def epochs_done(self) -> float:
        return self.epoch + self.pos / self.n

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        if state["n"] != self.n:
            raise ValueError(f"the checkpoint's order covers {state['n']} rows, this run has {self.n}")
        self.epoch, self.pos = state["epoch"], state["pos"]
