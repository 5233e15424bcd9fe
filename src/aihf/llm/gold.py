"""Programmatic gold rewards by name (llm.data.gold): the headline metric of the built-in tasks."""

from __future__ import annotations

from typing import Callable

from aihf.errors import ConfigError
from aihf.llm import sort_task

GOLD: dict[str, Callable[[str, str], float]] = {"sort": sort_task.gold_reward}


def get_gold(name: str | None) -> Callable[[str, str], float] | None:
    if name is None:
        return None
    if name not in GOLD:
        raise ConfigError(f"llm.data.gold={name!r}: expected one of {sorted(GOLD)} or null")
    return GOLD[name]
