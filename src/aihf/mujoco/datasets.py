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

import hashlib
import json
import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aihf.errors import ConfigError
from aihf.paths import written_whole

DEMO, TRAIN, HELDOUT = 0, 1, 2
ARRAYS = {"obs": 2, "act": 2, "reward": 1, "traj_start": 1, "traj_len": 1, "traj_return": 1, "traj_policy": 1,
          "traj_split": 1, "pair_index": 2, "pair_label": 1, "pair_split": 1}

SHIPPED_DIR = Path(__file__).resolve().parents[3] / "data" / "mujoco"


def shipped_path(env_id: str) -> Path:
    return SHIPPED_DIR / f"{env_id}.npz"


def run_data_path(cfg) -> Path:
    """The dataset a MuJoCo run reads: `data.path`, else the env's shipped file."""
    return Path(cfg.data.path) if cfg.data.path else shipped_path(cfg.env.id)


def metadata_path(path: Path) -> Path:
    return path.with_suffix(".json")


log = logging.getLogger("aihf")


@dataclass
class TrajectoryDataset:
    arrays: dict[str, np.ndarray]
    metadata: dict
    path: Path | None = None
    sha256: str | None = None  # of the .npz and its .json: a run records which data it learned from, not a path

    # -- trajectories --------------------------------------------------------------------------------------
    def trajectories(self, split: int) -> np.ndarray:
        return np.flatnonzero(self.arrays["traj_split"] == split)

    def steps_of(self, trajs: np.ndarray) -> np.ndarray:
        s, n = self.arrays["traj_start"], self.arrays["traj_len"]
        return np.concatenate([np.arange(s[t], s[t] + n[t]) for t in trajs]) if len(trajs) else np.zeros(0, int)

    def transitions(self, trajs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        steps = self.steps_of(trajs)
        return torch.from_numpy(self.arrays["obs"][steps]), torch.from_numpy(self.arrays["act"][steps])

    def rewards(self, trajs: np.ndarray) -> np.ndarray:
        return self.arrays["reward"][self.steps_of(trajs)]

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
        # both written whole under temporary names, then renamed back to back: a writer killed mid-way leaves no
        # truncated file and (but for the instant between the renames) no half of the pair to block the rerun
        with written_whole(metadata_path(path)) as meta_tmp, written_whole(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **self.arrays)
            meta_tmp.write_text(json.dumps(self.metadata, indent=2, sort_keys=True))
        return path


def load_dataset(path: str | Path, obs_dim: int | None = None, act_dim: int | None = None,
                 env_id: str | None = None, action_bounds: tuple[np.ndarray, np.ndarray] | None = None,
                 anchors_given: bool = False) -> TrajectoryDataset:
    """Load and validate a dataset; every problem is one ConfigError line naming the file and the fault.

    `anchors_given`: the normalisation anchors come from the config (env.expert_return / env.random_return), so
    the metadata may lack them.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data file {path} does not exist (set data.path, or run task=collect to make one)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ConfigError(f"data file {path} is corrupt or not an .npz archive: {exc}") from None
    meta_file = metadata_path(path)
    for key, ndim in ARRAYS.items():
        if key not in arrays:
            raise ConfigError(f"data file {path} lacks the array {key!r}")
    if not meta_file.is_file():
        raise ConfigError(f"data file {path} has no metadata file {meta_file}")
    try:
        metadata = json.loads(meta_file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"metadata {meta_file} is not UTF-8 text (byte offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"metadata {meta_file} is not valid JSON: line {exc.lineno}: {exc.msg}") from None
    validate(arrays, metadata, str(path), obs_dim, act_dim, env_id, action_bounds, anchors_given, str(meta_file))
    return TrajectoryDataset(arrays, metadata, path, dataset_sha256(path))


def dataset_sha256(path: Path) -> str:
    """The dataset's identity: its .npz and its metadata (the anchors and the teacher live there)."""
    digest = hashlib.sha256(Path(path).read_bytes())
    digest.update(metadata_path(Path(path)).read_bytes())
    return digest.hexdigest()


def validate(arrays: dict[str, np.ndarray], metadata, where: str, obs_dim: int | None = None,
             act_dim: int | None = None, env_id: str | None = None,
             action_bounds: tuple[np.ndarray, np.ndarray] | None = None, anchors_given: bool = False,
             meta_where: str | None = None) -> None:
    """Check a dataset's arrays (cast in place where lossless enough) and metadata; raise one line per fault."""
    path, meta_file = where, meta_where or f"{where} metadata"

    def fail(msg: str):
        raise ConfigError(f"data file {path}: {msg}")

    for key, ndim in ARRAYS.items():
        if arrays[key].ndim != ndim:
            fail(f"{key} has {arrays[key].ndim} dims, expected {ndim}")
    for key in ("obs", "act", "reward", "traj_return", "pair_label"):
        if arrays[key].dtype.kind != "f":
            fail(f"{key} has dtype {arrays[key].dtype}, expected floating point")
        bad = ~np.isfinite(arrays[key])
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            fail(f"{key} contains NaN or inf (first at row {row})")
    for key in ("traj_start", "traj_len", "traj_policy", "traj_split", "pair_index", "pair_split"):
        if arrays[key].dtype.kind not in "iu":
            fail(f"{key} has dtype {arrays[key].dtype}, expected an integer type")
        arrays[key] = arrays[key].astype(np.int64)
    if not isinstance(metadata, dict):
        raise ConfigError(f"metadata {meta_file}: expected a JSON object, found {type(metadata).__name__}")
    if not isinstance(metadata.get("env_id"), str):
        raise ConfigError(f"metadata {meta_file}: lacks env_id (the gymnasium id the data was recorded on, "
                          f"e.g. \"Hopper-v5\")")
    for key in ("expert_return", "random_return"):
        value = metadata.get(key)
        if value is None and not anchors_given:
            raise ConfigError(f"metadata {meta_file}: lacks {key}, needed for the normalised score: add it, or "
                              f"state both anchors as env.expert_return and env.random_return")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise ConfigError(f"metadata {meta_file}: {key} should be a finite number, found {value!r}")
    for key in ("obs", "act", "reward"):
        if arrays[key].dtype == np.float64:  # numpy's default, and what most external sources store
            log.info("data file %s: %s is float64; using it as float32", path, key)
            arrays[key] = arrays[key].astype(np.float32)
        elif arrays[key].dtype != np.float32:
            fail(f"{key} has dtype {arrays[key].dtype}, expected float32")
    steps = arrays["obs"].shape[0]
    if arrays["act"].shape[0] != steps or arrays["reward"].shape[0] != steps:
        fail("obs, act and reward have different numbers of steps")
    n_traj = len(arrays["traj_len"])
    for key in ("traj_start", "traj_return", "traj_policy", "traj_split"):
        if len(arrays[key]) != n_traj:
            fail(f"{key} has {len(arrays[key])} rows but traj_len has {n_traj}")
    n_pairs = len(arrays["pair_index"])
    for key in ("pair_label", "pair_split"):
        if len(arrays[key]) != n_pairs:
            fail(f"{key} has {len(arrays[key])} rows but pair_index has {n_pairs}")
    if n_traj:
        first_bad = lambda mask: int(np.flatnonzero(mask)[0])  # noqa: E731
        if (arrays["traj_len"] < 1).any():
            t = first_bad(arrays["traj_len"] < 1)
            fail(f"traj_len row {t} is {arrays['traj_len'][t]}, expected at least 1")
        end = arrays["traj_start"] + arrays["traj_len"]
        if (arrays["traj_start"] < 0).any() or end.max() > steps:
            t = first_bad((arrays["traj_start"] < 0) | (end > steps))
            fail(f"trajectory {t} (traj_start {arrays['traj_start'][t]}, traj_len {arrays['traj_len'][t]}) "
                 f"runs outside the {steps} stored steps")
        if not np.isin(arrays["traj_split"], (DEMO, TRAIN, HELDOUT)).all():
            t = first_bad(~np.isin(arrays["traj_split"], (DEMO, TRAIN, HELDOUT)))
            fail(f"traj_split row {t} is {arrays['traj_split'][t]}, expected 0 (demo), 1 (train) or 2 (held-out)")
        policies = metadata.get("policies")
        if isinstance(policies, list):
            bad = (arrays["traj_policy"] < 0) | (arrays["traj_policy"] >= len(policies))
            if bad.any():
                t = first_bad(bad)
                fail(f"traj_policy row {t} is {arrays['traj_policy'][t]}, but the metadata lists "
                     f"{len(policies)} policies")
        sums = np.array([arrays["reward"][s:s + n].astype(np.float64).sum()
                         for s, n in zip(arrays["traj_start"], arrays["traj_len"])])
        off = np.abs(sums - arrays["traj_return"]) > 1e-3 * np.maximum(1.0, np.abs(sums))
        if off.any():
            t = first_bad(off)
            fail(f"traj_return row {t} is {arrays['traj_return'][t]:g}, but its rewards sum to {sums[t]:g}")
    if obs_dim is not None and arrays["obs"].shape[1] != obs_dim:
        fail(f"observations have dimension {arrays['obs'].shape[1]}, but env {env_id} has observation dimension "
             f"{obs_dim}")
    if act_dim is not None and arrays["act"].shape[1] != act_dim:
        fail(f"actions have dimension {arrays['act'].shape[1]}, but env {env_id} has action dimension {act_dim}")
    if env_id is not None and metadata["env_id"] != env_id:
        raise ConfigError(f"data file {path} was collected on {metadata['env_id']}, but env.id={env_id}")
    if action_bounds is not None and steps and arrays["act"].shape[1] == len(action_bounds[0]):
        low, high = (np.asarray(b, dtype=np.float32) for b in action_bounds)
        outside = (arrays["act"] < low - 1e-6) | (arrays["act"] > high + 1e-6)
        if outside.any():
            row, col = (int(i) for i in np.argwhere(outside)[0])
            fail(f"act row {row} column {col} is {arrays['act'][row, col]:g}, outside the env's action bounds "
                 f"[{low[col]:g}, {high[col]:g}]")
    pair_index = arrays["pair_index"]
    if n_pairs:
        if pair_index.shape[1] != 6:
            fail(f"pair_index has {pair_index.shape[1]} columns, expected 6 (traj_a, start_a, len_a, traj_b, "
                 f"start_b, len_b)")
        if pair_index.min() < 0 or pair_index[:, [2, 5]].min() < 1:
            row = int(np.argwhere((pair_index < 0) | (np.arange(6) % 3 == 2) & (pair_index < 1))[0][0])
            fail(f"pair_index row {row} has a negative index or an empty segment ({pair_index[row].tolist()})")
        if pair_index[:, [0, 3]].max() >= n_traj:
            fail("pair_index refers to trajectories that do not exist")
        labels = arrays["pair_label"]
        if ((labels < 0) | (labels > 1)).any():
            row = int(np.flatnonzero((labels < 0) | (labels > 1))[0])
            fail(f"pair_label row {row} is {labels[row]:g}, expected a value in [0, 1]")
        for t, s, n in ((0, 1, 2), (3, 4, 5)):
            if (pair_index[:, s] + pair_index[:, n] > arrays["traj_len"][pair_index[:, t]]).any():
                fail("a preference segment runs past the end of its trajectory")
        if not np.isin(arrays["pair_split"], (TRAIN, HELDOUT)).all():
            row = int(np.flatnonzero(~np.isin(arrays["pair_split"], (TRAIN, HELDOUT)))[0])
            fail(f"pair_split row {row} is {arrays['pair_split'][row]}, expected 1 (train) or 2 (held-out)")
        # Split hygiene: a pair's trajectories belong to the pair's own split, so held-out metrics never see
        # training trajectories (and training never sees held-out ones).
        for side in (0, 3):
            leak = arrays["traj_split"][pair_index[:, side]] != arrays["pair_split"]
            if leak.any():
                row = int(np.flatnonzero(leak)[0])
                names = {DEMO: "demonstration", TRAIN: "train", HELDOUT: "held-out"}
                fail(f"pair row {row} ({names[int(arrays['pair_split'][row])]}) uses trajectory "
                     f"{pair_index[row, side]} of the {names[int(arrays['traj_split'][pair_index[row, side]])]} "
                     f"split; pairs may only use trajectories of their own split")
