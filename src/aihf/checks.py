"""Config checks that run when the config is composed, before anything is written.

Each key's allowed values are declared next to it in `aihf.config` (`key(default, at_least(1))`), so the check and
the documentation live together; which domain (or task) reads a key is declared there too. `check_config` refuses a
value out of range, or a key the chosen domain would silently ignore, in one line naming the key, its value and
what is allowed. It runs as a Hydra callback (`CheckConfig`, before Hydra writes its `.hydra/` snapshot) and again
in `aihf.app.run` (each job of a sweep, and runs started from Python).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from aihf.errors import ConfigError

# The scopes a key can belong to: the domain that reads it, `collect` (read by the tasks that build a dataset:
# task=collect and task=import), `import` (task=import only), or `any` (a key of a scoped group that every domain
# reads, such as loop.resume).
SCOPES = ("mujoco", "llm", "collect", "import", "teacher", "any")
DATASET_TASKS = ("collect", "import")


@dataclass(frozen=True)
class Range:
    """An interval of numbers (an open or closed bound on each side), finite unless `allow_inf`."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    allow_inf: bool = False

    def ok(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if math.isnan(v) or (math.isinf(v) and not self.allow_inf):
            return False
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            return False
        return not (self.high is not None and (v > self.high or (self.high_open and v == self.high)))

    def describe(self, integer: bool = False) -> str:
        num = "an integer" if integer else "a number" if self.allow_inf else "a finite number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{num} in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{num} {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{num} {'<' if self.high_open else '<='} {_num(self.high)}"
        return num


@dataclass(frozen=True)
class Choice:
    values: tuple

    def ok(self, v: Any) -> bool:
        return v in self.values

    def describe(self, integer: bool = False) -> str:
        return "one of " + ", ".join("null" if v is None else str(v) for v in self.values)


@dataclass(frozen=True)
class Each:
    """A list whose items each pass `item` (and which is not empty)."""
    item: Range

    def ok(self, v: Any) -> bool:
        return isinstance(v, (list, tuple)) and len(v) > 0 and all(self.item.ok(x) for x in v)

    def describe(self, integer: bool = False) -> str:
        return f"a non-empty list, each item {self.item.describe(integer)}"


@dataclass(frozen=True)
class Either:
    """A value that passes any of several checks (e.g. a positive number or the word alpha)."""
    options: tuple

    def ok(self, v: Any) -> bool:
        return any(o.ok(v) for o in self.options)

    def describe(self, integer: bool = False) -> str:
        return " or ".join(o.describe(integer) for o in self.options)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def at_least(low: float) -> Range:
    return Range(low=low)


def above(low: float, allow_inf: bool = False) -> Range:
    return Range(low=low, low_open=True, allow_inf=allow_inf)


def within(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Range:
    return Range(low, high, low_open, high_open)


def finite() -> Range:
    return Range()


def one_of(*values) -> Choice:
    return Choice(tuple(values))


def each(item: Range) -> Each:
    return Each(item)


def either(*options) -> Either:
    return Either(tuple(options))


def key(default: Any = dataclasses.MISSING, check: Range | Choice | Each | Either | None = None, *,
        factory: Callable[[], Any] | None = None, scope: str | None = None):
    """A schema field with its allowed values (`check`) and, where it differs from its group's, its scope."""
    metadata = {"check": check, "scope": scope}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# -- walking the schema ----------------------------------------------------------------------------------------
def _nested_type(tp) -> type | None:
    """The dataclass a field holds (Optional[X] included), or None."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def schema_keys(schema: type, prefix: str = "", scope: str | None = None):
    """(dotted key, check, scope, type) of every leaf of a structured-config dataclass."""
    hints = typing.get_type_hints(schema)
    group_scope = getattr(schema, "SCOPE", None) or scope
    for f in dataclasses.fields(schema):
        name = f"{prefix}{f.name}"
        nested = _nested_type(hints[f.name])
        if nested is not None:
            yield from schema_keys(nested, name + ".", f.metadata.get("scope") or group_scope)
        else:
            yield name, f.metadata.get("check"), f.metadata.get("scope") or group_scope, hints[f.name]


def check_ranges(cfg: DictConfig, schema: type) -> None:
    for name, check, _, tp in schema_keys(schema):
        if check is None:
            continue
        try:
            value = OmegaConf.select(cfg, name, throw_on_missing=False)
        except Exception:  # an interpolation only a running job can resolve (hydra:runtime...)
            continue
        if value is None and not isinstance(check, Choice):
            continue  # Optional keys: null means "use the default behaviour"
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if not check.ok(value):
            integer = tp is int or tp == typing.List[int]
            raise ConfigError(f"{name}={_show(value)}: expected {check.describe(integer)}")


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    return str(value)


# -- domain scope ----------------------------------------------------------------------------------------------
# Config groups that are not a schema node of the same name, and the scope of what they set.
GROUP_SCOPES = {"llm_data": "llm", "llm_model": "llm", "llm_reward": "llm", "debug": "mujoco"}
GROUP_HINTS = {"debug": " (for a short language-model run, lower llm.train.policy_steps)"}
SCOPE_NOTES = {
    "mujoco": "a MuJoCo setting",
    "llm": "a language-model setting",
    "collect": "read by task=collect and task=import only (a dataset's pairs are labelled when it is built)",
    "import": "read by task=import only (where external episodes come from)",
    "teacher": "read when a dataset's pairs are labelled (task=collect, task=import) or relabelled in training "
               "(data.relabel=true)",
}


def _key_scopes(schema: type) -> dict[str, str | None]:
    return {name: scope for name, _, scope, _ in schema_keys(schema)}


def _scope_of(key: str, scopes: dict[str, str | None]) -> str | None:
    """The scope of a key or of a group: a group's keys share one scope, or the group has none."""
    if key in GROUP_SCOPES:
        return GROUP_SCOPES[key]
    if key in scopes:
        return scopes[key]
    under = {s for k, s in scopes.items() if k.startswith(key + ".")}
    return under.pop() if len(under) == 1 else None


def parse_override_keys(overrides: Sequence[str]) -> list[tuple[str, str]]:
    """(key or group, the override as typed) of each command-line override, Hydra's own keys left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    out = []
    for text, o in zip(overrides, parsed):
        k = o.key_or_group
        if k.startswith("hydra.") or k == "hydra":
            continue
        out.append((k, text))
    return out


def check_scope(overrides: Sequence[str], domain: str, task: str, schema: type, relabel: bool = False) -> None:
    scopes = _key_scopes(schema)
    active = {None, "any", domain} | ({"collect", "mujoco", "teacher"} if task in DATASET_TASKS else set())
    if task == "import":
        active.add("import")
    if relabel and domain == "mujoco":
        active.add("teacher")
    for k, text in parse_override_keys(overrides):
        scope = _scope_of(k, scopes)
        if scope in active:
            continue
        where = f"task={task}" if scope in ("collect", "import", "teacher") else f"domain={domain}"
        hint = GROUP_HINTS.get(k, "") if domain == "llm" else ""
        if domain == "llm" and f"llm.{k}" in scopes:
            hint = f" (the language-model key is llm.{k})"
        raise ConfigError(f"{text}: {SCOPE_NOTES[scope]}, but this run has {where}; it would be ignored{hint}")


def check_config(cfg: DictConfig, overrides: Sequence[str] | None = None) -> None:
    from aihf.config import Config
    if overrides is not None:
        check_scope(overrides, cfg.domain.name, cfg.task, Config, bool(OmegaConf.select(cfg, "data.relabel")))
    check_ranges(cfg, Config)
    check_strategy(cfg)


def check_strategy(cfg: DictConfig) -> None:
    """Sharded strategies are the language-model domain's, on GPUs: refused in one line before Lightning's own
    error (a traceback) or a MuJoCo run that would ignore them."""
    t = cfg.trainer
    strategy = str(t.strategy)
    if not strategy.startswith(("fsdp", "deepspeed")):
        return
    if cfg.domain.name != "llm":
        raise ConfigError(f"trainer.strategy={strategy}: sharded strategies are for the language-model domain "
                          f"(domain=llm); this run has domain={cfg.domain.name}")
    if t.accelerator == "cpu":
        raise ConfigError(f"trainer.strategy={strategy} needs GPUs (Lightning's FSDP and DeepSpeed refuse "
                          f"trainer.accelerator=cpu); on a CPU use trainer=ddp")
    if strategy.startswith("deepspeed"):
        import importlib.util
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError(f"trainer.strategy={strategy} needs the deepspeed package: pip install deepspeed")


def job_overrides() -> list[str] | None:
    """The command line's overrides when running under Hydra (None from the Python API)."""
    from hydra.core.hydra_config import HydraConfig
    if not HydraConfig.initialized():
        return None
    return list(HydraConfig.get().overrides.task)


def overridden_keys() -> set[str]:
    """The keys the command line sets (empty from the Python API): a count typed there is a demand, not a cap."""
    return {o.split("=", 1)[0].lstrip("+") for o in job_overrides() or []}


class CheckConfig(Callback):
    """Hydra callback (conf/config.yaml): range and scope checks before Hydra writes anything (for a sweep, the
    shared settings and every override's scope before any job; each job's own values when it starts)."""

    def on_run_start(self, config, **kwargs) -> None:
        self._check(config, list(config.hydra.overrides.task))

    def on_multirun_start(self, config, **kwargs) -> None:
        self._check(config, list(config.hydra.overrides.task))

    @staticmethod
    def _check(config, overrides) -> None:
        try:
            check_config(config, overrides)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)


# -- before Hydra composes: misspelt keys, unknown group options and wrong scalar types in one line -------------
HYDRA_FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--cfg", "-c",
                          "--package", "-p", "--info", "-i", "--experimental-rerun"}


def command_line_overrides(argv: Sequence[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in HYDRA_FLAGS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-") and "=" in arg:
            out.append(arg)
    return out


def precheck_overrides(argv: Sequence[str], conf_dir) -> None:
    """Hydra reports a misspelt key or a wrong type in a multi-line block; say it in one line first. Anything this
    does not recognise (appends, deletions, interpolations, sweeps) is left to Hydra."""
    import difflib
    from pathlib import Path

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    from aihf.config import Config
    overrides = command_line_overrides(argv)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return  # Hydra's own parse error says it better
    leaves = {name: tp for name, _, _, tp in schema_keys(Config)}
    nodes = {n.rsplit(".", 1)[0] for n in leaves if "." in n}
    groups = {p.name for p in Path(conf_dir).iterdir() if p.is_dir()}
    for text, o in zip(overrides, parsed):
        k = o.key_or_group
        if k.startswith("hydra") or o.package is not None or o.is_delete():
            continue
        if k.startswith("env.train_kwargs."):  # free-form gymnasium.make kwargs
            if not (o.is_add() or o.is_force_add()):
                raise ConfigError(f"{text}: env.train_kwargs holds free-form gymnasium.make kwargs; add one with "
                                  f"+{text}")
            continue
        if k in groups and "." not in k:
            if o.value_type != ValueType.ELEMENT or not isinstance(o.value(), str) or o.value() == "null":
                continue
            options = sorted(p.stem for p in (Path(conf_dir) / k).glob("*.yaml"))
            if o.value() not in options:
                raise ConfigError(f"{text}: no such {k} option; expected one of {', '.join(options)}")
            continue
        if k in leaves:
            _check_scalar_type(text, o, leaves[k])
            continue
        if k in nodes:
            continue  # a whole node (e.g. llm.train={...}): Hydra checks its keys
        near = difflib.get_close_matches(k, list(leaves), n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise ConfigError(f"{text}: no such key {k}{hint} (every key is in src/aihf/config.py)")


def _check_scalar_type(text: str, o, tp) -> None:
    from hydra.core.override_parser.types import ValueType
    if o.value_type != ValueType.ELEMENT:
        return  # sweeps: each value is checked when its job is composed
    v = o.value()
    if v is None or (isinstance(v, str) and v.startswith("${")):
        return
    base = next((t for t in (int, float, bool) if tp is t or tp == typing.Optional[t]), None)
    if base is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise ConfigError(f"{text}: {o.key_or_group} expects an integer, found {v!r}")
    if base is float and (isinstance(v, bool) or not isinstance(v, (int, float))):
        raise ConfigError(f"{text}: {o.key_or_group} expects a number, found {v!r}")
    if base is bool and not isinstance(v, bool):
        raise ConfigError(f"{text}: {o.key_or_group} expects true or false, found {v!r}")
