"""Every `python run.py ...` command the README, docs/ and the experiment files show passes the config checks (key
names, types, ranges, domain scope): a documented command that a range check refuses is a bug in one of them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from aihf.checks import check_config, precheck_overrides
from conftest import CONF, compose_cfg

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
           *sorted((ROOT / "conf" / "experiment").glob("*.yaml"))]


def _first_of_sweep(arg: str) -> str:
    """k=a,b,c as one job (k=a); a list value [16,16] is one value."""
    key, _, value = arg.partition("=")
    return arg if value.startswith("[") or "," not in value else f"{key}={value.split(',')[0]}"


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in SOURCES:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "python run.py" not in line:
                continue
            tail = line.split("python run.py", 1)[1].split("#")[0].split("&&")[0].split("`")[0].split("|")[0]
            words = [w for w in shlex.split(tail.replace("\\", "")) if w != "--multirun"]
            if any(w in ("...", "…") for w in words):
                continue  # an elided command
            overrides = []
            for w in words:
                if not re.match(r"^[+~]?[\w./@-]+=", w):
                    break  # prose after the command
                overrides.append(w)
            args = [_first_of_sweep(w) for w in overrides if not re.search(r"<|hydra\.|\.\.\.", w)]
            found.append((f"{path.relative_to(ROOT)}:{n}", args))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("where,args", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_passes_the_checks(where, args):
    precheck_overrides(args, CONF)
    check_config(compose_cfg(args), args)


def figure_commands() -> list[tuple[str, list[str]]]:
    from aihf.figures import FIGURES, overrides_of
    found = []
    for name, fig in FIGURES.items():
        for i, sweep in enumerate(fig.sweeps):
            found.append((f"figures:{name}:{i}", [_first_of_sweep(w) for w in overrides_of(sweep)]))
    return found


@pytest.mark.parametrize("where,args", figure_commands(), ids=[w for w, _ in figure_commands()])
def test_every_figure_sweep_passes_the_checks(where, args):
    """`python -m aihf.figures run <name>` regenerates each results figure: each of its sweeps composes."""
    precheck_overrides(args, CONF)
    check_config(compose_cfg(args), args)
