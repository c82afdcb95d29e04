"""Progress of a long command (compile, eval, run --data) on stderr, wherever it runs.

On a terminal the commands keep their live panel or bar.  Anywhere else (a CI log,
`| tee`, a file) a `Progress` prints a status line every `LMC_PROGRESS_INTERVAL`
seconds (default 10) from a background thread, so a slow LM call never leaves the
log silent; `--progress json` prints the same status as one JSON object per line
(schema `lmc-progress/1`, docs/cli.md), and `--quiet` prints none.

    progress = Progress("eval", mode)       # mode: resolve_mode("auto" | "lines" | "json" | "off", quiet)
    progress.watch(client)                   # calls, cached calls and spend come from the LM client
    progress.begin(40)                       # a batch of 40 examples starts
    progress.advance(score=1.0)              # one finished (a score, when it has one)
    progress.close()                         # a last line, then the thread stops
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import IO, Any, Callable

from .errors import ConfigError

MODES = ("auto", "lines", "json", "off")
DEFAULT_INTERVAL = 10.0
SCHEMA = "lmc-progress/1"


def resolve_mode(mode: str | None, quiet: bool = False, stream: IO[str] | None = None) -> str:
    """'panel' (a terminal's live view), 'lines', 'json' or 'off' for `--progress MODE` and `--quiet`."""
    mode = mode or "auto"
    if mode not in MODES:
        raise ConfigError(f"--progress: '{mode}' is not one of: {', '.join(MODES)}")
    if quiet:
        if mode not in ("auto", "off"):
            raise ConfigError(f"--quiet turns progress off; it cannot be combined with --progress {mode}")
        return "off"
    if mode == "auto":
        s = stream if stream is not None else sys.stderr
        return "panel" if _isatty(s) else "lines"
    return mode


def interval_from_env() -> float:
    """Seconds between status lines: $LMC_PROGRESS_INTERVAL, else 10."""
    raw = os.environ.get("LMC_PROGRESS_INTERVAL")
    if raw is None or raw.strip() == "":
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.05 <= value <= 3600:
        raise ConfigError(f"LMC_PROGRESS_INTERVAL='{raw}': expected a number of seconds between 0.05 and 3600")
    return value


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """What a command has done so far, printed as a line (or a JSON object) at a fixed interval.

    Counters are updated from the event loop's thread and read by the ticker thread; each is a
    single attribute write, so a line may be one example behind, never torn."""

    def __init__(
        self,
        command: str,
        mode: str,
        *,
        stream: IO[str] | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        score_label: str = "score",
    ):
        self.command = command
        self.mode = mode  # 'lines', 'json' or 'off' ('panel' is drawn by the command; this one stays silent)
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval if interval is not None else interval_from_env()
        self.clock = clock
        self.score_label = score_label  # "best dev score" for compile, "score" (the running mean) for eval
        self.started = clock()
        self.stage = "starting"
        self.done = 0
        self.total = 0
        self.failed = 0
        self.batch_started = self.started
        self.batch_done = 0
        self.best: float | None = None
        self._score_sum = 0.0
        self._scored = 0
        self.client: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one line at a time on the stream

    @property
    def active(self) -> bool:
        return self.mode in ("lines", "json")

    # -- what the command reports --------------------------------------------------------
    def watch(self, client: Any) -> None:
        self.client = client

    def set_stage(self, stage: str) -> None:
        self.stage = stage
        if self.mode == "json":
            self.emit("stage")

    def begin(self, total: int, stage: str | None = None) -> None:
        """A batch of `total` examples starts (a compile scores many batches; run and eval one or two)."""
        if stage is not None:
            self.set_stage(stage)
        self.total, self.done, self.failed = total, 0, 0
        self.batch_started, self.batch_done = self.clock(), 0

    def add_total(self, more: int) -> None:
        """An eval with a baseline runs both on the same examples: one batch, twice the examples."""
        self.total += more

    def advance(self, score: float | None = None, failed: bool = False) -> None:
        self.done += 1
        self.batch_done += 1
        if failed:
            self.failed += 1
        if score is not None:
            self._score_sum += score
            self._scored += 1

    def record_best(self, score: float) -> None:
        if self.best is None or score > self.best:
            self.best = score

    # -- the status ----------------------------------------------------------------------
    def eta(self) -> float | None:
        """Seconds until the current batch is done, at the rate of this batch so far."""
        if not self.total:
            return None
        if self.done >= self.total:
            return 0.0
        if not self.batch_done:
            return None
        rate = (self.clock() - self.batch_started) / self.batch_done
        return max(0.0, rate * (self.total - self.done))

    def score(self) -> float | None:
        if self.best is not None:
            return self.best
        return self._score_sum / self._scored if self._scored else None

    def snapshot(self, event: str = "progress") -> dict:
        usage = getattr(self.client, "usage", None)
        eta = self.eta()
        return {
            "schema": SCHEMA,
            "event": event,
            "command": self.command,
            "elapsed_s": round(self.clock() - self.started, 3),
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "failed": self.failed,
            "calls": getattr(usage, "calls", 0) if usage is not None else 0,
            "cached_calls": getattr(usage, "cached_calls", 0) if usage is not None else 0,
            "cost": round(getattr(usage, "cost", 0.0), 8) if usage is not None else 0.0,
            "score": None if self.score() is None else round(self.score() or 0.0, 6),
            "score_kind": "best" if self.best is not None else ("mean" if self._scored else None),
            "eta_s": None if eta is None else round(eta, 1),
        }

    def line(self) -> str:
        s = self.snapshot()
        parts = [f"{s['stage'][:80]}"]
        if s["total"]:
            parts.append(f"{s['done']}/{s['total']} examples" + (f" ({s['failed']} failed)" if s["failed"] else ""))
        parts.append(f"{s['calls']} LM calls ({s['cached_calls']} cached)")
        parts.append(f"${s['cost']:.4f}")
        if s["score"] is not None:
            parts.append(f"{self.score_label if s['score_kind'] == 'best' else 'score so far'} {s['score']:.3f}")
        if s["eta_s"] is not None and s["total"]:
            parts.append(f"ETA {_duration(s['eta_s'])}")
        return f"[{s['elapsed_s']:7.1f}s] {self.command}: " + " · ".join(parts)

    def emit(self, event: str = "progress") -> None:
        if not self.active:
            return
        text = json.dumps(self.snapshot(event), allow_nan=False) if self.mode == "json" else self.line()
        with self._lock:
            try:
                self.stream.write(text + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed under us: progress is not worth failing the run
                pass

    # -- the ticker ----------------------------------------------------------------------
    def start(self) -> "Progress":
        if self.active and self._thread is None:
            if self.mode == "json":
                self.emit("start")
            self._thread = threading.Thread(target=self._tick, name="lmc-progress", daemon=True)
            self._thread.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.emit()

    def close(self) -> None:
        """Stop the ticker.  JSON ends with an 'end' object holding the final counts; text lines need no
        last line, as every command prints its own summary next."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._thread = None
        if self.mode == "json":
            self.emit("end")

    def __enter__(self) -> "Progress":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
