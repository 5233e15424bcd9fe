"""What produced a result: the git commit of the code (and whether its tree had uncommitted changes)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """`<sha>`, `<sha>-dirty` when tracked files differ from it, or None outside a git checkout (an installed
    wheel)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def last_commit_of(path: Path) -> str | None:
    """The commit that last changed a tracked file (say a shipped dataset), or None where it is not committed."""
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%H", "--", str(Path(path).resolve())], cwd=PROJECT,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def commit_record(started: str | None) -> dict:
    """metrics.json's provenance: the commit the run started at (read when its module was built, so later edits or
    commits while it trains are not credited with it), and the one a resumed run continued under when that differs
    (a checkpoint from before this record: started None)."""
    now = git_commit()
    return {"git_commit": started, **({"git_commit_resumed": now} if now != started else {})}
