"""Which options each optimizer pass takes, their defaults and ranges, and the checks made before a compile starts.

Every pass of a chain gets its own options: the defaults below, then the command-line
flags (for each pass that takes them), then that pass's entry in a `--passes` file.
An option no pass of the chain uses, an unknown key in a passes file, or a value out
of range is refused before any LM call, naming the passes that would take it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Option:
    key: str
    flag: str
    low: int | None = None  # ints: the smallest allowed value; None: a string (a path)
    help: str = ""


OPTIONS = {o.key: o for o in (
    Option("max_demos", "--max-demos", 0, "bootstrapped demos per predictor"),
    Option("max_labeled", "--max-labeled", 0, "labeled demos per predictor"),
    Option("max_rounds", "--max-rounds", 1, "bootstrap rounds over the trainset"),
    Option("candidates", "--candidates", 1, "demo-set candidates"),
    Option("trials", "--trials", 1, "search trials"),
    Option("instructions", "--instructions", 1, "instruction proposals per predictor"),
    Option("minibatch", "--minibatch", 1, "dev minibatch size"),
    Option("full_eval_every", "--full-eval-every", 1, "full dev evaluation every N trials"),
    Option("k", "--k", 1, "demos chosen per input"),
    Option("ensemble_size", "--ensemble-size", 2, "members of the vote"),
    Option("finetune_dir", "--finetune-dir", None, "output folder"),
)}

# pass -> {option: default}; None means "decided by the pass" (e.g. mipro's minibatch is min(25, dev)).
# max_labeled appears wherever the bootstrap teacher runs: it is shown that many labeled demos.
_SEARCH = {"candidates": 6, "max_demos": 4, "max_labeled": 4, "max_rounds": 1}
PASS_OPTIONS: dict[str, dict[str, Any]] = {
    "none": {},
    "labeled": {"max_labeled": 4},
    "bootstrap": {"max_demos": 4, "max_labeled": 4, "max_rounds": 1},
    "random-search": dict(_SEARCH),
    "mipro": {"candidates": 6, "instructions": 4, "trials": 16, "minibatch": None, "full_eval_every": 5,
              "max_demos": 4, "max_labeled": 4},
    "knn": {"k": None, "max_demos": 4, "max_labeled": 4},  # k defaults to max_demos
    "ensemble": {"ensemble_size": 3, **_SEARCH},  # runs a random search first when none came before it
    "finetune-data": {"finetune_dir": None, "max_labeled": 4},  # default folder: OUT.finetune/ next to -o
}
# LMs some passes use besides the program's: the teacher runs bootstrapping, the prompt LM proposes instructions.
PASS_LMS = {
    "--teacher-lm": ("bootstrap", "random-search", "mipro", "knn", "ensemble", "finetune-data"),
    "--prompt-lm": ("mipro",),
}


def takers(key: str) -> list[str]:
    return [name for name, opts in PASS_OPTIONS.items() if key in opts]


def check_value(key: str, value: Any, where: str) -> Any:
    opt = OPTIONS[key]
    if opt.low is None:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: '{key}' must be a path, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: '{key}' must be a whole number, got {value!r}")
    if value < opt.low:
        raise ConfigError(f"{where}: '{key}' must be at least {opt.low}, got {value}")
    return value


def check_chain(passes: Sequence[str], flags: dict[str, Any], lms: dict[str, Any] | None = None) -> None:
    """Refuse a command-line pass option (or --teacher-lm/--prompt-lm) that no pass of the chain uses."""
    chain = " → ".join(passes)
    for key, value in flags.items():
        if value is None:
            continue
        check_value(key, value, OPTIONS[key].flag)
        if not any(key in PASS_OPTIONS.get(p, {}) for p in passes):
            raise ConfigError(f"{OPTIONS[key].flag} is not used by {chain}; it is an option of "
                              f"{', '.join(takers(key))}", hint=f"drop {OPTIONS[key].flag} or add a pass that uses it")
    for flag, value in (lms or {}).items():
        if value is not None and not any(p in PASS_LMS[flag] for p in passes):
            raise ConfigError(f"{flag} is not used by {chain}; it is used by {', '.join(PASS_LMS[flag])}")


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
                why = (hint + " " if hint else "") + (f"{name} takes: {', '.join(allowed)}" if allowed
                                                       else f"{name} takes no options")
            raise ConfigError(f"{where}: '{raw_key}' is not an option of {name}; {why}")
        out[key] = check_value(key, value, where)
    return out


def options_for(name: str, flags: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """What pass `name` runs with: its defaults, the flags it takes, then its own entry in a passes file."""
    allowed = PASS_OPTIONS[name]
    opts = dict(allowed)
    opts.update({k: v for k, v in flags.items() if k in allowed and v is not None})
    opts.update(own)
    if name == "knn" and opts.get("k") is None:
        opts["k"] = opts["max_demos"]
    return opts
