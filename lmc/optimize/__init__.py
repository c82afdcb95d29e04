"""Optimizer passes: `PASSES`, the table of every pass, and how a pass is named and run.

A pass is a plain async function `pass_(ir, inputs, **options) -> PassResult`: it reads
the program and its `PassInputs` (see lab.py) and returns a new program with the
candidates it tried and its notes, never changing what it was given.  Its options are
its keyword-only parameters; their defaults live in options.py.  `lmc compile` runs a
chain of them in the order the user gives (compiler.py accumulates their results).
Adding a pass: a module with its function, one line in `PASSES`, and its tests.
"""

from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable, Sequence

from .. import ir as I
from ..errors import ConfigError, did_you_mean
from . import options as O
from .bootstrap import bootstrap
from .calibrate import calibrate
from .ensemble import ensemble
from .evolve import evolve
from .finetune_data import finetune_data
from .knn import knn
from .lab import PassInputs, PassResult
from .labeled import labeled
from .mipro import mipro
from .none import none
from .random_search import random_search

Pass = Callable[..., Awaitable[PassResult]]

PASSES: tuple[Pass, ...] = (none, labeled, bootstrap, random_search, mipro, knn, ensemble, finetune_data, evolve, calibrate)


def pass_name(fn: Pass) -> str:
    """The name a pass goes by on the command line: its function's name, dashed (`random_search` -> random-search)."""
    return fn.__name__.replace("_", "-")


PASS_NAMES = tuple(pass_name(fn) for fn in PASSES)


def pass_named(name: str, where: str = "") -> Pass:
    """The pass called `name`; a ConfigError with a did-you-mean otherwise."""
    for fn in PASSES:
        if pass_name(fn) == name:
            return fn
    hint = did_you_mean(name, PASS_NAMES)
    raise ConfigError(f"{where}unknown optimizer '{name}'", hint=(hint + " " if hint else "") + "expected one of: " + ", ".join(PASS_NAMES))


def takes(fn: Pass) -> tuple[str, ...]:
    """The options pass `fn` takes: its keyword-only parameters, each declared in options.OPTIONS."""
    return tuple(p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY)


PASS_OPTIONS: dict[str, tuple[str, ...]] = {pass_name(fn): takes(fn) for fn in PASSES}


def takers(key: str) -> list[str]:
    """The passes that take option `key`."""
    return [name for name, keys in PASS_OPTIONS.items() if key in keys]


def check_chain(passes: Sequence[str], flags: dict[str, Any], lms: dict[str, Any] | None = None) -> None:
    """Refuse a command-line pass option (or --teacher-lm/--prompt-lm) that no pass of the chain uses."""
    chain = " → ".join(passes)
    for key, value in flags.items():
        if value is None:
            continue
        O.check_value(key, value, O.OPTIONS[key].flag)
        if not any(key in PASS_OPTIONS.get(p, ()) for p in passes):
            raise ConfigError(
                f"{O.OPTIONS[key].flag} is not used by {chain}; it is an option of {', '.join(takers(key))}",
                hint=f"drop {O.OPTIONS[key].flag} or add a pass that uses it",
            )
    for flag, value in (lms or {}).items():
        if value is not None and not any(p in O.PASS_LMS[flag] for p in passes):
            raise ConfigError(f"{flag} is not used by {chain}; it is used by {', '.join(O.PASS_LMS[flag])}")


def check_pass_entry(name: str, options: dict, where: str) -> dict:
    """One pass's options from a passes file: every key known to that pass, every value in range."""
    allowed = PASS_OPTIONS[name]
    out = {}
    for raw_key, value in options.items():
        key = str(raw_key).replace("-", "_")
        if key not in allowed:
            others = takers(key)
            if others:
                why = f"it is an option of {', '.join(others)}"
            else:
                hint = did_you_mean(key, allowed)
                why = (hint + " " if hint else "") + (f"{name} takes: {', '.join(allowed)}" if allowed else f"{name} takes no options")
            raise ConfigError(f"{where}: '{raw_key}' is not an option of {name}; {why}")
        out[key] = O.check_value(key, value, where)
    return out


def options_for(name: str, flags: dict[str, Any], own: dict[str, Any], out: str | None = None) -> dict[str, Any]:
    """What pass `name` runs with: the defaults, the flags it takes, its own entry in a passes file; then a
    default that depends on another option, or on the artifact's path `out`, filled in."""
    keys = PASS_OPTIONS[name]
    opts = {k: O.OPTIONS[k].default for k in keys}
    opts.update({k: v for k, v in flags.items() if k in keys and v is not None})
    opts.update(own)
    for k in keys:
        source = O.OPTIONS[k].default_from
        if opts[k] is None and source == "out" and out is not None:
            opts[k] = O.finetune_dir_for(out)
        elif opts[k] is None and source in opts:
            opts[k] = opts[source]
    return opts


async def run_pass(name: str, ir: I.IR, inputs: PassInputs, **options: Any) -> PassResult:
    """Run pass `name` with its defaults, overridden by `options` (what `lmc compile` would give it)."""
    return await pass_named(name)(ir, inputs, **options_for(name, {}, options))
