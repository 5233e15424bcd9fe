"""A finished run's configuration composed again at this commit, from its own command line (`.hydra/overrides.yaml`)
and the values it ran with for keys added since: what `aihf.llm.reevaluate` and `aihf.mujoco.reevaluate` build
their modules from."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import yaml
from omegaconf import open_dict

from aihf.errors import ConfigError
from aihf.paths import left_temporaries

PROJECT = Path(__file__).resolve().parents[2]


def run_overrides(run: Path) -> list[str]:
    """The command line a run was made with, less what only concerned where and whether it resumed."""
    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        raise ConfigError(f"{run}: no .hydra/overrides.yaml, so its configuration cannot be composed again")
    return [o for o in yaml.safe_load(path.read_text()) or []
            if not o.startswith(("loop.resume=", "loop.init_from=", "hydra.", "run_dir="))]


def predating(run: Path) -> list[str]:
    """Overrides that give keys added since the run was made the value the run ran with (BEFORE_KEY_EXISTED)."""
    from aihf.config import BEFORE_KEY_EXISTED
    from aihf.resume import flatten
    path = run / ".hydra" / "config.yaml"
    saved = flatten(yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    return [f"{k}={v}" for k, v in BEFORE_KEY_EXISTED.items() if saved and k not in saved]


def compose_run(run: Path, overrides: list[str], out: Path):
    from hydra import compose, initialize_config_dir
    from aihf.config import register_configs
    register_configs()
    with initialize_config_dir(config_dir=str(PROJECT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*run_overrides(run), *predating(run), *overrides])
    with open_dict(cfg):
        cfg.run_dir = str(out)
        cfg.trainer.enable_checkpointing = False
    return cfg


# What composing a run again leaves out or sets on purpose: where and whether it resumed (run_overrides drops these),
# and checkpointing (compose_run turns it off).
RECOMPOSED = ("run_dir", "loop.resume", "loop.init_from", "hydra.", "trainer.enable_checkpointing")


def config_changes(run: Path, cfg, allowed: tuple[str, ...] = RECOMPOSED) -> list[str]:
    """Settings of the recomposed `cfg` that differ from the run's own `.hydra/config.yaml` ("key: then → now"), other
    than `allowed` and keys added since the run (which `predating` sets to the value it ran with)."""
    from omegaconf import OmegaConf
    from aihf.resume import flatten
    path = run / ".hydra" / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run}: no .hydra/config.yaml, so its configuration cannot be checked")
    saved = flatten(yaml.safe_load(path.read_text()) or {})
    now = flatten(OmegaConf.to_container(cfg, resolve=False))
    return [f"{k}: {saved[k]} → {now.get(k, '(removed)')}" for k in sorted(saved)
            if not k.startswith(allowed) and now.get(k, "(removed)") != saved[k]]


def _interrupted(out: Path) -> bool:
    """An output folder that an evaluation killed before it finished left behind: made, but its metrics.json never
    written (at most the temporary that `written_whole` writes it through)."""
    return (out.is_dir() and not (out / "metrics.json").exists()
            and set(out.iterdir()) <= set(left_temporaries(out / "metrics.json")))


def check_new_output(out: Path) -> None:
    """Refuses an output folder that holds anything but an interrupted evaluation's leftovers (nothing is
    overwritten)."""
    if out.exists() and not _interrupted(out):
        raise ConfigError(f"reevaluate: {out} already exists; choose another --out (nothing is overwritten)")


def save_output(out: Path, record: dict) -> None:
    """`record` as `out/metrics.json`, in a folder that `check_new_output` accepted: an interrupted evaluation's
    temporary is removed first, so the folder holds the measured record alone."""
    from aihf.run_dir import save_metrics
    check_new_output(out)
    out.mkdir(parents=True, exist_ok=True)
    for leftover in left_temporaries(out / "metrics.json"):
        leftover.unlink()
    save_metrics(out / "metrics.json", record)


def new_outputs(runs: list[Path], out: Path, name: Callable[[Path], str]) -> Iterator[tuple[Path, Path]]:
    """(run, its output folder `out/name(run)`) for each run not yet evaluated into `out`: one already there is
    skipped with a line, one whose evaluation was killed before it wrote its record is evaluated again, and two runs
    with one output name are refused before anything is evaluated."""
    names = [name(r.resolve()) for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError("reevaluate: two runs share an output name; evaluate them into separate --out folders")
    for run, n in zip(runs, names):
        if _interrupted(out / n):
            print(f"{out / n}: an earlier evaluation was interrupted before it wrote metrics.json: evaluated again",
                  flush=True)
        elif (out / n).exists():
            print(f"{out / n} exists: skipped (already evaluated)", flush=True)
            continue
        yield run, out / n
