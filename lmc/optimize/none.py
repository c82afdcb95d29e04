"""`none`: keep the program as written (zero-shot); still scored so the report has a baseline."""

from __future__ import annotations

from .. import ir as I
from . import Context


async def run(ir: I.IR, ctx: Context) -> I.IR:
    ctx.log("none: keeping the program zero-shot")
    return ir
