"""Load what a command runs: a .lmp program (checked and lowered) or a compiled artifact; plus lmc.yaml."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ir as I
from .artifact import Artifact, is_artifact_path, portable_path, read, sha256_text
from .errors import ConfigError, LmcError
from .netguard import check_artifact_lm, is_loopback

CONFIG_NAMES = ("lmc.yaml", "lmc.yml")


@dataclass(frozen=True)
class Target:
    ir: I.IR
    kind: str  # program | artifact
    path: str
    name: str
    source: str
    sha256: str
    artifact: Artifact | None = None

    def program_json(self) -> dict:
        return {"name": self.name, "path": portable_path(self.path) if self.kind == "program" else
                (self.artifact.program.get("path") if self.artifact else None),
                "source": self.source, "sha256": self.sha256}


def load_target(path: str | os.PathLike, program: str | None = None) -> Target:
    """A .lmp path is parsed, checked and lowered; an artifact is read and verified."""
    p = Path(path)
    if not p.exists():
        raise LmcError(f"{path}: no such file")
    if is_artifact_path(p):
        art = read(p)
        if program and program != art.ir.entry:
            raise LmcError(f"{path}: artifact holds program '{art.ir.entry}', not '{program}'")
        src = art.program.get("source") or ""
        return Target(art.ir, "artifact", str(path), art.name, src, art.program.get("sha256") or sha256_text(src), art)
    from .check import check_path
    from .lower import lower

    checked = check_path(p)
    ir = lower(checked, program)
    return Target(ir, "program", str(path), ir.entry, checked.source, sha256_text(checked.source))


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
        from .lm import parse_lm

        out = {}
        for name, spec in self.lms.items():
            settings = {k: v for k, v in spec.items() if k not in ("model", "api_base", "api_key_env", "api_key")}
            out[name] = parse_lm(spec["model"], spec.get("api_base"), api_key_env=spec.get("api_key_env"),
                                 settings=settings)
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

    from .limits import read_bounded

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
    from .errors import did_you_mean
    from .settings import YAML_KEYS

    known = {"api_key_env", "api_key", "lms", "allow_python", "limits", *YAML_KEYS}
    for key in data:
        if key not in known:
            hint = did_you_mean(str(key), known)
            raise ConfigError(f"{p}: unknown setting '{key}'" + (f"; {hint}" if hint else "")
                              + f" (expected one of: {', '.join(sorted(known))})")
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
    from .limits import parse_limits
    from .pyrefs import parse_allow

    parse_limits(data.get("limits"), str(p))  # applied by limits.limit(); checked here so a typo is reported
    allow = data.get("allow_python") or []
    if not isinstance(allow, list):
        raise ConfigError(f"{p}: 'allow_python' must be a list of module names, e.g. [mytools, pkg.mod]")
    return Config(str(p), data.get("lm"), data.get("api_base"), key_env, data.get("cache_dir"), conc, lms,
                  parse_allow(allow, f"{p}: allow_python"), {k: data[k] for k in YAML_KEYS if data.get(k) is not None})


def choose_lm(flag: str | None, api_base: str | None, config: Config, target: Target | None = None) -> Any:
    """The LM in force: --lm, then LMC_LM, then lmc.yaml, then the one the artifact was compiled with, then local."""
    from .interpreter import DEFAULT_LM
    from .lm import parse_lm

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
            raise ConfigError(f"{target.path}: malformed 'lm' entry; expected {{\"model\": \"provider/model\", ...}}")
        art_base, key_env = spec.get("api_base"), spec.get("api_key_env")
        check_artifact_key_env(key_env, target.path)
        settings = spec.get("settings") or {}
        if not isinstance(settings, dict):
            raise ConfigError(f"{target.path}: malformed 'lm' entry; 'settings' must be a mapping")
        check_artifact_lm(spec["model"], settings, f"{target.path}: its LM")
        if not base and art_base and not is_loopback(art_base):
            # Where the key is sent is the user's choice, not the artifact's: a shared artifact naming
            # its own server would otherwise receive the user's API key with the first request.
            raise ConfigError(f"{target.path} was compiled against {art_base!r}; pass --api-base {art_base} "
                              "(or set api_base in lmc.yaml) to send requests there",
                              hint="an artifact alone never chooses a remote server for your API key")
        return parse_lm(spec["model"], base or art_base, api_key_env=key_env, settings=settings)
    return parse_lm(DEFAULT_LM, base)


_KEY_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*_API_KEY")


def check_artifact_key_env(name: object, where: str) -> None:
    """An artifact may name the variable holding its key only as *_API_KEY, never e.g. AWS_SECRET_ACCESS_KEY."""
    if name is not None and not (isinstance(name, str) and _KEY_ENV_NAME.fullmatch(name)):
        raise ConfigError(f"{where}: names {str(name)[:60]!r} as its API key variable; "
                          "an artifact may only name variables called *_API_KEY")


