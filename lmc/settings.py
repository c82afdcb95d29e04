"""One resolution of the run settings every command shares: command line > environment > lmc.yaml > default.

`run`, `compile` and `eval` (and the Python API through `runner.make_runtime`) all
call `resolve`, so a setting written once in lmc.yaml reaches every command.  The
LM itself has one more source, the artifact, between lmc.yaml and the default; that
order lives in `load.choose_lm`, which receives the api_base resolved here.

| setting         | flag                 | environment           | lmc.yaml          | default      |
|-----------------|----------------------|-----------------------|-------------------|--------------|
| lm              | --lm                 | LMC_LM                | lm                | artifact, then local/gemma-3-270m |
| api_base        | --api-base           | LMC_API_BASE          | api_base          | artifact (loopback only), none |
| cache_dir       | --cache-dir          | LMC_CACHE_DIR         | cache_dir         | .lmc/cache   |
| concurrency     | -j                   | LMC_CONCURRENCY       | concurrency       | 8            |
| rpm             | --rpm                | LMC_RPM               | rpm               | no limit     |
| max_steps       | --max-steps          | LMC_MAX_STEPS         | max_steps         | 10,000,000   |
| example_timeout | --example-timeout    | LMC_EXAMPLE_TIMEOUT   | example_timeout   | no limit     |
| max_calls       | --max-calls          | LMC_MAX_CALLS         | max_calls         | no cap       |
| max_cost        | --max-cost           | LMC_MAX_COST          | max_cost          | no cap       |
| price_per_mtok_in  | --price-per-mtok-in  | LMC_PRICE_PER_MTOK_IN  | price_per_mtok_in  | litellm's table |
| price_per_mtok_out | --price-per-mtok-out | LMC_PRICE_PER_MTOK_OUT | price_per_mtok_out | litellm's table |
| max_lm_errors   | --max-lm-errors      | LMC_MAX_LM_ERRORS     | max_lm_errors     | 20% (compile, eval); none (run) |
| truncate_inputs | --truncate-inputs    | LMC_TRUNCATE_INPUTS   | truncate_inputs   | false        |
| transport       | --transport          | LMC_TRANSPORT         | transport         | by protocol (lmc/lm/spec.py) |

The caps and prices are explained in lmc/budget.py.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ConfigError

DEFAULT_CACHE_DIR = ".lmc/cache"
DEFAULT_CONCURRENCY = 8
DEFAULT_MAX_STEPS = 10_000_000


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("expected a whole number of at least 1")
    return value


def _positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError("expected a number above 0")
    return float(value)


def _amount(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError("expected a number of 0 or more")
    return float(value)


def _error_limit(value: Any) -> str:
    from .budget import parse_error_limit

    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("expected a share such as 20% or 0.2, or a count such as 5")
    try:
        return parse_error_limit(str(value)).text
    except ConfigError:
        raise ValueError("expected a share such as 20% or 0.2, or a count such as 5") from None


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "false", "no", "off"):
        return value.strip().lower() in ("true", "yes", "on")
    raise ValueError("expected true or false")


def _transport(value: Any) -> str:
    if not isinstance(value, str) or value.strip().lower() not in ("direct", "litellm"):
        raise ValueError("expected direct or litellm")
    return value.strip().lower()


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value


@dataclass(frozen=True)
class Setting:
    name: str
    flag: str
    env: str
    check: Callable[[Any], Any]
    default: Any = None


SETTINGS = {s.name: s for s in (
    Setting("lm", "--lm", "LMC_LM", _text),
    Setting("api_base", "--api-base", "LMC_API_BASE", _text),
    Setting("cache_dir", "--cache-dir", "LMC_CACHE_DIR", _text, DEFAULT_CACHE_DIR),
    Setting("concurrency", "-j", "LMC_CONCURRENCY", _positive_int, DEFAULT_CONCURRENCY),
    Setting("rpm", "--rpm", "LMC_RPM", _positive_number),
    Setting("max_steps", "--max-steps", "LMC_MAX_STEPS", _positive_int, DEFAULT_MAX_STEPS),
    Setting("example_timeout", "--example-timeout", "LMC_EXAMPLE_TIMEOUT", _positive_number),
    Setting("max_calls", "--max-calls", "LMC_MAX_CALLS", _positive_int),
    Setting("max_cost", "--max-cost", "LMC_MAX_COST", _amount),
    Setting("price_per_mtok_in", "--price-per-mtok-in", "LMC_PRICE_PER_MTOK_IN", _amount),
    Setting("price_per_mtok_out", "--price-per-mtok-out", "LMC_PRICE_PER_MTOK_OUT", _amount),
    Setting("max_lm_errors", "--max-lm-errors", "LMC_MAX_LM_ERRORS", _error_limit),
    Setting("truncate_inputs", "--truncate-inputs", "LMC_TRUNCATE_INPUTS", _flag, False),
    Setting("transport", "--transport", "LMC_TRANSPORT", _transport),
)}
YAML_KEYS = tuple(SETTINGS)


@dataclass(frozen=True)
class Settings:
    """The value of every setting and where it came from ("--lm", "LMC_LM", "lmc.yaml", "default")."""

    values: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None


def resolve(cli: dict[str, Any], config: Any = None, environ: dict | None = None) -> Settings:
    """Each setting from the first source that has it; a bad value names its source.

    `cli` maps setting names to flag values (None = not given); `config` is `load.Config`.
    """
    env = os.environ if environ is None else environ
    yaml_values = getattr(config, "settings", None) or {}
    yaml_path = getattr(config, "path", None) or "lmc.yaml"
    values, sources = {}, {}
    for name, s in SETTINGS.items():
        value, source = s.default, "default"
        if cli.get(name) is not None:
            value, source = _check(s, cli[name], s.flag), s.flag
        elif env.get(s.env, "").strip():
            value, source = _check(s, _from_env(env[s.env]), f"${s.env}"), f"${s.env}"
        elif yaml_values.get(name) is not None:
            value, source = _check(s, yaml_values[name], f"{yaml_path}: '{name}'"), yaml_path
        values[name], sources[name] = value, source
    return Settings(values, sources)


def _from_env(text: str) -> Any:
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _check(s: Setting, value: Any, where: str) -> Any:
    try:
        return s.check(value)
    except ValueError as e:
        raise ConfigError(f"{where}: {value!r} is not a valid {s.name.replace('_', ' ')}; {e}") from None
