"""Continuing an earlier run (`loop.init_from`), shared by the domain modules: every piece of training state is
owned by the module, so its checkpoint alone restores models, optimisers, counters and generators."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from omegaconf import OmegaConf

from aihf.errors import ConfigError


class BudgetStream(torch.utils.data.IterableDataset):
    """The loop's iterations as Lightning's "dataset": a module that collects its own data (an RL agent stepping
    its envs) yields one item per `training_step` until its `progress` reaches its `budget`. Ending on the
    module's own counters, not on a length, makes a run resumed mid-epoch take exactly the remaining steps."""

    def __init__(self, module):
        self.module = module

    def __iter__(self):
        i = 0
        while self.module.progress < self.module.budget:
            yield i
            i += 1


# Keys that may differ between an interrupted run and its resumption (a module's RESUMABLE; these are MuJoCo's):
# budgets and schedules of evaluation, checkpoints and logging, threads, progress display, and what the domain does
# not read. Everything else must match, or the result is not the run.
RESUMABLE_CHANGES = ("loop.total_env_steps", "loop.bc_steps", "loop.eval_every", "loop.eval_episodes",
                     "loop.final_eval_episodes", "loop.checkpoint_every", "loop.keep_checkpoints", "loop.resume",
                     "loop.init_from", "loop.torch_threads", "run_dir", "logger.", "trainer.enable_progress_bar",
                     "trainer.log_every_n_steps", "llm.", "collect.", "teacher.")


class Continuable:
    """Mixin for a LightningModule whose `on_save_checkpoint` stores its loop state under `STATE_KEY`."""

    STATE_KEY = "aihf"
    DOMAIN = ""
    # Settings a continued run must share with the checkpoint (a different task is not a continuation).
    INIT_FROM_SAME: tuple[str, ...] = ()
    RESUMABLE: tuple[str, ...] = RESUMABLE_CHANGES  # settings loop.resume may change

    @classmethod
    def resumable(cls, cfg) -> tuple[str, ...]:
        """The settings loop.resume may change for this run's configuration."""
        return cls.RESUMABLE

    def init_from(self, path: str) -> None:
        """Load an earlier run's checkpoint; its optimiser states are applied once the optimisers exist. A file of
        another domain, task, preset or architecture is refused in one line naming what differs."""
        what = f"loop.init_from={path}"
        if not Path(path).is_file():
            raise ConfigError(f"{what} does not exist")
        ckpt = load_checkpoint(Path(path), "loop.init_from")
        if self.STATE_KEY not in ckpt or "state_dict" not in ckpt:
            import aihf.llm.module  # noqa: F401  (every domain's module class, to name the checkpoint's)
            import aihf.mujoco.module  # noqa: F401
            other = next((c.DOMAIN for c in Continuable.__subclasses__() if c.STATE_KEY in ckpt), None)
            found = f"a checkpoint of an aihf {other} run" if other else "not an aihf checkpoint"
            raise ConfigError(f"{what} is {found}; this run is a {self.DOMAIN} run")
        saved = (ckpt.get("hyper_parameters") or {}).get("cfg") or {}
        for key in self.INIT_FROM_SAME:
            before, now = _select(saved, key), _select(OmegaConf.to_container(self.cfg, resolve=True), key)
            if before != now:
                raise ConfigError(f"{what} was made with {key}={before}, this run has {key}={now}")
        own = self.state_dict()
        theirs = ckpt["state_dict"]
        missing, unexpected = sorted(set(own) - set(theirs)), sorted(set(theirs) - set(own))
        if missing or unexpected:
            part = f"lacks {missing[0]}" if missing else f"has {unexpected[0]}, which this run does not"
            raise ConfigError(f"{what}: the checkpoint {part} ({len(missing)} missing, {len(unexpected)} unexpected "
                              f"tensors): another preset or model")
        for name, tensor in own.items():
            if tuple(theirs[name].shape) != tuple(tensor.shape):
                raise ConfigError(f"{what}: {name} has shape {tuple(theirs[name].shape)} in the checkpoint, "
                                  f"{tuple(tensor.shape)} in this run: another architecture")
        self.load_state_dict(theirs)
        self.on_load_checkpoint(ckpt)
        self._pending_optimizer_states = ckpt["optimizer_states"]

    def restore_pending_optimizers(self, optimizers) -> None:
        for opt, state in zip(optimizers, getattr(self, "_pending_optimizer_states", [])):
            opt.load_state_dict(state)
        self._pending_optimizer_states = []


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint that `loop.resume` names: a .ckpt file, a run directory (its checkpoints/last.ckpt), or
    `auto` (this run's directory if it holds a checkpoint; else None, a fresh start)."""
    if resume is None:
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None
    path = Path(resume)
    if path.is_dir():
        last = path / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise ConfigError(f"loop.resume={resume}: no checkpoint in this run directory ({last} does not exist)")
        return last
    if not path.is_file():
        raise ConfigError(f"loop.resume={resume} does not exist (expected a run directory, a .ckpt file or auto)")
    return path


def run_dir_of(ckpt: Path) -> Path:
    return ckpt.resolve().parent.parent  # <run_dir>/checkpoints/<file>.ckpt


def load_checkpoint(path: Path, what: str) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # a truncated or foreign file; torch's message is a paragraph, its first clause says it
        reason = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", str(exc).strip().splitlines()[0] if str(exc) else "")
        raise ConfigError(f"{what}={path} cannot be read as a checkpoint (truncated, corrupt or not a torch "
                          f"checkpoint): {reason.split('. ')[0]}") from None


def _select(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return "<absent>"
        d = d[part]
    return d


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dicts as one level of dotted keys (a config as `algo.beta: ...`)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def schema_defaults() -> dict:
    """Every schema key's default (aihf.config.Config), flattened to dotted keys."""
    from aihf.config import Config
    return flatten(OmegaConf.to_container(OmegaConf.structured(Config), resolve=False))


def check_same_run(saved_cfg: dict, cfg: dict, what: str, resumable: tuple[str, ...] = RESUMABLE_CHANGES,
                   defaults: dict | None = None) -> list[str]:
    """Refuse to resume a checkpoint under settings that would make a different run, naming the first key.

    A key the schema gained after the checkpoint was made is accepted at the value that keeps what the run did:
    its schema default (`defaults`), or for a key whose default changed that, its BEFORE_KEY_EXISTED value, which
    the error names. Returns those keys."""
    from aihf.config import BEFORE_KEY_EXISTED
    saved, now = flatten(saved_cfg), flatten(cfg)
    added = []
    for key in sorted(set(saved) | set(now)):
        if key.startswith(resumable):
            continue
        if key not in saved and defaults is not None and key in defaults:
            before = BEFORE_KEY_EXISTED.get(key, defaults[key])
            if now[key] == before:
                added.append(key)
                continue
            if key in BEFORE_KEY_EXISTED:
                raise ConfigError(f"{what}: the checkpoint was made before {key} existed, with what is now "
                                  f"{key}={before}; this run has {key}={now[key]!r}: resume with {key}={before}")
        if saved.get(key, "<absent>") != now.get(key, "<absent>"):
            raise ConfigError(f"{what}: the checkpoint was made with {key}={saved.get(key, '<absent>')!r}, this run "
                              f"has {key}={now.get(key, '<absent>')!r}; resume with the same settings "
                              f"(or start a new run from it with loop.init_from)")
    return added
