"""What produced a result: the git commit of the code (and whether its tree had uncommitted changes), and the machine
and libraries that ran it."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
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


def machine() -> str:
    """The CPU model and core count, as /proc/cpuinfo names it (else platform's guess)."""
    cpu = platform.processor() or "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def platform_record() -> dict:
    """The machine and library versions a result was computed with: the same commit on another CPU or library
    version gives other numbers (floating-point kernels differ; the LLM sort table made again on an AMD EPYC did not
    reproduce the Intel Xeon's per-run values), so a table says where its runs ran. Libraries are listed where this
    process has imported them (nothing is imported to ask)."""
    import numpy
    import torch
    # plain str: torch.__version__ is a str subclass that a weights-only checkpoint load refuses
    out = {"machine": machine(), "python": platform.python_version(), "numpy": str(numpy.__version__),
           "torch": str(torch.__version__)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["gpu"] = torch.cuda.get_device_name()
    for name in ("transformers", "peft", "gymnasium", "mujoco", "pytorch_lightning"):
        if name in sys.modules:
            out[name] = str(getattr(sys.modules[name], "__version__", "unknown"))
    return out


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
