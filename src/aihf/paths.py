"""Where relative paths in a config point: the directory the command was typed in, else the project.

Hydra does not change the working directory here (`hydra.job.chdir: false`), but a run started from another
directory must still find what the project ships or prepares (`data/llm/`, `models/`, `../shared/...` in
`conf/llm_data/hh_harmless.yaml`): those config values are written relative to the project root.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def launch_dir() -> Path:
    """Hydra's original working directory (the caller's), or the current one outside a Hydra run."""
    try:
        from hydra.core.hydra_config import HydraConfig
        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.cwd)
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return Path(os.getcwd())


def resolve(path: str | None) -> str | None:
    """An existing path as given (absolute, or relative to the launch directory), else relative to the project root
    when it exists there; anything else (a hub name, a missing file) is returned unchanged for its own error."""
    if not path:
        return path
    given = Path(path).expanduser()
    if given.is_absolute():
        return str(given)
    for base in (launch_dir(), PROJECT_ROOT):
        if (base / given).exists():
            return str(base / given)
    return path


def resolve_dir(path: str | None) -> str | None:
    """A directory the run writes to (it may not exist yet): absolute, or relative to the launch directory."""
    if not path:
        return path
    given = Path(path).expanduser()
    return str(given if given.is_absolute() else launch_dir() / given)


_TEMPORARY = ".tmp-"


def left_temporaries(path: Path) -> list[Path]:
    """The temporaries of `path` that `written_whole` left behind: a process killed before its rename."""
    path = Path(path)
    return sorted(path.parent.glob(f"{path.name}{_TEMPORARY}*"))


@contextmanager
def written_whole(path: Path):
    """A temporary path beside `path`, renamed to it when the block ends without error (removed otherwise): a
    process killed mid-write leaves the old file or none, never a truncated one that a later run would trust
    (a finished run's metrics.json, a ladder rung, a dataset)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}{_TEMPORARY}{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # on disk before the rename makes it the file (a machine that goes down too)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
