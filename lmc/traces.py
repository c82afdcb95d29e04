"""Traces → training examples: `lmc run --trace` lines and LangSmith run exports, filtered and deduplicated.

Two formats are read, told apart record by record (docs/traces.md has the schemas):

* lmc's own trace lines (`lmc-trace/1`, written by `lmc run --trace` and `lmc eval --trace`):
  the example's inputs and outputs, its error, an optional score and feedback, and the
  predictor calls it made;
* LangSmith runs, exported as JSONL (one run per line) or JSON (a list of runs, an object
  with a "runs" list, or one run with nested "child_runs"): name, run_type, inputs,
  outputs, error, parent_run_id and feedback_stats.

Without `module` each trace (each root run) gives one example: the program's input fields
from its inputs and its output fields, the gold labels `compile` learns from, from its
outputs.  With `module` the calls of that module (the runs of that name) give them instead.
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from . import strict_json
from .datasets import check_value, parse_json
from .errors import ConfigError, DatasetError
from .limits import open_input

TRACE_SCHEMA = "lmc-trace/1"
ERROR_MODES = ("exclude", "include", "only")


# ---------------------------------------------------------------- --where


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "!=": operator.ne,
    "==": operator.eq,
    ">": operator.gt,
    "<": operator.lt,
}
_TOKEN_RE = r"""\s*(?:(?P<op>>=|<=|!=|==|>|<)|(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
                        |(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<word>[A-Za-z_][\w.\-]*))"""
FIELDS = ("score", "ok", "error", "duration_s", "calls", "id", "name", "feedback.NAME")


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any

    def holds(self, facts: Mapping[str, Any]) -> bool:
        have = facts.get(self.field)
        if have is None or self.value is None:  # a missing fact equals only null, and is never above or below
            same = have is None and self.value is None
            return same if self.op == "==" else (not same if self.op == "!=" else False)
        if isinstance(self.value, bool) or isinstance(have, bool):
            if self.op not in ("==", "!="):
                return False
            return (bool(have) == bool(self.value)) == (self.op == "==")
        number = isinstance(self.value, (int, float))
        if number != (isinstance(have, (int, float))):
            return False
        return _OPS[self.op](have, self.value)


@dataclass(frozen=True)
class Where:
    """`FIELD OP VALUE [and FIELD OP VALUE ...]`, e.g. `score >= 1 and duration_s < 5`."""

    text: str
    conditions: tuple[Condition, ...] = ()

    def matches(self, facts: Mapping[str, Any]) -> bool:
        return all(c.holds(facts) for c in self.conditions)


@lru_cache(maxsize=1)
def _token() -> re.Pattern:
    return re.compile(_TOKEN_RE, re.X)  # compiled on first use: `lmc --help` imports this module


def parse_where(text: str | None) -> Where:
    if text is None or not text.strip():
        return Where("")
    tokens: list[tuple[str, str]] = []
    pos = 0
    src = text.strip()
    while pos < len(src):
        m = _token().match(src, pos)
        if m is None or m.end() == pos:
            raise ConfigError(
                f"--where '{text}': cannot read '{src[pos:].strip()[:20]}'; expected FIELD OP VALUE, "
                "e.g. 'score >= 1' (OP: >= <= > < == !=; join conditions with 'and')"
            )
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(src) and src[pos].isspace():
            pos += 1
    conditions = []
    i = 0
    while i < len(tokens):
        if i and (tokens[i] != ("word", "and")):
            raise ConfigError(f"--where '{text}': expected 'and' between conditions, got '{tokens[i][1]}'")
        if i:
            i += 1
        chunk = tokens[i : i + 3]
        if len(chunk) < 3 or chunk[0][0] != "word" or chunk[1][0] != "op" or chunk[2][0] == "op":
            raise ConfigError(f"--where '{text}': expected FIELD OP VALUE, e.g. 'score >= 1'")
        name = chunk[0][1]
        if name not in FIELDS and not (name.startswith("feedback.") and len(name) > len("feedback.")):
            raise ConfigError(f"--where '{text}': unknown field '{name}'; expected one of: {', '.join(FIELDS)}")
        conditions.append(Condition(name, chunk[1][1], _literal(chunk[2], text)))
        i += 3
    return Where(text, tuple(conditions))


def _literal(token: tuple[str, str], text: str) -> Any:
    kind, raw = token
    if kind == "num":
        value = float(raw)
        if not math.isfinite(value):
            raise ConfigError(f"--where '{text}': {raw} is not a finite number")
        return int(value) if value.is_integer() and "." not in raw and "e" not in raw.lower() else value
    if kind == "str":
        return json.loads('"' + raw[1:-1].replace('"', '\\"') + '"') if raw[0] == "'" else json.loads(raw)
    words = {"true": True, "false": False, "null": None, "none": None}
    if raw.lower() in words:
        return words[raw.lower()]
    return raw  # a bare word compares as a string: `name == classify`


# ---------------------------------------------------------------- records


@dataclass
class Record:
    """One candidate example: where it was read, its inputs and outputs, and the facts --where can test."""

    where: str  # file:line
    id: str
    inputs: dict
    outputs: dict | None
    error: str | None
    facts: dict = field(default_factory=dict)
    foreign: bool = False  # from another framework: a one-key record may stand for a one-field program


def read_values(path: str) -> Iterator[tuple[int, Any]]:
    """Every JSON value of a trace file with its 1-based line: a JSONL file's lines, or a JSON document's runs."""
    shown = str(path)
    if not Path(path).exists():
        raise DatasetError("file not found", shown, hint="expected an `lmc run --trace` JSONL file or a LangSmith export")

    def fail(message: str) -> DatasetError:
        return DatasetError(message, shown)

    fd, cap = open_input(path, "data", fail)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise DatasetError("grew past the size limit for a dataset while it was read", shown)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8", shown, data[: exc.start].count(b"\n") + 1
        ) from None
    if not text.strip():
        raise DatasetError("file is empty; expected traces", shown)
    whole = _document(text)
    if whole is not None:
        yield from _runs_of(whole, text, shown)
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield lineno, parse_json(line, shown, lineno, hint=_LIST_HINT, loads=_loads)


_LIST_HINT = "write one JSON object per line, or export the runs as one JSON document"


def _loads(text: str) -> Any:
    """Traces come from other tools too: duplicate keys are taken as read; NaN/Infinity are not."""
    return strict_json.loads(text, duplicate_keys=True)


def _document(text: str) -> Any:
    """The file as one JSON document when it is one (a list, {"runs": [...]}, a run with child_runs)."""
    stripped = text.lstrip()
    if not stripped.startswith(("[", "{")):
        return None
    try:
        return _loads(text)
    except (ValueError, RecursionError):
        return None  # JSONL, or a broken document: read line by line, which names the bad line


def _runs_of(doc: Any, text: str, shown: str) -> Iterator[tuple[int, Any]]:
    if isinstance(doc, dict) and isinstance(doc.get("runs"), list):
        items = doc["runs"]
    elif isinstance(doc, list):
        items = doc
    else:
        yield 1, doc
        return
    lines = _item_lines(text, len(items))
    for i, item in enumerate(items):
        yield lines[i] if i < len(lines) else 1, item


def _item_lines(text: str, n: int) -> list[int]:
    """The line each item of the document's (outer or "runs") list starts on, for error messages."""
    decoder = json.JSONDecoder()
    start = text.find("[", text.find('"runs"') if text.lstrip().startswith("{") else 0)
    out: list[int] = []
    pos = start + 1
    try:
        while len(out) < n:
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
            out.append(text.count("\n", 0, pos) + 1)
            _, pos = decoder.raw_decode(text, pos)
    except ValueError:
        pass
    return out


def records(path: str, module: str | None = None) -> Iterator[Record]:
    """The candidate examples of one trace file, in file order."""
    shown = str(path)
    langsmith: list[tuple[int, dict]] = []
    for lineno, value in read_values(path):
        where = f"{shown}:{lineno}"
        if not isinstance(value, dict):
            raise DatasetError(f"expected a JSON object (a trace or a run), got {type(value).__name__}", shown, lineno)
        if "run_type" in value or "child_runs" in value:
            langsmith.extend((lineno, run) for run in _flatten(value, shown, lineno))
        elif "calls" in value or value.get("schema") == TRACE_SCHEMA:
            yield from _lmc_records(value, where, module)
        else:
            raise DatasetError(
                "neither an lmc trace (with 'calls') nor a LangSmith run (with 'run_type'); "
                "expected the output of `lmc run --trace` or a LangSmith run export",
                shown,
                lineno,
            )
    if langsmith:
        yield from _langsmith_records(langsmith, shown, module)


def _obj(value: Any, what: str, where: str, *, null: bool = False) -> dict | None:
    if value is None and null:
        return None
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: '{what}' must be a JSON object, got {type(value).__name__}")
    return value


def _feedback(value: Any, where: str) -> dict:
    """`feedback` as name -> number; LangSmith's feedback_stats hold {"avg": ...} per name."""
    if value is None:
        return {}
    _obj(value, "feedback", where)
    out = {}
    for name, v in value.items():
        if isinstance(v, dict):
            v = v.get("avg", v.get("score"))
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[f"feedback.{name}"] = v
    return out


def _score(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DatasetError(f"{where}: 'score' must be a number or null, got {json.dumps(value)[:40]}")
    return float(value)


def _lmc_records(trace: dict, where: str, module: str | None) -> Iterator[Record]:
    tid = trace.get("id")
    if isinstance(tid, bool) or not isinstance(tid, (str, int)):
        raise DatasetError(f"{where}: 'id' must be a string or an integer")
    calls = trace.get("calls")
    if not isinstance(calls, list):
        raise DatasetError(f"{where}: 'calls' must be a list of predictor calls")
    error = trace.get("error")
    facts = {
        "id": str(tid),
        "ok": error is None,
        "error": error,
        "score": _score(trace.get("score"), where),
        "duration_s": trace.get("duration_s"),
        "calls": len(calls),
        "name": trace.get("program"),
        **_feedback(trace.get("feedback"), where),
    }
    if module is None:
        if "inputs" not in trace:
            raise DatasetError(
                f"{where}: the trace has no 'inputs'; it was written before lmc recorded them "
                f"(rerun `lmc run --trace`), or pass --module to take a module's calls"
            )
        yield Record(
            where, str(tid), _obj(trace["inputs"], "inputs", where) or {}, _obj(trace.get("outputs"), "outputs", where, null=True), error, facts
        )
        return
    n = 0
    for k, call in enumerate(calls):
        if not isinstance(call, dict):
            raise DatasetError(f"{where}: call {k + 1} must be a JSON object")
        if module not in (call.get("module"), call.get("predictor")):
            continue
        n += 1
        call_error = call.get("error")
        own = {
            **facts,
            "ok": call_error is None and error is None,
            "error": call_error or error,
            "duration_s": call.get("latency_s"),
            "name": call.get("module"),
        }
        yield Record(
            where,
            f"{tid}.{module}.{n}",
            _obj(call.get("inputs"), "inputs", where) or {},
            _obj(call.get("outputs"), "outputs", where, null=True),
            call_error or error,
            own,
        )


def _flatten(run: dict, shown: str, lineno: int, parent: Any = None) -> Iterator[dict]:
    """A run and its nested child_runs (a RunTree export), each with its parent_run_id."""
    children = run.get("child_runs") or []
    if not isinstance(children, list):
        raise DatasetError("'child_runs' must be a list of runs", shown, lineno)
    own = {k: v for k, v in run.items() if k != "child_runs"}
    if parent is not None and own.get("parent_run_id") is None:
        own["parent_run_id"] = parent
    yield own
    for child in children:
        if not isinstance(child, dict):
            raise DatasetError("each of 'child_runs' must be a run object", shown, lineno)
        yield from _flatten(child, shown, lineno, own.get("id"))


def _langsmith_records(runs: list[tuple[int, dict]], shown: str, module: str | None) -> Iterator[Record]:
    for lineno, run in runs:
        where = f"{shown}:{lineno}"
        is_root = run.get("parent_run_id") is None
        if (module is None and not is_root) or (module is not None and run.get("name") != module):
            continue
        rid = run.get("id")
        if rid is None or isinstance(rid, (bool, dict, list)):
            raise DatasetError(f"{where}: a LangSmith run needs an 'id'")
        feedback = _feedback(run.get("feedback_stats"), where)
        # `score` is the feedback named "score", else the only feedback the run has.
        score = feedback.get("feedback.score")
        if score is None and len(feedback) == 1:
            score = next(iter(feedback.values()))
        error = run.get("error")
        facts = {
            "id": str(rid),
            "ok": error is None,
            "error": error,
            "score": score,
            "name": run.get("name"),
            "duration_s": _seconds(run.get("start_time"), run.get("end_time")),
            "calls": len(run.get("child_run_ids") or []) or None,
            **feedback,
        }
        yield Record(
            where,
            str(rid),
            _obj(run.get("inputs") or {}, "inputs", where) or {},
            _obj(run.get("outputs"), "outputs", where, null=True),
            error,
            facts,
            foreign=True,
        )


def _seconds(start: Any, end: Any) -> float | None:
    from datetime import datetime

    def when(v: Any) -> float | None:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return v / 1000.0  # the JS SDK's milliseconds since the epoch
        if isinstance(v, str):
            try:
                return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
            except ValueError:
                return None
        return None

    a, b = when(start), when(end)
    return round(b - a, 4) if a is not None and b is not None else None


# ---------------------------------------------------------------- records -> examples


@dataclass
class Conversion:
    """The examples and what was left out, by reason, for the summary line."""

    examples: list[dict] = field(default_factory=list)
    read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    first_skip: dict[str, str] = field(default_factory=dict)  # reason -> the first file:line it hit

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.first_skip.setdefault(reason, where)

    def summary(self) -> str:
        parts = [f"{n} {reason} (first at {self.first_skip[reason]})" for reason, n in self.skipped.items()]
        n, read = len(self.examples), self.read
        return f"{n} example{'s' if n != 1 else ''} from {read} trace{'s' if read != 1 else ''}" + (
            f"; left out: {', '.join(parts)}" if parts else ""
        )


def to_examples(
    paths: Sequence[str],
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    *,
    where: Where = Where(""),
    module: str | None = None,
    errors: str = "exclude",
) -> Conversion:
    """Filter the records of `paths` and shape them as the program's examples (inputs + gold outputs).

    A record missing one of the program's inputs, or whose values do not fit their types, is left
    out and counted; so is a second record with the same inputs (the first one wins)."""
    if errors not in ERROR_MODES:
        raise ConfigError(f"--errors: '{errors}' is not one of: {', '.join(ERROR_MODES)}")
    conv = Conversion()
    seen: dict[str, str] = {}
    ids: set[str] = set()
    for path in paths:
        for rec in records(path, module):
            conv.read += 1
            failed = rec.error is not None or rec.outputs is None
            if errors == "exclude" and failed:
                conv.skip("failed (--errors exclude)", rec.where)
                continue
            if errors == "only" and not failed:
                conv.skip("succeeded (--errors only)", rec.where)
                continue
            if not where.matches(rec.facts):
                conv.skip(f"not matching --where '{where.text}'", rec.where)
                continue
            example = _shape(rec, inputs, outputs, conv, with_outputs=not failed)
            if example is None:
                continue
            key = json.dumps({k: example[k] for k in inputs}, sort_keys=True, ensure_ascii=False)
            if key in seen:
                conv.skip("duplicates of an earlier input", rec.where)
                continue
            seen[key] = rec.where
            example["id"] = _unique(rec.id, ids)
            conv.examples.append(example)
    return conv


def _shape(rec: Record, inputs: Mapping[str, Any], outputs: Mapping[str, Any], conv: Conversion, with_outputs: bool) -> dict | None:
    example: dict = {"id": rec.id}
    if not _take(example, rec, rec.inputs, inputs, "input", conv):
        return None
    if with_outputs and rec.outputs is not None and not _take(example, rec, rec.outputs, outputs, "output", conv):
        return None
    return example


def _take(example: dict, rec: Record, values: Mapping[str, Any], fields: Mapping[str, Any], side: str, conv: Conversion) -> bool:
    """Copy each of `fields` (the program's inputs or outputs: `side`) from the record's `values` into
    `example`; False, the record skipped with the reason, at the first one missing or not of its type."""
    got = _aligned(values, fields) if rec.foreign else values
    for name, tp in fields.items():
        if name not in got:
            conv.skip(f"without {side} '{name}'", rec.where)
            return False
        problem = check_value(tp, got[name])
        if problem is not None:
            conv.skip(f"with a bad {side} '{name}' ({problem})", rec.where)
            return False
        example[name] = got[name]
    return True


def _aligned(values: Mapping[str, Any], fields: Mapping[str, Any]) -> Mapping[str, Any]:
    """Values by the program's field names; a one-field program takes a one-key record whatever its key
    (LangChain names its chains' single input 'input' and single output 'output')."""
    if all(name in values for name in fields) or len(fields) != 1 or len(values) != 1:
        return values
    return {next(iter(fields)): next(iter(values.values()))}


def _unique(base: str, ids: set[str]) -> str:
    out, n = base, 1
    while out in ids:
        n += 1
        out = f"{base}-{n}"
    ids.add(out)
    return out


def dataset_text(examples: Iterable[dict]) -> str:
    return "".join(json.dumps(ex, ensure_ascii=False, allow_nan=False) + "\n" for ex in examples)
