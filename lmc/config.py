"""Configuration: lmc.yaml, the run settings every command shares, and which LM each call goes to.

Every setting is resolved once, in one order: command line > environment > lmc.yaml > default
(`resolve`).  `run`, `compile`, `eval` and the Python API all get theirs through
`session.prepare`, so a setting written once in lmc.yaml reaches every command.

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
| constraints     | (none)               | LMC_CONSTRAINTS       | constraints       | auto: probed per endpoint (lmc/lm/dialect.py) |

The LM has one more source, the artifact, between lmc.yaml and the default (`choose_lm`);
an artifact never chooses where the user's API key is sent (`choose_lm`, `predictor_lm`).
The caps and prices are explained in lmc/budget.py.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import ir as I
from .budget import parse_error_limit
from .errors import ConfigError, did_you_mean
from .limits import CONFIG_NAMES, parse_limits, read_bounded
from .lm import LMSpec, parse_lm
from .lm.dialect import SETTINGS as DIALECT_SETTINGS
from .netguard import check_artifact_lm, is_loopback
from .pyrefs import parse_allow

DEFAULT_LM = "local/gemma-3-270m"
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


def _dialect(value: Any) -> str:
    if not isinstance(value, str) or value.strip().lower() not in DIALECT_SETTINGS:
        raise ValueError("expected one of " + ", ".join(DIALECT_SETTINGS))
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


SETTINGS = {
    s.name: s
    for s in (
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
        Setting("constraints", "(no flag)", "LMC_CONSTRAINTS", _dialect, "auto"),
    )
}
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

    `cli` maps setting names to flag values (None = not given); `config` is a `Config`.
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


# ---------------------------------------------------------------- lmc.yaml


@dataclass(frozen=True)
class Config:
    """Project settings from lmc.yaml (all optional)."""

    path: str | None = None
    lm: str | None = None
    api_base: str | None = None
    api_key_env: str | None = None
    cache_dir: str | None = None
    concurrency: int | None = None
    lms: dict = field(default_factory=dict)  # alias -> {model, api_base, api_key_env, settings...}
    allow_python: tuple = ()  # python(...) modules runs may import besides a .lmp's own directory (pyrefs.py)
    settings: dict = field(default_factory=dict)  # the run settings it gives (settings.YAML_KEYS), as written

    def alias_specs(self) -> dict:
        out = {}
        for name, spec in self.lms.items():
            settings = {k: v for k, v in spec.items() if k not in ("model", "api_base", "api_key_env", "api_key")}
            out[name] = parse_lm(spec["model"], spec.get("api_base"), api_key_env=spec.get("api_key_env"), settings=settings)
        return out


def load_config(start: str | os.PathLike | None = None) -> Config:
    """Find lmc.yaml in the working directory; keys are never read from it into artifacts or logs."""
    base = Path(start or ".")
    for name in CONFIG_NAMES:
        p = base / name
        if p.exists():
            return _parse_config(p)
    return Config()


def _parse_config(p: Path) -> Config:
    import yaml

    try:
        data = yaml.safe_load(read_bounded(p, "config", lambda m: ConfigError(f"{p}: {m}")).decode("utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of settings at the top level")
    known = {"api_key_env", "api_key", "lms", "allow_python", "limits", *YAML_KEYS}
    for key in data:
        if key not in known:
            hint = did_you_mean(str(key), known)
            raise ConfigError(f"{p}: unknown setting '{key}'" + (f"; {hint}" if hint else "") + f" (expected one of: {', '.join(sorted(known))})")
    lms = data.get("lms") or {}
    if not isinstance(lms, dict):
        raise ConfigError(f"{p}: 'lms' must map alias names to settings")
    for name, spec in lms.items():
        if isinstance(spec, str):
            lms[name] = {"model": spec}
        elif not isinstance(spec, dict) or "model" not in spec:
            raise ConfigError(f"{p}: LM alias '{name}' needs a 'model'")
    # A key written in lmc.yaml is exported to the environment for litellm under its
    # env-var name and never stored anywhere else.
    key = data.get("api_key")
    key_env = data.get("api_key_env")
    if key:
        env_name = key_env or "LMC_API_KEY"
        os.environ.setdefault(env_name, str(key))
        key_env = env_name
    for name, spec in lms.items():
        if spec.get("api_key"):
            env_name = spec.get("api_key_env") or f"LMC_{name.upper()}_API_KEY"
            os.environ.setdefault(env_name, str(spec.pop("api_key")))
            spec["api_key_env"] = env_name
    conc = data.get("concurrency")
    if conc is not None and (not isinstance(conc, int) or conc < 1):
        raise ConfigError(f"{p}: 'concurrency' must be a positive integer")
    parse_limits(data.get("limits"), str(p))  # applied by limits.limit(); checked here so a typo is reported
    allow = data.get("allow_python") or []
    if not isinstance(allow, list):
        raise ConfigError(f"{p}: 'allow_python' must be a list of module names, e.g. [mytools, pkg.mod]")
    return Config(
        str(p),
        data.get("lm"),
        data.get("api_base"),
        key_env,
        data.get("cache_dir"),
        conc,
        lms,
        parse_allow(allow, f"{p}: allow_python"),
        {k: data[k] for k in YAML_KEYS if data.get(k) is not None},
    )


# ---------------------------------------------------------------- which LM


def choose_lm(flag: str | None, api_base: str | None, config: Config, target: Any = None) -> LMSpec:
    """The LM in force: --lm, then LMC_LM, then lmc.yaml, then the one the artifact was compiled with, then local.

    `target` is a `targets.Target` (None: no artifact to ask)."""
    base = api_base or config.api_base
    if flag:
        return parse_lm(flag, base, api_key_env=config.api_key_env)
    env = os.environ.get("LMC_LM")
    if env:
        return parse_lm(env, base, api_key_env=config.api_key_env)
    if config.lm:
        return parse_lm(config.lm, base, api_key_env=config.api_key_env)
    if target is not None and target.artifact is not None and target.artifact.lm:
        spec = target.artifact.lm
        if not isinstance(spec, dict) or not isinstance(spec.get("model"), str):
            raise ConfigError(f'{target.path}: malformed \'lm\' entry; expected {{"model": "provider/model", ...}}')
        art_base, key_env = spec.get("api_base"), spec.get("api_key_env")
        check_artifact_key_env(key_env, target.path)
        settings = spec.get("settings") or {}
        if not isinstance(settings, dict):
            raise ConfigError(f"{target.path}: malformed 'lm' entry; 'settings' must be a mapping")
        check_artifact_lm(spec["model"], settings, f"{target.path}: its LM")
        if not base and art_base and not is_loopback(art_base):
            # Where the key is sent is the user's choice, not the artifact's: a shared artifact naming
            # its own server would otherwise receive the user's API key with the first request.
            raise ConfigError(
                f"{target.path} was compiled against {art_base!r}; pass --api-base {art_base} (or set api_base in lmc.yaml) to send requests there",
                hint="an artifact alone never chooses a remote server for your API key",
            )
        return parse_lm(spec["model"], base or art_base, api_key_env=key_env, settings=settings)
    return parse_lm(DEFAULT_LM, base)


_KEY_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*_API_KEY")


def check_artifact_key_env(name: object, where: str) -> None:
    """An artifact may name the variable holding its key only as *_API_KEY, never e.g. AWS_SECRET_ACCESS_KEY."""
    if name is not None and not (isinstance(name, str) and _KEY_ENV_NAME.fullmatch(name)):
        raise ConfigError(f"{where}: names {str(name)[:60]!r} as its API key variable; an artifact may only name variables called *_API_KEY")


def predictor_lm(name: str, ir: I.IR, *, api_base: str | None, aliases: dict, from_artifact: bool) -> LMSpec:
    """The LM a predictor's setting `lm=name` names: an lmc.yaml alias (`aliases`), the program's own `lm`
    declaration, or a litellm model string.

    An artifact's alias is someone else's choice: it may name a key variable only as *_API_KEY, only
    models lmc is willing to call, and never a remote server for the user's key (--api-base wins)."""
    if name in aliases:
        return aliases[name]
    alias = ir.lm_alias(name)
    if alias is None:
        return parse_lm(name, api_base)
    settings = dict(alias.settings)
    alias_base = settings.pop("api_base", None)
    key_env = settings.pop("api_key_env", None)
    if from_artifact:
        where = f"LM alias '{name}' in the artifact"
        check_artifact_key_env(key_env, where)
        check_artifact_lm(alias.model, settings, where)
        if alias_base and not api_base and not is_loopback(alias_base):
            raise ConfigError(
                f"{where} sends requests to {alias_base}; an artifact may not choose a remote server for your key",
                hint="pass --api-base to use a server you trust",
            )
    base = api_base if (from_artifact and api_base) else (alias_base or api_base)
    return parse_lm(alias.model, base, api_key_env=key_env, settings=settings)
