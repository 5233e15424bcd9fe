"""NaN and infinity in training, shared by both domains: by default the first one stops the run (naming the term,
the step and the term's last finite value); with `nonfinite=skip` an update whose loss or gradients are not
finite is dropped and counted instead, so one bad batch does not end a long run."""

from __future__ import annotations

import math

import torch

from aihf.errors import TrainingDiverged


def _grads(optimizer) -> list[torch.Tensor]:
    opt = getattr(optimizer, "optimizer", optimizer)  # a LightningOptimizer wraps the torch one
    return [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]


def update_is_finite(loss: torch.Tensor, optimizer) -> bool:
    """The loss and every gradient this optimiser would apply are finite. One host–device sync, which is why only
    the skip mode asks before each step (the stop mode checks losses and parameters once per logged iteration)."""
    flags = [torch.isfinite(loss).all(), *(torch.isfinite(g).all() for g in _grads(optimizer))]
    return bool(torch.stack(flags).all())


def grad_norm(optimizer) -> torch.Tensor:
    """The global L2 norm of the gradients this optimiser would apply (NaN or inf if any gradient is)."""
    grads = _grads(optimizer)
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]))


class FiniteWatch:
    """Remembers each term's last finite value, for the one line that stops a diverging run."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def first_bad(self, values: dict[str, float]) -> tuple[str, float] | None:
        return next(((k, v) for k, v in values.items() if not math.isfinite(v)), None)

    def message(self, term: str, value: float, step: int) -> str:
        last = self.last.get(term)
        return f"{term} = {value} at step {step} (last finite value {'none' if last is None else f'{last:.6g}'})"

    def check(self, values: dict[str, float], step: int) -> None:
        """Raise TrainingDiverged at the first non-finite value; otherwise remember these as the last finite."""
        bad = self.first_bad(values)
        if bad is not None:
            raise TrainingDiverged(self.message(*bad, step))
        self.last.update(values)
