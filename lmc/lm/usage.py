"""Accounting of LM calls: calls, cache hits, requests, retries, failures, tokens and cost, in total and per tag."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

from lmc.lm.call import LMResult

# The tag of an endpoint's probe requests (lmc/lm/dialect.py): no predictor id can be it.
PROBE_TAG = "(endpoint probe)"


@dataclass
class Usage:
    """Call accounting.

    `calls` counts every answered call and `cached_calls` those the cache served; `requests`
    counts every request sent to an LM (first tries, retries and failures; never a cache hit),
    `failed_requests` those that brought back no usable answer, `retries` the requests that
    repeated an earlier one, and `errors` the calls that failed after their retries.
    `requests == live_calls + failed_requests` always holds.  `cost` is what the requests
    cost (a request that timed out or broke off mid-answer counts at its worst case, since
    the provider may have billed it).
    """

    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    retries: int = 0
    errors: int = 0
    requests: int = 0
    failed_requests: int = 0
    by_tag: dict[str, "Usage"] = field(default_factory=dict)

    @property
    def live_calls(self) -> int:
        return self.calls - self.cached_calls

    @property
    def program_calls(self) -> int:
        """The calls of the program's predictors, cached or not: every call but the probes of an endpoint, which a
        warm rerun reads from the cache as a record and never makes (an artifact or report counting them would differ)."""
        probes = self.by_tag.get(PROBE_TAG)
        return self.calls - (probes.calls if probes else 0)

    def _each(self, tag: str) -> list["Usage"]:
        if not tag:
            return [self]
        sub = self.by_tag.get(tag)
        if sub is None:
            sub = self.by_tag[tag] = Usage()
        return [self, sub]

    def add_result(self, tag: str, result: LMResult) -> None:
        for u in self._each(tag):
            u.calls += 1
            if result.cached:
                u.cached_calls += 1
            else:
                u.prompt_tokens += result.prompt_tokens
                u.completion_tokens += result.completion_tokens

    def add_request(self, tag: str, *, failed: bool, cost: float = 0.0) -> None:
        for u in self._each(tag):
            u.requests += 1
            u.failed_requests += int(failed)
            u.cost += cost

    def add_retry(self, tag: str) -> None:
        for u in self._each(tag):
            u.retries += 1

    def add_error(self, tag: str) -> None:
        for u in self._each(tag):
            u.errors += 1

    def to_json(self) -> dict:
        out: dict[str, Any] = {
            "calls": self.calls,
            "cached_calls": self.cached_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": round(self.cost, 8),
            "retries": self.retries,
            "errors": self.errors,
            "requests": self.requests,
            "failed_requests": self.failed_requests,
        }
        if self.by_tag:
            out["by_tag"] = {k: v.to_json() for k, v in sorted(self.by_tag.items())}
        return out


# The Usage of the example being run, for requests made outside `LMClient.complete` (embeddings);
# set by the interpreter around each example, copied into the tasks it starts.
current_meter: contextvars.ContextVar[Usage | None] = contextvars.ContextVar("lmc_current_meter", default=None)
