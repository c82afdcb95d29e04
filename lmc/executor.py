"""The one way lmc runs many examples at once: a pool of workers taking items in order, stopping cleanly.

`lmc run --data`, `lmc eval`, the optimizers' scoring and `Program.batch` all run
their examples through `run_each`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

from .errors import BudgetExceeded

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Batch(Generic[R]):
    """The results in the order of the items; None for an item never run because the batch stopped first."""

    results: list[R | None] = field(default_factory=list)
    stopped_by: Exception | None = None  # the error that stopped the batch, if one did

    def done(self) -> list[R]:
        return [r for r in self.results if r is not None]


async def run_each(items: Sequence[T], fn: Callable[[T], Awaitable[R]], *, workers: int, on_result: Callable[[T, R], None] | None = None) -> Batch[R]:
    """`fn` over `items`, at most `workers` at once, started in item order; `on_result` sees each as it finishes.

    A spent budget (`BudgetExceeded`) starts nothing new, while the calls already in flight finish
    (they are paid for) and keep their results.  Any other error cancels the rest at once.  Either
    way the error is returned in `stopped_by`, not raised; a cancellation (Ctrl-C) propagates.
    """
    batch: Batch[R] = Batch([None] * len(items))
    pending = iter(enumerate(items))

    async def worker() -> None:
        for i, item in pending:
            if batch.stopped_by is not None:
                return
            try:
                result = await fn(item)
            except BudgetExceeded as e:
                batch.stopped_by = batch.stopped_by or e
                return
            batch.results[i] = result
            if on_result is not None:
                on_result(item, result)

    tasks = [asyncio.ensure_future(worker()) for _ in range(max(1, min(workers, len(items))))]
    try:
        await asyncio.gather(*tasks)
    except Exception as e:  # noqa: BLE001 - returned to the caller, which decides what it means
        batch.stopped_by = e
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return batch
