"""`none`: keep the program as written (zero-shot); still scored so the report has a baseline."""

from __future__ import annotations

from .. import ir as I
from .lab import PassInputs, PassResult


async def none(ir: I.IR, inputs: PassInputs) -> PassResult:
    inputs.log("none: keeping the program zero-shot")
    return PassResult(ir)
