"""Evaluation reports, the paired regression test, CI gates and their JUnit / Markdown / JSON writers.

Everything here is a pure function from data to data: no LM, no CLI.  `lmc eval`
builds a `Report` with the evaluator, loads a baseline `Report`, calls
`apply_gates`, prints `Verdict.lines` and exits with `Verdict.exit_code`.

The statistical rule (see `paired_test` and docs/ci.md): a candidate *regresses*
when its drop against the baseline is both statistically significant (one-sided
test of "candidate is no worse", level 1 - confidence) and larger than
`max_drop`.  For an unchanged program the false-alarm rate is therefore at most
1 - confidence whatever `max_drop` is, and `max_drop` stops tiny but real drops
from failing the build.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import re
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Iterable, Sequence

from lmc.errors import EXIT_FAIL, EXIT_INFRA, EXIT_OK, ConfigError, LmcError, ReportError
from lmc.files import atomic_write_text

REPORT_FORMAT = "lmc-report/1"
INFRA_ERROR_KINDS = frozenset({"lm", "parse"})
ERROR_KINDS = frozenset({"lm", "parse", "assert", "runtime"})
TARGET_KINDS = frozenset({"artifact", "program"})

# Bootstrap settings: enough resamples for stable 95% bounds, few enough to stay fast.
BOOTSTRAP_RESAMPLES = 2000
# Above this many examples the paired/mean bootstrap is replaced by the normal
# approximation, which the central limit theorem makes accurate there.
BOOTSTRAP_MAX_N = 2000
# Recomputed summary numbers may differ from stored ones by float summation order.
SUMMARY_TOLERANCE = 1e-6
MAX_LISTED = 5

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


# ---------------------------------------------------------------- report data


@dataclass(frozen=True)
class ProgramRef:
    """The program a report evaluated: its name, the sha256 of its source and the source file's path.

    The path (absent in reports of earlier lmc versions) tells an edit of the same program
    (same name, same file name, new source) from another program that happens to share its name."""

    name: str
    sha256: str
    path: str | None = None

    def same_program(self, other: ProgramRef) -> bool:
        """`other` is this program (same source) or an edit of it: the same program name in a file of the
        same name (`programs/x.lmp` on main and in a pull request, or in two checkouts)."""
        if self.name != other.name:
            return False
        if self.sha256 == other.sha256:
            return True
        return bool(self.path and other.path) and self.path.rsplit("/", 1)[-1] == other.path.rsplit("/", 1)[-1]

    def describe(self) -> str:
        return f"'{self.name}' of {self.path or 'an unrecorded file'} (source sha256 {self.sha256[:12]})"


@dataclass(frozen=True)
class TargetRef:
    """The evaluated file: an artifact or a program source."""

    kind: str
    path: str
    sha256: str


@dataclass(frozen=True)
class MetricRef:
    """The metric: its name, its spec text and the score at or above which an example passes."""

    name: str
    spec: str
    threshold: float


@dataclass(frozen=True)
class DataRef:
    """The dataset: path, sha256 of the whole file and its example count (all shards)."""

    path: str
    sha256: str
    n_total: int


@dataclass(frozen=True)
class Shard:
    """Which 1-based part of N a report covers."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class Summary:
    """Totals of one evaluation run; `score` is the mean quality score (errors count 0), unrounded."""

    n: int
    score: float
    errors: int
    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    duration_s: float = 0.0
    # LM requests sent (first tries, retries, failures; cache hits send none), of them retries and failed.
    # Optional when read, so reports written before they existed still load.
    requests: int = 0
    retries: int = 0
    failed_requests: int = 0


# Summary counters a report may lack (written by an older lmc): read as 0.
_OPTIONAL_COUNTERS = ("requests", "retries", "failed_requests")


@dataclass(frozen=True)
class ExampleResult:
    """One scored example; an errored example has `error` and `error_kind` set and quality score 0."""

    id: str
    line: int
    score: float | None
    passed: bool
    error: str | None = None
    error_kind: str | None = None
    prediction: dict | None = None
    gold: dict | None = None
    feedback: str | None = None  # the metric's words about the score; written only when it said something

    @property
    def quality(self) -> float:
        """The score used for quality gates: 0 for an errored or unscored example."""
        if self.error is not None or self.score is None:
            return 0.0
        return float(self.score)

    @property
    def infra_error(self) -> bool:
        return self.error is not None and self.error_kind in INFRA_ERROR_KINDS

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "line": self.line,
            "score": self.score,
            "passed": self.passed,
            "error": self.error,
            "error_kind": self.error_kind,
            "prediction": self.prediction,
            "gold": self.gold,
            **({"feedback": self.feedback} if self.feedback is not None else {}),
        }


@dataclass(frozen=True)
class Report:
    """An evaluation report (`lmc-report/1`): what was evaluated, on what, and every per-example result."""

    program: ProgramRef
    target: TargetRef
    metric: MetricRef
    data: DataRef
    shard: Shard | None
    examples: tuple[ExampleResult, ...]
    summary: Summary
    lmc_version: str = "0.1.0"
    path: str | None = field(default=None, compare=False)

    @property
    def where(self) -> str:
        return self.path or "<report>"

    def quality_scores(self) -> list[float]:
        return [e.quality for e in self.examples]

    def infra_errors(self) -> list[ExampleResult]:
        return [e for e in self.examples if e.infra_error]

    def to_json(self) -> dict:
        return {
            "format": REPORT_FORMAT,
            "lmc_version": self.lmc_version,
            "program": {"name": self.program.name, "sha256": self.program.sha256,
                        **({"path": self.program.path} if self.program.path else {})},
            "target": {"kind": self.target.kind, "path": self.target.path, "sha256": self.target.sha256},
            "metric": {"name": self.metric.name, "spec": self.metric.spec, "threshold": self.metric.threshold},
            "data": {"path": self.data.path, "sha256": self.data.sha256, "n_total": self.data.n_total},
            "shard": None if self.shard is None else {"index": self.shard.index, "count": self.shard.count},
            "examples": [e.to_json() for e in self.examples],
            "summary": {
                "n": self.summary.n,
                "score": self.summary.score,
                "errors": self.summary.errors,
                "calls": self.summary.calls,
                "cached_calls": self.summary.cached_calls,
                "prompt_tokens": self.summary.prompt_tokens,
                "completion_tokens": self.summary.completion_tokens,
                "cost": self.summary.cost,
                "duration_s": self.summary.duration_s,
                "requests": self.summary.requests,
                "retries": self.summary.retries,
                "failed_requests": self.summary.failed_requests,
            },
        }

    @classmethod
    def from_json(cls, obj: Any, path: str | None = None) -> Report:
        """Validate a decoded report strictly; any problem is a one-line `ReportError` naming the file."""
        return _Reader(path or "<report>").report(obj, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Report:
        from .limits import read_bounded

        path = os.fspath(path)

        def fail(message: str) -> ReportError:
            return ReportError(f"{path}: no such report file" if message == "no such file" else f"{path}: {message}")

        try:
            text = read_bounded(path, "artifact", fail).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ReportError(f"{path}: cannot read report ({exc.__class__.__name__}: {exc})") from None
        return cls.from_json(_decode_json(text, path), path)

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temp file in the same directory, then rename) so readers never see half a report."""
        write_text_atomic(path, json.dumps(self.to_json(), indent=1, sort_keys=True, ensure_ascii=False,
                                           allow_nan=False) + "\n")


def summarize(examples: Sequence[ExampleResult], **accounting: Any) -> Summary:
    """A `Summary` whose n, score and errors are computed from the examples; LM accounting passed through."""
    n = len(examples)
    score = math.fsum(e.quality for e in examples) / n if n else 0.0
    errors = sum(1 for e in examples if e.error is not None)
    return Summary(n=n, score=score, errors=errors, **accounting)


def is_report(path: str | os.PathLike) -> bool:
    """True when `path` holds JSON whose `format` is an lmc report (so `--baseline` need not be re-evaluated)."""
    from .limits import read_bounded

    try:
        # Bounded and regular files only; a FIFO or device is refused by whoever reads it next.
        obj = json.loads(read_bounded(path, "artifact"))
    except (LmcError, OSError, ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and str(obj.get("format", "")).startswith("lmc-report/")


write_text_atomic = atomic_write_text


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed in JSON")


def _decode_json(text: str, path: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None
    except ValueError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from None


class _Reader:
    """Strict structural checks for one report; every failure names the file and the JSON path."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, where: str, what: str) -> ReportError:
        return ReportError(f"{self.where}: {where}: {what}" if where else f"{self.where}: {what}")

    def obj(self, value: Any, where: str, keys: Iterable[str]) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {_kind(value)}")
        keys = list(keys)
        missing = [k for k in keys if k not in value]
        if missing:
            raise self.fail(where, f"missing key '{missing[0]}'")
        extra = sorted(set(value) - set(keys))
        if extra:
            raise self.fail(where, f"unexpected key '{extra[0]}'")
        return value

    def str_(self, value: Any, where: str, *, empty: bool = False) -> str:
        if not isinstance(value, str) or (not empty and not value):
            raise self.fail(where, f"expected a non-empty string, got {_kind(value)}")
        return value

    def sha(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not _SHA_RE.match(value):
            raise self.fail(where, f"expected a sha256 (64 lowercase hex digits), got {_kind(value)}")
        return value

    def int_(self, value: Any, where: str, *, low: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.fail(where, f"expected an integer >= {low}, got {_kind(value)}")
        return value

    def num(self, value: Any, where: str, *, low: float = 0.0, high: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(where, f"expected a number, got {_kind(value)}")
        if value < low or (high is not None and value > high):
            bound = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
            raise self.fail(where, f"expected a number {bound}, got {value!r}")
        return float(value)

    def report(self, obj: Any, path: str | None) -> Report:
        if not isinstance(obj, dict):
            raise self.fail("", f"expected a JSON object, got {_kind(obj)}")
        fmt = obj.get("format")
        if fmt != REPORT_FORMAT:
            if isinstance(fmt, str) and fmt.startswith("lmc-report/"):
                raise self.fail("format", f"'{fmt}' is not supported by this lmc; expected '{REPORT_FORMAT}'")
            if fmt is None:
                raise self.fail("", f"not an lmc report (no 'format' key); expected format '{REPORT_FORMAT}'")
            raise self.fail("format", f"'{fmt}' is not an lmc report; expected '{REPORT_FORMAT}'")
        o = self.obj(obj, "", ("format", "lmc_version", "program", "target", "metric", "data", "shard", "examples", "summary"))
        version = self.str_(o["lmc_version"], "lmc_version")

        p = self.obj(o["program"], "program", ("name", "sha256") + (("path",) if isinstance(o["program"], dict)
                                                                    and "path" in o["program"] else ()))
        program = ProgramRef(self.str_(p["name"], "program.name"), self.sha(p["sha256"], "program.sha256"),
                             self.str_(p["path"], "program.path") if "path" in p else None)

        t = self.obj(o["target"], "target", ("kind", "path", "sha256"))
        if t["kind"] not in TARGET_KINDS:
            raise self.fail("target.kind", f"expected 'artifact' or 'program', got {_kind(t['kind'])}")
        target = TargetRef(t["kind"], self.str_(t["path"], "target.path"), self.sha(t["sha256"], "target.sha256"))

        m = self.obj(o["metric"], "metric", ("name", "spec", "threshold"))
        metric = MetricRef(
            self.str_(m["name"], "metric.name"),
            self.str_(m["spec"], "metric.spec"),
            self.num(m["threshold"], "metric.threshold", high=1.0),
        )

        d = self.obj(o["data"], "data", ("path", "sha256", "n_total"))
        data = DataRef(self.str_(d["path"], "data.path"), self.sha(d["sha256"], "data.sha256"), self.int_(d["n_total"], "data.n_total"))

        shard = None
        if o["shard"] is not None:
            s = self.obj(o["shard"], "shard", ("index", "count"))
            count = self.int_(s["count"], "shard.count", low=1)
            index = self.int_(s["index"], "shard.index", low=1)
            if index > count:
                raise self.fail("shard", f"index {index} is larger than count {count}")
            shard = Shard(index, count)

        if not isinstance(o["examples"], list):
            raise self.fail("examples", f"expected a list, got {_kind(o['examples'])}")
        examples = tuple(self.example(e, f"examples[{i}]", metric.threshold) for i, e in enumerate(o["examples"]))
        self.unique(examples)
        if shard is None and len(examples) != data.n_total:
            raise self.fail("examples", f"{len(examples)} examples but data.n_total is {data.n_total} and the report is not a shard")
        if len(examples) > data.n_total:
            raise self.fail("examples", f"{len(examples)} examples but data.n_total is only {data.n_total}")
        if shard is not None:
            stray = [e.id for e in examples if not in_shard(e.id, shard.index, shard.count)]
            if stray:
                raise self.fail("examples", f"id(s) {_list(stray)} do not belong to shard {shard}")

        summary = self.summary(o["summary"], examples)
        return Report(program, target, metric, data, shard, examples, summary, version, path)

    def example(self, value: Any, where: str, threshold: float) -> ExampleResult:
        keys = ("id", "line", "score", "passed", "error", "error_kind", "prediction", "gold")
        e = self.obj(value, where, keys + (("feedback",) if isinstance(value, dict) and "feedback" in value else ()))
        feedback = e.get("feedback")
        if feedback is not None and not isinstance(feedback, str):
            raise self.fail(f"{where}.feedback", f"expected a string or null, got {_kind(feedback)}")
        ex_id = self.str_(e["id"], f"{where}.id")
        where = f"{where} (id '{ex_id}')"
        line = self.int_(e["line"], f"{where}.line", low=1)
        error = e["error"]
        if error is not None and not isinstance(error, str):
            raise self.fail(f"{where}.error", f"expected a string or null, got {_kind(error)}")
        kind = e["error_kind"]
        if (error is None) != (kind is None):
            raise self.fail(where, "'error' and 'error_kind' must both be null or both be set")
        if kind is not None and kind not in ERROR_KINDS:
            raise self.fail(f"{where}.error_kind", f"expected one of: {', '.join(sorted(ERROR_KINDS))}; got {_kind(kind)}")
        score = e["score"]
        if score is None:
            if error is None:
                raise self.fail(f"{where}.score", "is null but the example has no error")
        else:
            score = self.num(score, f"{where}.score", high=1.0)
        if not isinstance(e["passed"], bool):
            raise self.fail(f"{where}.passed", f"expected true or false, got {_kind(e['passed'])}")
        expected = error is None and score is not None and score >= threshold
        if e["passed"] != expected:
            raise self.fail(f"{where}.passed", f"is {str(e['passed']).lower()} but score {score} with threshold {threshold:g} means {str(expected).lower()}")
        for key in ("prediction", "gold"):
            if e[key] is not None and not isinstance(e[key], dict):
                raise self.fail(f"{where}.{key}", f"expected an object or null, got {_kind(e[key])}")
        return ExampleResult(ex_id, line, score, e["passed"], error, kind, e["prediction"], e["gold"], feedback)

    def unique(self, examples: Sequence[ExampleResult]) -> None:
        seen: set[str] = set()
        lines: set[int] = set()
        for ex in examples:
            if ex.id in seen:
                raise self.fail("examples", f"id '{ex.id}' appears more than once")
            if ex.line in lines:
                raise self.fail("examples", f"line {ex.line} appears more than once")
            seen.add(ex.id)
            lines.add(ex.line)

    def summary(self, value: Any, examples: Sequence[ExampleResult]) -> Summary:
        keys = ("n", "score", "errors", "calls", "cached_calls", "prompt_tokens", "completion_tokens", "cost", "duration_s")
        if isinstance(value, dict):
            keys += tuple(k for k in _OPTIONAL_COUNTERS if k in value)
        s = self.obj(value, "summary", keys)
        ints = {k: self.int_(s[k], f"summary.{k}") for k in ("n", "errors", "calls", "cached_calls", "prompt_tokens", "completion_tokens")}
        score = self.num(s["score"], "summary.score", high=1.0)
        cost = self.num(s["cost"], "summary.cost")
        duration = self.num(s["duration_s"], "summary.duration_s")
        truth = summarize(examples)
        if ints["n"] != truth.n:
            raise self.fail("summary.n", f"is {ints['n']} but the report has {truth.n} examples")
        if ints["errors"] != truth.errors:
            raise self.fail("summary.errors", f"is {ints['errors']} but {truth.errors} examples have an error")
        if abs(score - truth.score) > SUMMARY_TOLERANCE:
            raise self.fail("summary.score", f"is {score!r} but the mean example score is {truth.score!r}")
        if ints["cached_calls"] > ints["calls"]:
            raise self.fail("summary.cached_calls", f"is {ints['cached_calls']}, more than calls ({ints['calls']})")
        for k in _OPTIONAL_COUNTERS:
            ints[k] = self.int_(s[k], f"summary.{k}") if k in s else 0
        return Summary(score=score, cost=cost, duration_s=duration, **ints)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, (int, float)):
        return repr(value)
    return {"dict": "an object", "list": "a list"}.get(type(value).__name__, type(value).__name__)


def _list(ids: Sequence[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(f"'{i}'" for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


# ---------------------------------------------------------------- shards


def parse_shard(spec: str) -> tuple[int, int]:
    """`"2/4"` -> `(2, 4)`; 1-based.  A malformed or out-of-range spec is a one-line `ConfigError`.

    >>> parse_shard("2/4")
    (2, 4)
    """
    m = _SHARD_RE.match(spec or "")
    if not m:
        raise ConfigError(f"bad shard '{spec}'; expected i/N such as 1/4")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ConfigError(f"shard '{spec}' is out of range; expected i/N with 1 <= i <= N, such as 1/{max(count, 1)}")
    return index, count


def shard_of(example_id: str, count: int) -> int:
    """The 1-based shard an id belongs to: sha256 of its UTF-8 text, so stable across runs, machines and Python versions."""
    digest = hashlib.sha256(example_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def in_shard(example_id: str, index: int, count: int) -> bool:
    return shard_of(example_id, count) == index


def merge_reports(reports: Sequence[Report]) -> Report:
    """Join the shard reports of one evaluation into a full report; refuse mixed runs, gaps and overlaps.

    Accounting (calls, tokens, cost, duration) is summed over shards, so
    `duration_s` of a merged report is total compute time, not wall time.
    """
    if not reports:
        raise ReportError("no reports to merge")
    first = reports[0]
    for r in reports:
        if r.shard is None:
            raise ReportError(f"{r.where}: is not a shard report (shard is null); only reports written with --shard can be merged")
    for r in reports[1:]:
        for what in ("program", "target", "metric", "data"):
            if getattr(r, what) != getattr(first, what):
                raise ReportError(f"{r.where}: {what} differs from {first.where} ({_ref(getattr(r, what))} vs {_ref(getattr(first, what))}); shards must come from one evaluation")
    counts = sorted({r.shard.count for r in reports})
    if len(counts) > 1:
        raise ReportError(f"shards were split in different ways (counts {', '.join(map(str, counts))}); re-run with one N")
    count = counts[0]
    by_index: dict[int, Report] = {}
    for r in reports:
        if r.shard.index in by_index:
            raise ReportError(f"shard {r.shard} is given twice ({by_index[r.shard.index].where} and {r.where})")
        by_index[r.shard.index] = r
    missing = [f"{i}/{count}" for i in range(1, count + 1) if i not in by_index]
    if missing:
        raise ReportError(f"missing shard(s) {', '.join(missing)}; got {len(reports)} of {count}")
    owner: dict[str, str] = {}
    overlap: list[str] = []
    examples: list[ExampleResult] = []
    for i in range(1, count + 1):
        r = by_index[i]
        for ex in r.examples:
            if ex.id in owner:
                overlap.append(ex.id)
            owner[ex.id] = r.where
            examples.append(ex)
    if overlap:
        raise ReportError(f"id(s) {_list(overlap)} appear in more than one shard")
    lines: set[int] = set()
    for ex in examples:
        if ex.line in lines:
            raise ReportError(f"line {ex.line} appears in more than one shard")
        lines.add(ex.line)
    if len(examples) != first.data.n_total:
        raise ReportError(f"merged shards cover {len(examples)} of {first.data.n_total} examples of {first.data.path}; some shard report is incomplete")
    examples.sort(key=lambda e: e.line)
    sums = {
        k: sum(getattr(r.summary, k) for r in reports)
        for k in ("calls", "cached_calls", "prompt_tokens", "completion_tokens", *_OPTIONAL_COUNTERS)
    }
    summary = summarize(
        examples,
        cost=math.fsum(r.summary.cost for r in reports),
        duration_s=math.fsum(r.summary.duration_s for r in reports),
        **sums,
    )
    return Report(first.program, first.target, first.metric, first.data, None, tuple(examples), summary, first.lmc_version)


def _ref(value: Any) -> str:
    if isinstance(value, (ProgramRef, TargetRef, DataRef)):
        return f"{getattr(value, 'name', None) or value.path} {value.sha256[:12]}"
    if isinstance(value, MetricRef):
        return f"{value.name} = {value.spec} @ {value.threshold:g}"
    return str(value)


# ---------------------------------------------------------------- statistics


def _is_binary(values: Iterable[float]) -> bool:
    return all(v == 0.0 or v == 1.0 for v in values)


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(confidence)


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted list."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _bootstrap_means(values: Sequence[float], seed: int) -> list[float]:
    rng = random.Random(seed)
    n = len(values)
    means = [math.fsum(rng.choices(values, k=n)) / n for _ in range(BOOTSTRAP_RESAMPLES)]
    means.sort()
    return means


def mean_ci(scores: Sequence[float], confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean and two-sided `confidence` interval: Wilson for 0/1 scores, seeded percentile bootstrap otherwise.

    >>> [round(x, 3) for x in mean_ci([1.0] * 8 + [0.0] * 2)]
    [0.8, 0.49, 0.943]
    """
    scores = [float(s) for s in scores]
    n = len(scores)
    if n == 0:
        raise ValueError("mean_ci needs at least one score")
    mean = math.fsum(scores) / n
    alpha = 1.0 - confidence
    if _is_binary(scores):
        z = _z(1.0 - alpha / 2)
        denom = 1.0 + z * z / n
        centre = (mean + z * z / (2 * n)) / denom
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / denom
        return mean, max(0.0, centre - half), min(1.0, centre + half)
    if n > BOOTSTRAP_MAX_N:
        sd = math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / (n - 1))
        half = _z(1.0 - alpha / 2) * sd / math.sqrt(n)
        return mean, mean - half, mean + half
    means = _bootstrap_means(scores, seed)
    return mean, _quantile(means, alpha / 2), _quantile(means, 1 - alpha / 2)


def _upper_tail(k: int, m: int, p: float, mid: bool) -> float:
    """P(X >= k) for X ~ Binomial(m, p); with `mid`, P(X > k) + P(X = k) / 2 (the mid-p value)."""
    if k < 0:
        return 1.0
    if k > m:
        return 0.0
    if p <= 0.0:
        return (0.5 if mid else 1.0) if k == 0 else 0.0
    if p >= 1.0:
        return 0.5 if (mid and k == m) else 1.0
    # Log-space recurrence over the terms k..m: one lgamma per call instead of one per term.
    log_odds = math.log(p) - math.log1p(-p)
    t = math.lgamma(m + 1) - math.lgamma(k + 1) - math.lgamma(m - k + 1) + k * math.log(p) + (m - k) * math.log1p(-p)
    logs = [t]
    for j in range(k, m):
        t += math.log((m - j) / (j + 1)) + log_odds
        logs.append(t)
    top = max(logs)
    terms = [math.exp(x - top) for x in logs]
    if mid:
        terms[0] *= 0.5
    return min(1.0, math.exp(top) * math.fsum(terms))


def _lower_tail(k: int, m: int, p: float, mid: bool) -> float:
    """P(X <= k), or the mid-p version."""
    return _upper_tail(m - k, m, 1.0 - p, mid)


def _solve(f, target: float, increasing: bool) -> float:
    """The p in [0, 1] where the monotone f(p) crosses `target` (bisection; 45 steps give 3e-14)."""
    lo, hi = 0.0, 1.0
    for _ in range(45):
        mid = (lo + hi) / 2
        if (f(mid) < target) == increasing:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@functools.lru_cache(maxsize=4096)
def _mcnemar(b: int, c: int, alpha: float, mid: bool) -> tuple[float, float, float]:
    """One-sided p-value for "candidate no worse" and bounds on pi = P(a changed example improved).

    Cached because CI runs and the benchmark ask for the same few (b, c) pairs again and again.
    """
    m = b + c
    if m == 0:
        return 1.0, 0.5, 0.5
    # b ~ Bin(m, 1/2) under H0; a large b means the candidate lost examples.
    p_value = _upper_tail(b, m, 0.5, mid)
    # Clopper-Pearson (or mid-p) bounds, the interval that inverts the same binomial test.
    pi_hi = 1.0 if c == m else _solve(lambda p: _lower_tail(c, m, p, mid), alpha, increasing=False)
    pi_lo = 0.0 if c == 0 else _solve(lambda p: _upper_tail(c, m, p, mid), alpha, increasing=True)
    return p_value, pi_lo, pi_hi


@dataclass(frozen=True)
class PairedResult:
    """Candidate vs baseline on the same examples.

    `delta = cand_mean - base_mean`; `delta_lo`/`delta_hi` are the one-sided
    `confidence` bounds (together a two-sided 2*confidence-1 interval, e.g. 90%
    for 0.95); `p_value` is one-sided for "the candidate is no worse" (small: it got worse), and
    `p_improved` the mirror test of "the candidate is no better" (small: it got better).
    """

    n: int
    base_mean: float
    cand_mean: float
    delta: float
    delta_lo: float
    delta_hi: float
    p_value: float
    method: str
    regressed: bool
    flipped_to_fail: list[str]
    flipped_to_pass: list[str]
    max_drop: float = 0.0
    confidence: float = 0.95
    discordant: int = 0
    p_improved: float = 1.0

    def to_json(self) -> dict:
        return {
            "n": self.n,
            "base_mean": self.base_mean,
            "cand_mean": self.cand_mean,
            "delta": self.delta,
            "delta_lo": self.delta_lo,
            "delta_hi": self.delta_hi,
            "interval": f"one-sided {self.confidence:g} bounds",
            "p_value": self.p_value,
            "p_improved": self.p_improved,
            "method": self.method,
            "regressed": self.regressed,
            "max_drop": self.max_drop,
            "confidence": self.confidence,
            "discordant": self.discordant,
            "flipped_to_fail": list(self.flipped_to_fail),
            "flipped_to_pass": list(self.flipped_to_pass),
        }


METHODS = ("auto", "mcnemar-exact", "mcnemar-midp", "bootstrap", "normal")


def paired_test(
    base: Sequence[float],
    cand: Sequence[float],
    ids: Sequence[str],
    *,
    max_drop: float,
    confidence: float = 0.95,
    seed: int = 0,
    threshold: float = 1.0,
    method: str = "auto",
) -> PairedResult:
    """Paired comparison of per-example scores; `regressed` when the drop is significant *and* above `max_drop`.

    Hypothesis: H0 "the candidate is no worse than the baseline" (true delta >= 0)
    is tested one-sided at level 1 - confidence.  The gate fails when H0 is
    rejected (p < 1 - confidence, equivalently `delta_hi < 0`) and the observed
    drop exceeds `max_drop`.  Why not "fail only when `delta_hi < -max_drop`"
    (confident that the *true* drop exceeds max_drop)?  That rule also keeps
    false alarms under 1 - confidence, but with max_drop=0.02 it catches a real
    5-point drop on 300 examples only about a third of the time; ours keeps the
    same false-alarm guarantee for an unchanged program and roughly doubles the
    detection rate (bench/bench_gate.py).  Its cost: a real drop slightly under
    max_drop can fail sometimes.

    Methods: 0/1 scores use McNemar's exact binomial test on the discordant pairs
    (b examples pass->fail, c fail->pass; under H0 b ~ Bin(b+c, 1/2)) with a
    Clopper-Pearson bound on c/(b+c) mapped to delta = (c-b)/n, which makes
    `delta_hi < 0` exactly equivalent to p < alpha.  Other scores use a seeded
    paired bootstrap of the per-example differences (normal approximation above
    BOOTSTRAP_MAX_N examples).  `threshold` decides pass/fail for the flip lists,
    which are ordered by size of the change, then by position.

    >>> r = paired_test([1.0] * 100, [1.0] * 80 + [0.0] * 20, [str(i) for i in range(100)], max_drop=0.02)
    >>> r.regressed, r.method, len(r.flipped_to_fail)
    (True, 'mcnemar-exact', 20)
    """
    base = [float(x) for x in base]
    cand = [float(x) for x in cand]
    ids = [str(i) for i in ids]
    n = len(base)
    if len(cand) != n or len(ids) != n:
        raise ValueError(f"paired_test needs equal lengths, got base={n} cand={len(cand)} ids={len(ids)}")
    if n == 0:
        raise ValueError("paired_test needs at least one example")
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0.5 and 1, got {confidence}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    alpha = 1.0 - confidence
    base_mean = math.fsum(base) / n
    cand_mean = math.fsum(cand) / n
    diffs = [c - b for b, c in zip(base, cand)]
    delta = math.fsum(diffs) / n
    binary = _is_binary(base) and _is_binary(cand)
    if method == "auto":
        method = "mcnemar-exact" if binary else ("bootstrap" if n <= BOOTSTRAP_MAX_N else "normal")
    if method.startswith("mcnemar") and not binary:
        raise ValueError(f"{method} needs 0/1 scores")

    b = sum(1 for d in diffs if d < 0)
    c = sum(1 for d in diffs if d > 0)
    m = b + c
    if method.startswith("mcnemar"):
        mid = method == "mcnemar-midp"
        p_value, pi_lo, pi_hi = _mcnemar(b, c, alpha, mid)
        p_improved = _upper_tail(c, m, 0.5, mid) if m else 1.0
        lo, hi = (m / n) * (2 * pi_lo - 1), (m / n) * (2 * pi_hi - 1)
    elif method == "bootstrap":
        means = _bootstrap_means(diffs, seed)
        lo, hi = _quantile(means, alpha), _quantile(means, 1 - alpha)
        # Share of resampled means at or above zero: consistent with `hi < 0` up to resampling resolution.
        p_value = (1 + sum(1 for x in means if x >= 0)) / (len(means) + 1)
        p_improved = (1 + sum(1 for x in means if x <= 0)) / (len(means) + 1)
        if all(d == diffs[0] for d in diffs):
            p_value = 1.0 if diffs[0] >= 0 else 0.0
            p_improved = 1.0 if diffs[0] <= 0 else 0.0
    else:  # normal
        sd = math.sqrt(math.fsum((d - delta) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
        se = sd / math.sqrt(n)
        z = _z(confidence)
        lo, hi = delta - z * se, delta + z * se
        p_value = (1.0 if delta >= 0 else 0.0) if se == 0 else 1.0 - NormalDist().cdf(-delta / se)
        p_improved = (1.0 if delta <= 0 else 0.0) if se == 0 else 1.0 - NormalDist().cdf(delta / se)

    # A tiny epsilon so that a drop of exactly max_drop (e.g. 0.02 from 6/300) is not a float-rounding regression.
    regressed = p_value < alpha and delta < -max_drop - 1e-12

    order = sorted(range(n), key=lambda i: (-abs(diffs[i]), i))
    to_fail = [ids[i] for i in order if base[i] >= threshold > cand[i]]
    to_pass = [ids[i] for i in order if cand[i] >= threshold > base[i]]
    return PairedResult(
        n=n,
        base_mean=base_mean,
        cand_mean=cand_mean,
        delta=delta,
        delta_lo=lo,
        delta_hi=hi,
        p_value=p_value,
        method=method,
        regressed=regressed,
        flipped_to_fail=to_fail,
        flipped_to_pass=to_pass,
        max_drop=max_drop,
        confidence=confidence,
        discordant=m,
        p_improved=p_improved,
    )


# ---------------------------------------------------------------- comparing reports


def align(base: Report, cand: Report, *, allow_program_change: bool = False) -> tuple[list[str], list[float], list[float]]:
    """Pair the candidate's examples with the baseline's by id, in the candidate's order.

    Refuses (ReportError) a different dataset file (sha256), a different metric,
    another program (unless `allow_program_change`): the same program is the same
    source, or an edit of it (same name in a file of the same name: the pull-request
    case); a program that merely shares the name is another one.  Also refuses candidate
    ids that the baseline lacks.  A sharded candidate against a full
    baseline is fine: only the candidate's ids are compared.
    """
    if base.data.sha256 != cand.data.sha256:
        raise ReportError(
            f"{base.where}: baseline was evaluated on different data ({base.data.path} sha256 {base.data.sha256[:12]}) "
            f"than the candidate ({cand.data.path} sha256 {cand.data.sha256[:12]}); "
            "re-evaluate the baseline on the same file, e.g. pass its artifact as --baseline"
        )
    if base.metric != cand.metric:
        raise ReportError(
            f"{base.where}: baseline used metric {_ref(base.metric)} but the candidate uses {_ref(cand.metric)}; "
            "scores under different metrics cannot be compared"
        )
    if not base.program.same_program(cand.program) and not allow_program_change:
        raise ReportError(
            f"{base.where}: the baseline is another program: {base.program.describe()}, the candidate is "
            f"{cand.program.describe()}; pass --allow-different-program if comparing them is intended"
        )
    by_id = {e.id: e for e in base.examples}
    missing = [e.id for e in cand.examples if e.id not in by_id]
    if missing:
        raise ReportError(f"{base.where}: baseline report has no result for {len(missing)} candidate example(s): {_list(missing)}")
    ids = [e.id for e in cand.examples]
    return ids, [by_id[i].quality for i in ids], [e.quality for e in cand.examples]


# ---------------------------------------------------------------- gates


@dataclass(frozen=True)
class GateOptions:
    """The gate flags of `lmc eval`; `baseline` is the --baseline path (None when absent)."""

    min_score: float | None = None
    baseline: str | None = None
    max_drop: float | None = None
    max_errors: int | None = None
    confidence: float = 0.95
    allow_program_change: bool = False

    def validate(self) -> None:
        """Raise ConfigError for inconsistent flags; call before evaluating anything."""
        if self.max_drop is not None and self.baseline is None:
            raise ConfigError("--max-drop needs --baseline (an artifact or report to compare against)")
        if self.min_score is not None and not 0.0 <= self.min_score <= 1.0:
            raise ConfigError(f"--min-score must be between 0 and 1, got {self.min_score:g}")
        if self.max_drop is not None and not 0.0 <= self.max_drop <= 1.0:
            raise ConfigError(f"--max-drop must be between 0 and 1, got {self.max_drop:g}")
        if self.max_errors is not None and self.max_errors < 0:
            raise ConfigError(f"--max-errors must be 0 or more, got {self.max_errors}")
        if not 0.5 < self.confidence < 1.0:
            raise ConfigError(f"--confidence must be between 0.5 and 1 (exclusive), got {self.confidence:g}")


@dataclass(frozen=True)
class Verdict:
    """Outcome of the gates: exit code 0/1/3, the failing reasons, lines to print (last = the reason), the paired test."""

    exit_code: int
    reasons: list[str]
    lines: list[str]
    paired: PairedResult | None = None

    @property
    def passed(self) -> bool:
        return self.exit_code == EXIT_OK

    @property
    def label(self) -> str:
        return {EXIT_OK: "pass", EXIT_FAIL: "fail", EXIT_INFRA: "error"}.get(self.exit_code, "fail")


def _pct(x: float) -> str:
    return f"{x:.3f}"


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def _p(x: float) -> str:
    return f"{x:.3g}"


def apply_gates(cand: Report, base: Report | None, opts: GateOptions) -> Verdict:
    """Apply --max-errors, --min-score and the baseline comparison; infrastructure errors (exit 3) outrank quality (exit 1).

    Raises ConfigError for inconsistent options and ReportError when the
    baseline cannot be compared (see `align`).
    """
    opts.validate()
    if opts.baseline is not None and base is None:
        raise ConfigError(f"--baseline {opts.baseline} was given but no baseline report was evaluated")
    if not cand.examples:
        raise ReportError(f"{cand.where}: the report has no examples to gate on")

    lines: list[str] = []
    infra: list[str] = []
    quality: list[str] = []

    scores = cand.quality_scores()
    mean, lo, hi = mean_ci(scores, opts.confidence)
    lines.append(
        f"score {_pct(mean)} ({opts.confidence:.0%} CI {_pct(lo)}-{_pct(hi)}) on {len(scores)} examples, "
        f"{cand.summary.errors} error(s)"
    )

    bad = cand.infra_errors()
    if opts.max_errors is not None and len(bad) > opts.max_errors:
        infra.append(
            f"{len(bad)} examples failed with LM/parse errors, more than --max-errors {opts.max_errors} "
            f"(first: {_list([e.id for e in bad])})"
        )

    if opts.min_score is not None and mean < opts.min_score:
        quality.append(f"score {_pct(mean)} is below --min-score {opts.min_score:g}")

    paired = None
    if base is not None:
        ids, b, c = align(base, cand, allow_program_change=opts.allow_program_change)
        max_drop = 0.0 if opts.max_drop is None else opts.max_drop
        paired = paired_test(b, c, ids, max_drop=max_drop, confidence=opts.confidence, threshold=cand.metric.threshold)
        # The p-value of the direction the score moved: for a gain, the drop test's p is near 1 and says nothing.
        which = f"improvement p={_p(paired.p_improved)}" if paired.delta > 0 else f"p={_p(paired.p_value)}"
        lines.append(
            f"baseline {_pct(paired.base_mean)} -> candidate {_pct(paired.cand_mean)}: delta {_signed(paired.delta)} "
            f"({2 * opts.confidence - 1:.0%} CI {_signed(paired.delta_lo)} to {_signed(paired.delta_hi)}), "
            f"{which} one-sided ({paired.method}, {paired.discordant} changed examples)"
        )
        if not base.program.same_program(cand.program):
            lines.append(f"note: comparing program '{cand.program.name}' against another program, "
                         f"'{base.program.name}' (--allow-different-program)")
        elif base.program.sha256 != cand.program.sha256:
            lines.append(f"note: the program's source changed since the baseline (sha256 "
                         f"{base.program.sha256[:12]} -> {cand.program.sha256[:12]})")
        if paired.flipped_to_fail:
            lines.append(f"pass->fail ({len(paired.flipped_to_fail)}): {_list(paired.flipped_to_fail, 10)}")
        if paired.flipped_to_pass:
            lines.append(f"fail->pass ({len(paired.flipped_to_pass)}): {_list(paired.flipped_to_pass, 10)}")
        if paired.regressed:
            quality.append(
                f"score dropped {-paired.delta:.3f} vs baseline, more than --max-drop {max_drop:g} "
                f"and significant at {opts.confidence:g} (p={_p(paired.p_value)})"
            )

    reasons = infra + quality
    if reasons:
        # Infrastructure errors outrank quality: a flaky LM explains a low score, not the reverse.
        code = EXIT_INFRA if infra else EXIT_FAIL
        lines += ["also: " + r for r in reasons[1:]]
        lines.append("FAIL: " + reasons[0])
    else:
        code = EXIT_OK
        lines.append("PASS: " + _pass_reason(mean, opts, paired))
    return Verdict(code, reasons, lines, paired)


def _pass_reason(mean: float, opts: GateOptions, paired: PairedResult | None) -> str:
    parts = []
    if opts.min_score is not None:
        parts.append(f"score {_pct(mean)} >= --min-score {opts.min_score:g}")
    if paired is not None:
        if paired.p_value < 1 - paired.confidence:
            parts.append(f"drop {-paired.delta:.3f} is significant but within --max-drop {paired.max_drop:g}")
        elif paired.delta > 0 and paired.p_improved < 1 - paired.confidence:
            parts.append(f"significant improvement vs baseline (delta {_signed(paired.delta)}, p={_p(paired.p_improved)})")
        else:
            parts.append(f"no significant drop vs baseline (delta {_signed(paired.delta)}, p={_p(paired.p_value)})")
    if opts.max_errors is not None:
        parts.append(f"LM/parse errors within --max-errors {opts.max_errors}")
    return "; ".join(parts) if parts else f"score {_pct(mean)} (no gates set)"


# ---------------------------------------------------------------- outputs


def report_stats(report: Report, confidence: float = 0.95) -> dict:
    """The numbers of the eval table: score with its interval, n, errors, calls, cost, time."""
    mean, lo, hi = mean_ci(report.quality_scores(), confidence) if report.examples else (0.0, 0.0, 0.0)
    s = report.summary
    return {
        "target": report.target.path,
        "score": mean,
        "score_lo": lo,
        "score_hi": hi,
        "confidence": confidence,
        "n": s.n,
        "passed": sum(1 for e in report.examples if e.passed),
        "errors": s.errors,
        "infra_errors": len(report.infra_errors()),
        "calls": s.calls,
        "cached_calls": s.cached_calls,
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "cost": s.cost,
        "duration_s": s.duration_s,
        "requests": s.requests,
        "retries": s.retries,
        "failed_requests": s.failed_requests,
    }


def verdict_json(cand: Report, base: Report | None, verdict: Verdict, opts: GateOptions | None = None) -> dict:
    """The `--format json` document: verdict, exit code, reasons, candidate/baseline stats, paired test, options."""
    confidence = opts.confidence if opts else (verdict.paired.confidence if verdict.paired else 0.95)
    out = {
        "verdict": verdict.label,
        "exit_code": verdict.exit_code,
        "reason": verdict.lines[-1] if verdict.lines else "",
        "reasons": list(verdict.reasons),
        "candidate": report_stats(cand, confidence),
        "baseline": report_stats(base, confidence) if base is not None else None,
        "paired": verdict.paired.to_json() if verdict.paired else None,
        "metric": {"name": cand.metric.name, "spec": cand.metric.spec, "threshold": cand.metric.threshold},
        "data": {"path": cand.data.path, "sha256": cand.data.sha256, "n_total": cand.data.n_total},
    }
    if opts is not None:
        out["gates"] = {
            "min_score": opts.min_score,
            "baseline": opts.baseline,
            "max_drop": opts.max_drop,
            "max_errors": opts.max_errors,
            "confidence": opts.confidence,
        }
    return out


# Characters XML 1.0 cannot carry at all; LM output sometimes contains them.
_XML_BAD = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(text: str) -> str:
    return _XML_BAD.sub("\ufffd", text)


def _example_dump(ex: ExampleResult, base_ex: ExampleResult | None) -> str:
    doc = {"line": ex.line, "score": ex.score, "prediction": ex.prediction, "gold": ex.gold}
    if ex.error is not None:
        doc["error"] = ex.error
    if base_ex is not None:
        doc["baseline_score"] = base_ex.quality
        doc["baseline_prediction"] = base_ex.prediction
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False)


def junit_xml(cand: Report, verdict: Verdict, base: Report | None = None) -> str:
    """JUnit XML: one testcase per example.

    Without a baseline a testcase fails when the example does not pass the
    metric.  With one, only regressed examples (pass->fail) fail; examples
    failing on both sides are `skipped` (known failures), so the report's red
    cases match what the gate judged.  Examples with an error are `error`s.
    """
    import xml.etree.ElementTree as ET

    flipped = set(verdict.paired.flipped_to_fail) if verdict.paired else set()
    base_by_id = {e.id: e for e in base.examples} if base is not None else {}
    compared = verdict.paired is not None
    suite_name = f"lmc eval {cand.program.name} ({cand.metric.name})"
    classname = f"lmc.{cand.program.name}.{cand.metric.name}"
    failures = errors = skipped = 0
    cases = []
    for ex in cand.examples:
        case = ET.Element("testcase", {"name": ex.id, "classname": classname, "file": cand.data.path, "line": str(ex.line)})
        base_ex = base_by_id.get(ex.id)
        if ex.error is not None:
            errors += 1
            el = ET.SubElement(case, "error", {"message": _xml_text(_first_line(ex.error)), "type": ex.error_kind or "error"})
            el.text = _xml_text(ex.error)
        elif compared and ex.id in flipped:
            failures += 1
            base_score = base_ex.quality if base_ex else float("nan")
            el = ET.SubElement(case, "failure", {"message": f"regressed: score {base_score:g} on baseline -> {ex.quality:g}", "type": "regression"})
            el.text = f"example {ex.id} (line {ex.line}) passed on the baseline and fails on the candidate"
        elif not ex.passed:
            if compared:
                skipped += 1
                ET.SubElement(case, "skipped", {"message": f"known failure: score {ex.quality:g}, also fails on the baseline"})
            else:
                failures += 1
                el = ET.SubElement(case, "failure", {"message": f"score {ex.quality:g} below threshold {cand.metric.threshold:g}", "type": "metric"})
                el.text = f"example {ex.id} (line {ex.line}) scored {ex.quality:g} on {cand.metric.spec}"
        if len(case):
            out = ET.SubElement(case, "system-out")
            out.text = _xml_text(_example_dump(ex, base_ex))
        cases.append(case)

    total = len(cases)
    duration = f"{cand.summary.duration_s:.3f}"
    attrs = {"tests": str(total), "failures": str(failures), "errors": str(errors), "skipped": str(skipped), "time": duration}
    root = ET.Element("testsuites", {"name": "lmc eval", **attrs})
    suite = ET.SubElement(root, "testsuite", {"name": suite_name, **attrs})
    props = ET.SubElement(suite, "properties")
    stats = report_stats(cand, verdict.paired.confidence if verdict.paired else 0.95)
    prop_values = {
        "verdict": verdict.label,
        "exit_code": str(verdict.exit_code),
        "target": cand.target.path,
        "data": cand.data.path,
        "metric": f"{cand.metric.name} = {cand.metric.spec}",
        "score": f"{stats['score']:.4f}",
    }
    if verdict.paired is not None:
        prop_values.update(
            baseline_score=f"{verdict.paired.base_mean:.4f}",
            delta=f"{verdict.paired.delta:+.4f}",
            p_value=f"{verdict.paired.p_value:.4g}",
        )
    for name, value in prop_values.items():
        ET.SubElement(props, "property", {"name": name, "value": _xml_text(value)})
    suite.extend(cases)
    out = ET.SubElement(suite, "system-out")
    out.text = _xml_text("\n".join(verdict.lines))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(cand: Report, verdict: Verdict, path: str | os.PathLike, base: Report | None = None) -> None:
    write_text_atomic(path, junit_xml(cand, verdict, base))


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _md(text: Any, limit: int = 80) -> str:
    """Text safe inside a Markdown table cell: one line, pipes and backticks escaped, bounded length."""
    s = str(text).replace("\r", " ").replace("\n", " ")
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`").replace("<", "&lt;")


def _brief(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def render_markdown(cand: Report, base: Report | None, verdict: Verdict, *, top: int = 10) -> str:
    """Markdown for a PR comment or $GITHUB_STEP_SUMMARY: verdict, score vs baseline, delta with interval, top flips."""
    icon = {"pass": "✅", "fail": "❌", "error": "⚠️"}[verdict.label]
    title = {"pass": "pass", "fail": "quality regression" if verdict.paired and verdict.paired.regressed else "fail", "error": "too many errors"}[verdict.label]
    confidence = verdict.paired.confidence if verdict.paired else 0.95
    out = [f"### {icon} lmc eval: {title}", ""]
    out.append(f"`{_md(cand.target.path)}` on `{_md(cand.data.path)}` ({cand.summary.n} examples), metric `{_md(cand.metric.name)}` = `{_md(cand.metric.spec)}`")
    out.append("")
    out.append(f"| | score | {confidence:.0%} CI | n | passed | errors | calls | cost | time |")
    out.append("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    rows = [("candidate", cand)] + ([("baseline", base)] if base is not None else [])
    for label, rep in rows:
        s = report_stats(rep, confidence)
        out.append(
            f"| {label} | {s['score']:.3f} | {s['score_lo']:.3f} – {s['score_hi']:.3f} | {s['n']} | {s['passed']} | "
            f"{s['errors']} | {s['calls']} | ${s['cost']:.4f} | {s['duration_s']:.1f}s |"
        )
    p = verdict.paired
    if p is not None:
        out.append("")
        out.append(
            f"**Delta {p.delta:+.3f}** ({2 * p.confidence - 1:.0%} CI {p.delta_lo:+.3f} to {p.delta_hi:+.3f}), "
            f"one-sided p = {_p(p.p_value)} ({p.method})"
            + (f", improvement p = {_p(p.p_improved)}" if p.delta > 0 else "")
            + f"; max drop {p.max_drop:g}; "
            f"{len(p.flipped_to_fail)} pass→fail, {len(p.flipped_to_pass)} fail→pass."
        )
        cand_by_id = {e.id: e for e in cand.examples}
        base_by_id = {e.id: e for e in base.examples} if base is not None else {}
        for heading, flips in (("pass → fail", p.flipped_to_fail), ("fail → pass", p.flipped_to_pass)):
            if not flips:
                continue
            out += ["", f"<details{' open' if heading == 'pass → fail' else ''}><summary>{heading} ({len(flips)})</summary>", ""]
            out.append("| id | line | baseline | candidate | prediction | gold |")
            out.append("|---|---:|---:|---:|---|---|")
            for ex_id in flips[:top]:
                ex = cand_by_id.get(ex_id)
                bx = base_by_id.get(ex_id)
                if ex is None:
                    continue
                pred = f"error: {ex.error}" if ex.error else _brief(ex.prediction)
                out.append(
                    f"| `{_md(ex_id, 60)}` | {ex.line} | {bx.quality if bx else float('nan'):.2f} | {ex.quality:.2f} | "
                    f"{_md(pred)} | {_md(_brief(ex.gold))} |"
                )
            if len(flips) > top:
                out.append(f"\n… and {len(flips) - top} more")
            out += ["", "</details>"]
    errored = [e for e in cand.examples if e.error is not None]
    if errored:
        out.append("")
        out.append(f"{len(errored)} example(s) errored: " + ", ".join(f"`{_md(e.id, 40)}` ({e.error_kind})" for e in errored[:top]) + (" …" if len(errored) > top else ""))
    out.append("")
    for line in verdict.lines[:-1]:
        if line.startswith("also: "):
            out.append(f"- {_md(line, 300)}")
    out.append(f"**{_md(verdict.lines[-1], 400)}**")
    return "\n".join(out) + "\n"
