"""The evaluation report (`lmc-report/1`): its data model, the strict reader of report files and `summarize`."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from lmc import strict_json
from lmc.errors import LmcError, ReportError
from lmc.files import atomic_write_text
from lmc.limits import read_bounded

from .shards import Shard, in_shard

REPORT_FORMAT = "lmc-report/1"
INFRA_ERROR_KINDS = frozenset({"lm", "parse"})
ERROR_KINDS = frozenset({"lm", "parse", "assert", "runtime"})
TARGET_KINDS = frozenset({"artifact", "program"})

# Recomputed summary numbers may differ from stored ones by float summation order.
SUMMARY_TOLERANCE = 1e-6
MAX_LISTED = 5

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")

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
        if not (self.path and other.path):
            return False
        return self.path.rsplit("/", 1)[-1] == other.path.rsplit("/", 1)[-1]

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
OPTIONAL_COUNTERS = ("requests", "retries", "failed_requests")


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
            "program": {"name": self.program.name, "sha256": self.program.sha256, **({"path": self.program.path} if self.program.path else {})},
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
        atomic_write_text(path, json.dumps(self.to_json(), indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n")


def summarize(examples: Sequence[ExampleResult], **accounting: Any) -> Summary:
    """A `Summary` whose n, score and errors are computed from the examples; LM accounting passed through."""
    n = len(examples)
    score = math.fsum(e.quality for e in examples) / n if n else 0.0
    errors = sum(1 for e in examples if e.error is not None)
    return Summary(n=n, score=score, errors=errors, **accounting)


def is_report(path: str | os.PathLike) -> bool:
    """True when `path` holds JSON whose `format` is an lmc report (so `--baseline` need not be re-evaluated)."""
    try:
        # Bounded and regular files only; a FIFO or device is refused by whoever reads it next.
        obj = json.loads(read_bounded(path, "artifact"))
    except (LmcError, OSError, ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and str(obj.get("format", "")).startswith("lmc-report/")


def _decode_json(text: str, path: str) -> Any:
    try:
        return strict_json.loads(text, duplicate_keys=True)
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

        p = self.obj(o["program"], "program", ("name", "sha256") + (("path",) if isinstance(o["program"], dict) and "path" in o["program"] else ()))
        program = ProgramRef(
            self.str_(p["name"], "program.name"),
            self.sha(p["sha256"], "program.sha256"),
            self.str_(p["path"], "program.path") if "path" in p else None,
        )

        t = self.obj(o["target"], "target", ("kind", "path", "sha256"))
        if t["kind"] not in TARGET_KINDS:
            raise self.fail("target.kind", f"expected 'artifact' or 'program', got {_kind(t['kind'])}")
        target = TargetRef(t["kind"], self.str_(t["path"], "target.path"), self.sha(t["sha256"], "target.sha256"))

        m = self.obj(o["metric"], "metric", ("name", "spec", "threshold"))
        metric = MetricRef(
            self.str_(m["name"], "metric.name"), self.str_(m["spec"], "metric.spec"), self.num(m["threshold"], "metric.threshold", high=1.0)
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
                raise self.fail("examples", f"id(s) {list_ids(stray)} do not belong to shard {shard}")

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
            raise self.fail(
                f"{where}.passed", f"is {str(e['passed']).lower()} but score {score} with threshold {threshold:g} means {str(expected).lower()}"
            )
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
        keys: tuple[str, ...] = ("n", "score", "errors", "calls", "cached_calls", "prompt_tokens", "completion_tokens", "cost", "duration_s")
        if isinstance(value, dict):
            keys += tuple(k for k in OPTIONAL_COUNTERS if k in value)
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
        for k in OPTIONAL_COUNTERS:
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


def list_ids(ids: Sequence[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(f"'{i}'" for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def describe_ref(value: Any) -> str:
    if isinstance(value, (ProgramRef, TargetRef, DataRef)):
        return f"{getattr(value, 'name', None) or value.path} {value.sha256[:12]}"
    if isinstance(value, MetricRef):
        return f"{value.name} = {value.spec} @ {value.threshold:g}"
    return str(value)
