"""The options of optimizer passes: each option's flag, range and default, written once, here.

Which options a pass takes is its signature (the keyword-only parameters of its
function); `optimize/__init__.py` resolves a chain's options against these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class Option:
    key: str
    flag: str
    low: int | None = None  # ints: the smallest allowed value; None: a string (a path)
    help: str = ""
    default: Any = None
    # A default of None is filled from another option ("max_demos"), from the artifact's path ("out"),
    # or left to the pass (mipro's minibatch is min(25, dev)); `shown` says which, in the help.
    default_from: str | None = None
    shown: str | None = None
    choices: tuple[str, ...] = ()  # a word from this list (low is then None)

    def describe(self) -> str:
        """The option's help with its default, as the command line shows it."""
        return f"{self.help} (default {self.shown or self.default})"


OPTIONS = {
    o.key: o
    for o in (
        Option("max_demos", "--max-demos", 0, "bootstrapped demos per predictor", 4),
        Option("max_labeled", "--max-labeled", 0, "labeled demos per predictor", 4),
        Option("max_rounds", "--max-rounds", 1, "bootstrap rounds over the trainset, later rounds sample", 1),
        Option("candidates", "--candidates", 1, "demo-set candidates of random-search, mipro and ensemble", 6),
        Option("trials", "--trials", 1, "mipro search trials", 16),
        Option("instructions", "--instructions", 1, "mipro instruction proposals per predictor", 4),
        Option(
            "minibatch",
            "--minibatch",
            1,
            "examples per minibatch: mipro's from dev, evolve's from train",
            shown="mipro min(25, dev), evolve min(3, train)",
        ),
        Option("full_eval_every", "--full-eval-every", 1, "mipro: a full dev evaluation every N trials", 5),
        Option("k", "--k", 1, "knn: demos chosen per input", default_from="max_demos", shown="--max-demos"),
        Option("ensemble_size", "--ensemble-size", 2, "ensemble: members of the vote", 3),
        Option("rounds", "--rounds", 1, "evolve: reflection rounds (each: a minibatch, one reflection, maybe a dev score)", 12),
        Option("merges", "--merges", 0, "evolve: merges of front members that improved different predictors", 2),
        Option(
            "pick", "--pick", None, "evolve: which predictor a round rewrites: round-robin or blame", "round-robin", choices=("round-robin", "blame")
        ),
        Option("finetune_dir", "--finetune-dir", None, "finetune-data: output folder", default_from="out", shown="OUT.finetune/ next to -o"),
    )
}

# LMs some passes use besides the program's: the teacher runs bootstrapping, the prompt LM proposes instructions.
PASS_LMS = {"--teacher-lm": ("bootstrap", "random-search", "mipro", "knn", "ensemble", "finetune-data"), "--prompt-lm": ("mipro", "evolve")}


def check_value(key: str, value: Any, where: str) -> Any:
    opt = OPTIONS[key]
    if opt.choices:
        if value not in opt.choices:
            raise ConfigError(f"{where}: '{key}' must be one of: {', '.join(opt.choices)}; got {value!r}")
        return value
    if opt.low is None:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: '{key}' must be a path, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: '{key}' must be a whole number, got {value!r}")
    if value < opt.low:
        raise ConfigError(f"{where}: '{key}' must be at least {opt.low}, got {value}")
    return value


def finetune_dir_for(out: str) -> str:
    """Where finetune-data writes by default: next to the artifact, `OUT.finetune/`."""
    name = str(out)
    return (name[: -len(".lmc.json")] if name.endswith(".lmc.json") else name) + ".finetune"
