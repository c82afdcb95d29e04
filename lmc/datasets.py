"""Examples from JSONL or JSON-list files: strict loading, validation against a program, splits."""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from lmc.errors import DatasetError, did_you_mean
from lmc.limits import human, open_input
from lmc.strict_json import NotJson, loads as strict_loads

# A JSONL line longer than this is refused.  Real examples are a few KB; a 10 MiB
# line is almost always a mis-saved file (a whole JSON list on one line, a binary
# blob), and refusing it early keeps memory bounded: we never read more than
# this many bytes of a single line.
MAX_LINE_BYTES = 10 * 1024 * 1024
# A `.json` list file has to be parsed whole, so it gets a file-size cap instead.
MAX_JSON_FILE_BYTES = 200 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Example:
    """One record: its id, its 1-based line in the file, and every key as read."""

    id: str
    line: int
    data: dict
    path: str = ""

    def __hash__(self) -> int:
        # `data` is a dict, so the generated hash would fail; (path, id) identifies an example.
        return hash((self.path, self.id, self.line))

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def inputs(self, names: Iterable[str]) -> dict:
        """The values of `names`, in that order; a missing one is a DatasetError naming the line."""
        names = list(names)
        out = {}
        for name in names:
            if name not in self.data:
                raise _missing(self, name, names, "input")
            out[name] = self.data[name]
        return out


@dataclass(frozen=True)
class Dataset:
    """A loaded file: where it came from, the sha256 of its bytes, and its examples in file order."""

    path: str
    sha256: str
    examples: tuple[Example, ...]

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self):
        return iter(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]

    @property
    def ids(self) -> list[str]:
        return [ex.id for ex in self.examples]

    def fields(self) -> list[str]:
        """Every key seen in any example, in first-seen order (for messages and summaries)."""
        seen: dict[str, None] = {}
        for ex in self.examples:
            for key in ex.data:
                seen.setdefault(key, None)
        return list(seen)


# ---------------------------------------------------------------- loading


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list"}.get(type(value), type(value).__name__)


def load_dataset(path: str | os.PathLike, *, id_field: str = "id", max_line_bytes: int = MAX_LINE_BYTES) -> Dataset:
    """Load a `.jsonl` file (one object per line) or a `.json` file (a list of objects).

    Every problem is a DatasetError naming the file and line.  Examples without
    `id_field` get an id from their content (`content_id`), which no insertion shifts.
    """
    p = Path(path)
    shown = str(path)
    if not p.exists():
        raise DatasetError("file not found", shown, hint="expected a .jsonl file with one JSON object per line")

    def fail(message: str) -> DatasetError:
        if message == "is a directory":
            message = "is a directory, expected a .jsonl or .json file"
        return DatasetError(message, shown)

    # Regular files under the data limit only, checked on the open descriptor before reading.
    fd, cap = open_input(p, "data", fail)
    with os.fdopen(fd, "rb") as fh:
        if p.suffix.lower() == ".json":
            digest, records = _read_json_list(fh, shown)
        else:
            digest, records = _read_jsonl(fh, shown, max_line_bytes, cap)
    if not records:
        raise DatasetError("file is empty; expected at least one JSON object", shown)
    return Dataset(shown, digest, _examples(records, shown, p.stem, id_field))


def from_records(records: Sequence[Mapping], *, path: str = "<memory>", id_field: str = "id") -> Dataset:
    """A Dataset from in-memory dicts (line = index+1); same id rules as a file."""
    lines = []
    for i, rec in enumerate(records, start=1):
        if not isinstance(rec, Mapping):
            raise DatasetError(f"expected a JSON object, got {_type_name(rec)}", path, i)
        lines.append((i, dict(rec)))
    blob = json.dumps([r for _, r in lines], sort_keys=True, ensure_ascii=False, default=str).encode()
    return Dataset(path, hashlib.sha256(blob).hexdigest(), _examples(lines, path, Path(path).stem or "example", id_field))


def _read_jsonl(fh, shown: str, max_line_bytes: int, cap: int) -> tuple[str, list[tuple[int, Any]]]:
    digest = hashlib.sha256()
    records: list[tuple[int, Any]] = []
    total = 0
    lineno = 0
    while True:
        raw = fh.readline(max_line_bytes + 1)
        if not raw:
            break
        lineno += 1
        total += len(raw)
        if total > cap:
            raise DatasetError(f"grew past the {human(cap)} limit for a dataset while it was read", shown)
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            raise DatasetError(f"line is longer than the {_human(max_line_bytes)} limit; expected one JSON object per line", shown, lineno)
        digest.update(raw)
        if lineno == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); save the file as UTF-8", shown, lineno
            ) from None
        text = text.strip()  # also drops the \r of CRLF files
        if not text:
            continue
        records.append((lineno, _parse_line(text, shown, lineno)))
    return digest.hexdigest(), records


def _parse_line(text: str, shown: str, lineno: int) -> dict:
    value = parse_json(text, shown, lineno, hint="this looks like a JSON list; name the file .json or write one object per line")
    if not isinstance(value, dict):
        raise DatasetError(f"expected a JSON object, got {_type_name(value)}", shown, lineno)
    return value


def parse_json(text: str, shown: str, lineno: int | None = None, *, hint: str | None = None, loads: Callable[[str], Any] = strict_loads) -> Any:
    """The JSON value of one line of `shown` (or of the whole file: `lineno` None), or a DatasetError naming the
    file and line: a syntax error (with `hint` when the line looks like part of a JSON list), a value `loads`
    refuses (NaN, a duplicate key, ...), or nesting too deep."""
    try:
        return loads(text)
    except json.JSONDecodeError as exc:
        looks_like_list = text.strip() in ("[", "]") or text.lstrip().startswith("[{")
        line = lineno if lineno is not None else exc.lineno
        raise DatasetError(f"not valid JSON: {exc.msg} at column {exc.colno}", shown, line, hint=hint if looks_like_list else None) from None
    except NotJson as exc:
        raise DatasetError(str(exc), shown, lineno, hint=exc.hint) from None
    except RecursionError:
        raise DatasetError("not valid JSON: nested too deeply", shown, lineno) from None


def _read_json_list(fh, shown: str) -> tuple[str, list[tuple[int, Any]]]:
    size = os.fstat(fh.fileno()).st_size
    if size > MAX_JSON_FILE_BYTES:
        raise DatasetError(f"a .json file over {_human(MAX_JSON_FILE_BYTES)} is refused; use .jsonl, one object per line", shown)
    data = fh.read(MAX_JSON_FILE_BYTES + 1)
    if len(data) > MAX_JSON_FILE_BYTES:
        raise DatasetError(f"grew past {_human(MAX_JSON_FILE_BYTES)} while it was read", shown)
    digest = hashlib.sha256(data).hexdigest()
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8", shown, line) from None
    if not text.strip():
        return digest, []
    value = parse_json(text, shown)
    if not isinstance(value, list):
        raise DatasetError(f"expected a JSON list of objects, got {_type_name(value)}", shown, hint="for one object per line name the file .jsonl")
    records = []
    for i, item in enumerate(value, start=1):
        if not isinstance(item, dict):
            raise DatasetError(f"item {i}: expected a JSON object, got {_type_name(item)}", shown, i)
        records.append((i, item))
    return digest, records


def content_id(stem: str, data: dict, seen: dict[str, int]) -> str:
    """`<stem>-<12 hex of the record's sha256>`: stays with the record when lines are inserted or moved.

    (Ids from line numbers made a rerun after an insertion at the top skip the new input
    and keep an old answer under its id.)  The n-th identical record gets `-n` appended,
    so duplicates are told apart in file order, deterministically."""
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    base = f"{stem}-{hashlib.sha256(blob.encode('utf-8')).hexdigest()[:12]}"
    seen[base] = seen.get(base, 0) + 1
    return base if seen[base] == 1 else f"{base}-{seen[base]}"


def _examples(records: list[tuple[int, dict]], shown: str, stem: str, id_field: str) -> tuple[Example, ...]:
    first_line: dict[str, int] = {}
    seen: dict[str, int] = {}
    out = []
    for lineno, data in records:
        if id_field in data:
            raw_id = data[id_field]
            if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
                raise DatasetError(f"'{id_field}' must be a string or an integer, got {_type_name(raw_id)}", shown, lineno)
            ex_id = str(raw_id)
            if not ex_id.strip():
                raise DatasetError(f"'{id_field}' is empty", shown, lineno)
        else:
            ex_id = content_id(stem, data, seen)
        if ex_id in first_line:
            raise DatasetError(f"duplicate id '{ex_id}' (first on line {first_line[ex_id]})", shown, lineno)
        first_line[ex_id] = lineno
        out.append(Example(ex_id, lineno, data, shown))
    return tuple(out)


def _human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:g} {unit}"
        n = n / 1024
    return str(n)


# ---------------------------------------------------------------- validation


def check_value(tp: Any, value: Any) -> str | None:
    """Why `value` does not fit `tp`, or None.

    `tp` is anything with `.check(value) -> str | None` (lmc.types' classes), or a
    plain Python class (`str`, `int`, `float`, `bool`, `list`, `dict`), or None/`object` for "anything".
    """
    if tp is None or tp is object or tp is Any:
        return None
    checker = getattr(tp, "check", None)
    if callable(checker):
        return checker(value)
    if isinstance(tp, type):
        if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        if tp is int and isinstance(value, bool):
            return f"expected int, got {_type_name(value)}"
        if isinstance(value, tp):
            return None
        return f"expected {tp.__name__}, got {_type_name(value)}"
    raise TypeError(f"cannot check values against {tp!r}")


def type_label(tp: Any) -> str:
    name = getattr(tp, "name", None)
    if isinstance(name, str):
        return name
    return getattr(tp, "__name__", str(tp))


def _missing(ex: Example, name: str, expected: Sequence[str], what: str) -> DatasetError:
    close = did_you_mean(name, ex.data.keys())
    fields = "expected fields: " + ", ".join(expected)
    hint = f"{close} {fields}" if close else fields
    if ex.path:
        return DatasetError(f"missing {what} field '{name}'", ex.path, ex.line, hint=hint)
    return DatasetError(f"line {ex.line}: missing {what} field '{name}'", hint=hint)


def validate(dataset: Dataset, inputs: Mapping[str, Any], outputs: Mapping[str, Any] | None = None, *, need_labels: Iterable[str] = ()) -> None:
    """Check every example against a program: inputs present and well typed, needed labels present.

    `inputs`/`outputs` map field names to types (see `check_value`); `need_labels`
    names the fields the metric reads from each example.

    Output fields that are present are type-checked too (they are the gold labels a
    metric compares against).  Raises the first problem in file order as a
    DatasetError; the message counts how many more examples are affected.
    """
    outputs = dict(outputs or {})
    # Sorted so the reported problem does not depend on set iteration order.  A
    # needed label may be any example field (a python metric can read `supporting`),
    # not only a program output; outputs are also type-checked.
    need = sorted(set(need_labels))
    input_names = list(inputs)
    problems: list[DatasetError] = []
    for ex in dataset.examples:
        err = _example_problem(ex, dataset.path, inputs, input_names, outputs, need)
        if err is not None:
            problems.append(err)
    if problems:
        first = problems[0]
        if len(problems) > 1:
            more = len(problems) - 1
            suffix = f" ({more} more example{'s' if more > 1 else ''} with problems)"
            raise DatasetError(_strip_where(first) + suffix, first.path, first.line, hint=first.hint)
        raise first


def _strip_where(err: DatasetError) -> str:
    where = f"{err.path}:{err.line}: " if err.path and err.line else (f"{err.path}: " if err.path else "")
    return err.message[len(where) :] if where and err.message.startswith(where) else err.message


def _example_problem(
    ex: Example, path: str, inputs: Mapping[str, Any], input_names: list[str], outputs: Mapping[str, Any], need: list[str]
) -> DatasetError | None:
    for name in input_names:
        if name not in ex.data:
            return _missing(replace(ex, path=path), name, input_names, "input")
        why = check_value(inputs[name], ex.data[name])
        if why:
            return DatasetError(f"input field '{name}' does not fit {type_label(inputs[name])}: {why}", path, ex.line)
    for name in need:
        if name not in ex.data or ex.data[name] is None:
            hint = did_you_mean(name, ex.data.keys())
            fields = "the metric needs: " + ", ".join(need)
            return DatasetError(f"missing label '{name}'", path, ex.line, hint=f"{hint} {fields}" if hint else fields)
    for name, tp in outputs.items():
        if name in ex.data and ex.data[name] is not None:
            why = check_value(tp, ex.data[name])
            if why:
                return DatasetError(f"label '{name}' does not fit {type_label(tp)}: {why}", path, ex.line)
    return None


# ---------------------------------------------------------------- splitting


def shuffle(examples: Sequence[Example], seed: int) -> list[Example]:
    """A new list in an order fixed by `seed` (same seed and input, same order, on every platform)."""
    out = list(examples)
    random.Random(seed).shuffle(out)
    return out


def split(dataset: Dataset, dev_fraction: float = 0.3, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Deterministic train/dev split; each part keeps file order.

    With two or more examples and 0 < dev_fraction < 1 both parts are non-empty.
    """
    if not 0 <= dev_fraction <= 1:
        raise DatasetError(f"dev fraction must be between 0 and 1, got {dev_fraction}", dataset.path)
    n = len(dataset.examples)
    n_dev = round(n * dev_fraction)
    if n >= 2 and 0 < dev_fraction < 1:
        n_dev = min(max(n_dev, 1), n - 1)
    order = shuffle(dataset.examples, seed)
    dev_ids = {ex.id for ex in order[:n_dev]}
    train = tuple(ex for ex in dataset.examples if ex.id not in dev_ids)
    dev = tuple(ex for ex in dataset.examples if ex.id in dev_ids)
    return Dataset(dataset.path, dataset.sha256, train), Dataset(dataset.path, dataset.sha256, dev)
