"""MuJoCo datasets: trajectories and preference pairs in one `.npz` (no pickles) with JSON metadata beside it.

Layout of the `.npz` (all steps of all trajectories concatenated):
  obs (S, obs_dim) float32, act (S, act_dim) float32, reward (S,) float32 true env reward
  traj_start, traj_len (T,) int64; traj_return (T,) float64; traj_policy (T,) int64 index into
  metadata["policies"]; traj_split (T,) int64: 0 demonstration, 1 train, 2 held-out
  pair_index (P, 6) int64: traj_a, start_a, len_a, traj_b, start_b, len_b; pair_label (P,) float32 = P(a ≻ b);
  pair_split (P,) int64: 1 train, 2 held-out
The metadata (`<name>.json`) records env id and version, dims, each policy's name and return, the expert's and
a random policy's returns, the teacher, seeds and library versions.
"""

from __future__ import annotations

import json
import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aihf.errors import ConfigError

DEMO, TRAIN, HELDOUT = 0, 1, 2
ARRAYS = {"obs": 2, "act": 2, "reward": 1, "traj_start": 1, "traj_len": 1, "traj_return": 1, "traj_policy": 1,
          "traj_split": 1, "pair_index": 2, "pair_label": 1, "pair_split": 1}

SHIPPED_DIR = Path(__file__).resolve().parents[3] / "data" / "mujoco"


def shipped_path(env_id: str) -> Path:
    return SHIPPED_DIR / f"{env_id}.npz"


def metadata_path(path: Path) -> Path:
    return path.with_suffix(".json")


log = logging.getLogger("aihf")


@dataclass
class TrajectoryDataset:
    arrays: dict[str, np.ndarray]
    metadata: dict
    path: Path | None = None

    # -- trajectories --------------------------------------------------------------------------------------
    def trajectories(self, split: int) -> np.ndarray:
        return np.flatnonzero(self.arrays["traj_split"] == split)

    def steps_of(self, trajs: np.ndarray) -> np.ndarray:
        s, n = self.arrays["traj_start"], self.arrays["traj_len"]
        return np.concatenate([np.arange(s[t], s[t] + n[t]) for t in trajs]) if len(trajs) else np.zeros(0, int)

    def transitions(self, trajs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        steps = self.steps_of(trajs)
        return torch.from_numpy(self.arrays["obs"][steps]), torch.from_numpy(self.arrays["act"][steps])

    def pairs(self, split: int, limit: int | None = None) -> np.ndarray:
        idx = np.flatnonzero(self.arrays["pair_split"] == split)
        return idx if limit is None else idx[:limit]

    def segments(self, pair_ids: np.ndarray) -> dict[str, torch.Tensor]:
        """Padded (B, L, ·) observations, actions and masks of both sides of the given pairs."""
        index = self.arrays["pair_index"][pair_ids]
        width = int(index[:, [2, 5]].max()) if len(index) else 1
        out = {}
        for side, (tcol, scol, lcol) in (("a", (0, 1, 2)), ("b", (3, 4, 5))):
            lengths = index[:, lcol]
            starts = self.arrays["traj_start"][index[:, tcol]] + index[:, scol]
            offsets = np.arange(width)
            mask = offsets[None, :] < lengths[:, None]
            steps = np.where(mask, starts[:, None] + offsets[None, :], 0)
            out[f"obs_{side}"] = torch.from_numpy(self.arrays["obs"][steps])
            out[f"act_{side}"] = torch.from_numpy(self.arrays["act"][steps])
            out[f"mask_{side}"] = torch.from_numpy(mask.astype(np.float32))
            out[f"true_{side}"] = torch.from_numpy((self.arrays["reward"][steps] * mask).sum(1))
        out["label"] = torch.from_numpy(self.arrays["pair_label"][pair_ids].astype(np.float32))
        return out

    # -- I/O -----------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.exists() or metadata_path(path).exists():
            raise ConfigError(f"{path} already exists: choose a new collect.output (nothing was overwritten)")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **self.arrays)
        metadata_path(path).write_text(json.dumps(self.metadata, indent=2, sort_keys=True))
        return path


def load_dataset(path: str | Path, obs_dim: int | None = None, act_dim: int | None = None,
                 env_id: str | None = None) -> TrajectoryDataset:
    """Load and validate a dataset; every problem is one ConfigError line naming the file and the fault."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data file {path} does not exist (set data.path, or run task=collect to make one)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ConfigError(f"data file {path} is corrupt or not an .npz archive: {exc}") from None
    for key, ndim in ARRAYS.items():
        if key not in arrays:
            raise ConfigError(f"data file {path} lacks the array {key!r}")
        if arrays[key].ndim != ndim:
            raise ConfigError(f"data file {path}: {key} has {arrays[key].ndim} dims, expected {ndim}")
    for key in ("obs", "act", "reward", "traj_return", "pair_label"):
        bad = ~np.isfinite(arrays[key])
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise ConfigError(f"data file {path}: {key} contains NaN or inf (first at row {row})")
    meta_file = metadata_path(path)
    if not meta_file.is_file():
        raise ConfigError(f"data file {path} has no metadata file {meta_file}")
    try:
        metadata = json.loads(meta_file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"metadata {meta_file} is not UTF-8 text (byte offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"metadata {meta_file} is not valid JSON: line {exc.lineno}: {exc.msg}") from None
    if not isinstance(metadata, dict):
        raise ConfigError(f"metadata {meta_file}: expected a JSON object, found {type(metadata).__name__}")
    for key in ("expert_return", "random_return"):
        value = metadata.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise ConfigError(f"metadata {meta_file}: {key} should be a finite number, found {value!r}")
    for key in ("obs", "act", "reward"):
        if arrays[key].dtype == np.float64:  # numpy's default, and what most external sources store
            log.info("data file %s: %s is float64; using it as float32", path, key)
            arrays[key] = arrays[key].astype(np.float32)
        elif arrays[key].dtype != np.float32:
            raise ConfigError(f"data file {path}: {key} has dtype {arrays[key].dtype}, expected float32")
    steps = arrays["obs"].shape[0]
    if arrays["act"].shape[0] != steps or arrays["reward"].shape[0] != steps:
        raise ConfigError(f"data file {path}: obs, act and reward have different numbers of steps")
    end = arrays["traj_start"] + arrays["traj_len"]
    if len(end) and (end.max() > steps or arrays["traj_start"].min() < 0):
        raise ConfigError(f"data file {path}: a trajectory runs past the {steps} stored steps")
    if obs_dim is not None and arrays["obs"].shape[1] != obs_dim:
        raise ConfigError(f"data file {path}: observations have dimension {arrays['obs'].shape[1]}, "
                          f"but env {env_id} has observation dimension {obs_dim}")
    if act_dim is not None and arrays["act"].shape[1] != act_dim:
        raise ConfigError(f"data file {path}: actions have dimension {arrays['act'].shape[1]}, "
                          f"but env {env_id} has action dimension {act_dim}")
    if env_id is not None and metadata.get("env_id") not in (None, env_id):
        raise ConfigError(f"data file {path} was collected on {metadata['env_id']}, but env.id={env_id}")
    pair_index = arrays["pair_index"]
    if len(pair_index):
        n_traj = len(arrays["traj_len"])
        if pair_index.shape[1] != 6 or pair_index[:, [0, 3]].max() >= n_traj:
            raise ConfigError(f"data file {path}: pair_index refers to trajectories that do not exist")
        if pair_index.min() < 0 or pair_index[:, [2, 5]].min() < 1:
            row = int(np.argwhere((pair_index < 0) | (np.arange(6) % 3 == 2) & (pair_index < 1))[0][0])
            raise ConfigError(f"data file {path}: pair_index row {row} has a negative index or an empty segment "
                              f"({pair_index[row].tolist()})")
        labels = arrays["pair_label"]
        if ((labels < 0) | (labels > 1)).any():
            row = int(np.flatnonzero((labels < 0) | (labels > 1))[0])
            raise ConfigError(f"data file {path}: pair_label row {row} is {labels[row]:g}, expected a value in [0, 1]")
        for t, s, n in ((0, 1, 2), (3, 4, 5)):
            if (pair_index[:, s] + pair_index[:, n] > arrays["traj_len"][pair_index[:, t]]).any():
                raise ConfigError(f"data file {path}: a preference segment runs past the end of its trajectory")
    return TrajectoryDataset(arrays, metadata, path)
