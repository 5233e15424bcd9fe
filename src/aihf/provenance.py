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
