"""`run.py` in this process: the command line's exact path (Hydra's composition and callbacks, the job, the exit
code) without paying a new interpreter's imports for each of many cases."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("aihf_run_py", ROOT / "run.py")
run_py = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_py)
run_py.main.__wrapped__.__module__ = "__main__"  # Hydra then finds conf/ beside run.py, as for `python run.py`


def run_cli(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python run.py *args` run from `cwd`."""
    out, err = io.StringIO(), io.StringIO()
    old_argv, old_cwd = sys.argv, os.getcwd()
    sys.argv = [str(ROOT / "run.py"), *args]
    code = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run_py.cli()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    return code, out.getvalue(), err.getvalue()
