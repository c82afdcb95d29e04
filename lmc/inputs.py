"""The one check of a program's inputs: `lmc run --input/-i`, the Python API and the interpreter all bind through it."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .errors import ConfigError, OutputParseError, did_you_mean
from .ir import FieldSpec
from .types import Type, coerce


class InputError(ConfigError):
    """Inputs that do not fit the program: a field missing, unknown, or of the wrong type."""


def bind_inputs(
    fields: Sequence[FieldSpec] | Mapping[str, Type], values: Mapping[str, Any], *, coerce_values: bool = False, ignore_unknown: bool = False
) -> dict:
    """`values` as the program's environment: every required field present and of its type, a missing
    optional one None; an unknown field is refused unless `ignore_unknown`.

    With `coerce_values` a value that does not fit is converted when it can be (`"3"` for an int),
    as a value passed on from another program is; a value given by a user must fit as it is."""
    types = fields if isinstance(fields, Mapping) else {f.name: f.type for f in fields}
    expected = ", ".join(types) or "none"
    env: dict[str, Any] = {}
    for name, tp in types.items():
        if name not in values:
            if tp.kind == "optional":
                env[name] = None
                continue
            hint = did_you_mean(name, values)
            raise InputError(f"missing input field '{name}'" + (f"; {hint}" if hint else "") + f" (expected fields: {expected})")
        value = values[name]
        why = tp.check(value)
        if why and coerce_values:
            try:
                value, why = coerce(value, tp), None
            except OutputParseError:
                pass
        if why:
            raise InputError(f"input field '{name}' does not fit {tp.name}: {why}")
        env[name] = value
    if not ignore_unknown:
        for name in values:
            if name not in types:
                hint = did_you_mean(name, types)
                raise InputError(f"unknown input field '{name}'" + (f"; {hint}" if hint else "") + f" (expected fields: {expected})")
    return env
