"""Wall-clock record of a compile (when each candidate was scored, calls and spend so far) for the stats sidecar.

The artifact must stay byte-identical across compiles, so nothing here goes into
it: `compile` writes `Timeline.to_json()` into `*.stats.json`, and the HTML report
draws the score of every candidate and the calls/spend curves from it.
"""

from __future__ import annotations

import time
from typing import Any, Callable

# A compile may log thousands of lines (mipro trials); the curve needs far fewer points.
MAX_SAMPLES = 2000


class Timeline:
    """Samples the LM client's running usage at every log line and every recorded candidate."""

    def __init__(self, started: float | None = None):
        self.started = time.perf_counter() if started is None else started
        self.client: Any = None
        self.samples: list[dict] = []
        self.candidates: list[dict] = []

    def _usage(self) -> dict:
        u = getattr(self.client, "usage", None)
        if u is None:
            return {"calls": 0, "cached_calls": 0, "tokens": 0, "cost": 0.0}
        return {"calls": u.calls, "cached_calls": u.cached_calls, "tokens": u.prompt_tokens + u.completion_tokens, "cost": round(u.cost, 8)}

    def _now(self) -> float:
        return round(time.perf_counter() - self.started, 3)

    def sample(self, stage: str) -> None:
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append({"t": self._now(), "stage": stage[:200], **self._usage()})

    def candidate(self, cand: Any) -> None:
        """Called by the optimizer context each time a candidate is recorded, in the artifact's order."""
        self.candidates.append({"index": len(self.candidates), "name": cand.name, "dev": cand.score, "t": self._now(), **self._usage()})

    def wrap_log(self, log: Callable[[str], None]) -> Callable[[str], None]:
        def logged(msg: str) -> None:
            self.sample(msg)
            log(msg)

        return logged

    def to_json(self) -> dict:
        return {"samples": self.samples + [{"t": self._now(), "stage": "done", **self._usage()}], "candidates": list(self.candidates)}
