"""Resource bounds: input files are checked before they are read, and run-time values before they are built.

Files.  Every file lmc reads on a user's behalf (program, data, artifact, report,
configuration) goes through `open_input`/`read_bounded`: the path is opened without
blocking (a FIFO would otherwise wait for a writer forever), `fstat` of the open
descriptor decides (so a file swapped after a check cannot slip through), anything
that is not a regular file is refused, a file over its kind's limit is refused
before a byte is read, and at most limit+1 bytes are ever read (a file that grows
while it is read is refused too).  Limits come from `LMC_MAX_<KIND>_BYTES`, then
`limits:` in lmc.yaml, then the defaults below.

Values.  A program builds values with `range`, repetition, `+`, `join` and f-strings;
each checks the size of its result *before* allocating it and raises
`SizeLimitError` (a ValueError, so the interpreter reports it with the line).
Serializing a value (a prompt, `str()`, an output) is bounded too: lists may share
sublists (`x = [x, x]`), so a small value in memory can print as an exponential text.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError, LmcError

# ---------------------------------------------------------------- files

KINDS = {
    # kind: (default bytes, what it covers)
    "program": (10_000_000, "a .lmp program"),
    "data": (1_000_000_000, "a dataset, corpus or results file"),
    "artifact": (200_000_000, "an artifact or evaluation report"),
    "config": (1_000_000, "lmc.yaml or a passes file"),
}
# The names lmc.yaml may have (config.py finds the file by them; this layer reads its limits).
CONFIG_NAMES = ("lmc.yaml", "lmc.yml")

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "ki": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "mi": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "gi": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
    "ti": 1024**4,
}


class FileRefused(LmcError):
    """An input that is not a regular file, or larger than its limit; refused before reading."""


def parse_size(value: Any) -> int | None:
    """Bytes from `5000000`, `"50MB"`, `"2 GiB"`; None when the text is not a size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if not isinstance(value, str):
        return None
    m = _SIZE.fullmatch(value)
    if not m:
        return None
    unit = (m.group(2) or "").lower()
    if unit not in _UNITS:
        return None
    n = int(float(m.group(1)) * _UNITS[unit])
    return n if n > 0 else None


def human(n: int) -> str:
    """A byte count for a message: 10 MB, 1.5 GB, 512 bytes."""
    for unit, size in (("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if n >= size:
            value = n / size
            return f"{value:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


def parse_limits(data: Any, where: str) -> dict[str, int]:
    """Validate the `limits:` mapping of lmc.yaml (kind -> size); ConfigError naming the file otherwise."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: 'limits' must map kinds ({', '.join(k for k in KINDS if k != 'config')}) to sizes")
    out = {}
    for kind, value in data.items():
        if kind not in KINDS or kind == "config":
            # lmc.yaml is itself read under the config limit, so only the environment can raise that one.
            raise ConfigError(f"{where}: unknown limit '{kind}'; expected one of: " + ", ".join(k for k in KINDS if k != "config"))
        size = parse_size(value)
        if size is None:
            raise ConfigError(f"{where}: limits.{kind} must be a size such as 50MB or 2GB, got {value!r}")
        out[kind] = size
    return out


_config_cache: dict = {}


def _config_fail(path: Path) -> Callable[[str], LmcError]:
    def fail(message: str) -> LmcError:
        return ConfigError(f"{path}: {message}")

    return fail


def _config_limits() -> tuple[dict[str, int], str | None]:
    """`limits:` of the lmc.yaml in the working directory (cached while the file is unchanged)."""
    for name in CONFIG_NAMES:
        p = Path(name)
        try:
            st = os.stat(p)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            return {}, None  # load_config reports it
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
        if key not in _config_cache:
            import yaml

            text = read_bounded(p, "config", fail=_config_fail(p))
            try:
                data = yaml.safe_load(text.decode("utf-8", "replace"))
            except yaml.YAMLError:
                data = None  # load_config reports the syntax error with its line
            limits = parse_limits(data.get("limits"), str(p)) if isinstance(data, dict) else {}
            _config_cache.clear()
            _config_cache[key] = limits
        return _config_cache[key], str(p)
    return {}, None


def limit(kind: str) -> int:
    """The byte limit in force for `kind`: LMC_MAX_<KIND>_BYTES, then lmc.yaml's `limits:`, then the default."""
    var = f"LMC_MAX_{kind.upper()}_BYTES"
    raw = os.environ.get(var)
    if raw:
        size = parse_size(raw)
        if size is None:
            raise ConfigError(f"{var}={raw!r} is not a size; expected e.g. 50MB or 2GB")
        return size
    if kind != "config":
        configured, _ = _config_limits()
        if kind in configured:
            return configured[kind]
    return KINDS[kind][0]


def _how_to_raise(kind: str) -> str:
    if kind == "config":
        return "raise it with LMC_MAX_CONFIG_BYTES"
    return f"raise it with LMC_MAX_{kind.upper()}_BYTES or 'limits: {{{kind}: SIZE}}' in lmc.yaml"


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a regular file"
    if stat.S_ISCHR(mode):
        return "is a character device, not a regular file"
    if stat.S_ISBLK(mode):
        return "is a block device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    return "is not a regular file"


def _default_fail(path: Any) -> Callable[[str], LmcError]:
    return lambda message: FileRefused(f"{path}: {message}")


def open_input(path: str | os.PathLike, kind: str, fail: Callable[[str], LmcError] | None = None) -> tuple[int, int]:
    """Open `path` for reading as `kind`; returns (fd, limit).  Refuses non-regular and oversized files.

    `fail(message)` builds the error (so datasets raise DatasetError, artifacts ArtifactError);
    the message does not repeat the path when `fail` adds it.
    """
    fail = fail or _default_fail(path)
    cap = limit(kind)
    try:
        # stat first for the friendlier answer on sockets (which open() reports as ENXIO)...
        why = _not_regular(os.stat(path).st_mode)
    except OSError as e:
        raise fail(_refusal(e)) from None
    if why:
        raise fail(why)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise fail(_refusal(e)) from None
    try:
        # ...and fstat of what was opened decides, so a file replaced by a FIFO in between is still refused.
        st = os.fstat(fd)
        why = _not_regular(st.st_mode)
        if why:
            raise fail(why)
        if st.st_size > cap:
            raise fail(f"{human(st.st_size)} is larger than the {human(cap)} limit for {KINDS[kind][1]}; " + _how_to_raise(kind))
    except BaseException:
        os.close(fd)
        raise
    return fd, cap


def read_bounded(path: str | os.PathLike, kind: str, fail: Callable[[str], LmcError] | None = None) -> bytes:
    """The bytes of a regular file of at most limit(kind) bytes (see `open_input`)."""
    fail = fail or _default_fail(path)
    fd, cap = open_input(path, kind, fail)
    with os.fdopen(fd, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise fail(f"grew past the {human(cap)} limit for {KINDS[kind][1]} while it was read")
    return data


def is_regular_file(path: str | os.PathLike) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


# ---------------------------------------------------------------- values

MAX_ITEMS = 1_000_000  # items of one list built by range, repetition or +
MAX_CHARS = 10_000_000  # characters of one string built or printed by a program
MAX_INT_DIGITS = 4300  # as Python's int <-> str conversion limit
_MAX_INT_BITS = 14_285  # 4300 decimal digits


class SizeLimitError(ValueError):
    """A value a program asked for is larger than the run-time limits; the interpreter adds the line."""


def count(n: int) -> str:
    """A count for a message: 30,000,000, or 10^12 and about 1.5×10^12 past a billion."""
    if n >= 10**9:
        k = len(str(n)) - 1
        if n == 10**k:
            return f"10^{k}"
        return f"about {n / 10**k:.1f}×10^{k}"
    return f"{n:,}"


def _refusal(e: OSError) -> str:
    """Why an input file could not be opened or looked at, in the words of lmc's one-line errors."""
    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, PermissionError):
        return "cannot be read (permission denied)"
    return f"cannot read: {e.strerror}"


def check_items(n: int, what: str) -> None:
    if n > MAX_ITEMS:
        raise SizeLimitError(f"{what} of {count(n)} items exceeds the limit of {count(MAX_ITEMS)}")


def check_chars(n: int, what: str) -> None:
    if n > MAX_CHARS:
        raise SizeLimitError(f"{what} of {count(n)} characters exceeds the limit of {count(MAX_CHARS)}")


def check_int_product(a: int, b: int) -> None:
    if a.bit_length() + b.bit_length() > _MAX_INT_BITS:
        raise SizeLimitError(f"an integer of more than {MAX_INT_DIGITS:,} digits exceeds the limit")


def range_length(start: int, stop: int, step: int) -> int:
    """len(range(start, stop, step)) without building it (also for lengths past sys.maxsize)."""
    if step > 0:
        return max(0, (stop - start + step - 1) // step)
    return max(0, (start - stop - step - 1) // -step)


def to_json(value: Any, *, sort_keys: bool = False, default: Callable | None = None, what: str = "a value as text") -> str:
    """json.dumps with a MAX_CHARS budget: a value of shared sublists never expands past the limit in memory.

    The length is worked out first over the value's distinct nodes (linear in memory, however much
    the text would repeat), so a fitting value is encoded by the C encoder in one call; only values
    the sizing cannot follow (deep nesting, keys that are not strings) stream, chunk by chunk."""
    try:
        size = _json_length(value, default, {})
    except (RecursionError, _Unsized):
        size = None
    if size is not None:
        if size > MAX_CHARS:
            raise SizeLimitError(f"{what} would be longer than {count(MAX_CHARS)} characters, the limit")
        return json.dumps(value, ensure_ascii=False, sort_keys=sort_keys, default=default)
    encoder = json.JSONEncoder(ensure_ascii=False, sort_keys=sort_keys, default=default)
    parts: list[str] = []
    size = 0
    for chunk in encoder.iterencode(value):
        size += len(chunk)
        if size > MAX_CHARS:
            raise SizeLimitError(f"{what} would be longer than {count(MAX_CHARS)} characters, the limit")
        parts.append(chunk)
    return "".join(parts)


class _Unsized(Exception):
    """A value whose encoded length the sizing does not work out; the streaming encoder measures it."""


def _json_length(value: Any, default: Callable | None, memo: dict[int, tuple[Any, int]]) -> int:
    """The length of json.dumps(value, ensure_ascii=False) with default separators, each shared node sized once.

    memo holds each node with its size, so an id is never reused by a temporary of `default` meanwhile."""
    if value is None or isinstance(value, (bool, int, float)):
        return len(json.dumps(value))
    if isinstance(value, str):
        return len(json.dumps(value, ensure_ascii=False))
    known = memo.get(id(value))
    if known is not None:
        if known[1] < 0:  # a cycle: the encoder names it
            raise _Unsized
        return known[1]
    memo[id(value)] = (value, -1)
    if isinstance(value, (list, tuple)):
        size = 2 + 2 * max(0, len(value) - 1) + sum(_json_length(v, default, memo) for v in value)
    elif isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise _Unsized
        size = (
            2
            + 2 * max(0, len(value) - 1)
            + sum(len(json.dumps(k, ensure_ascii=False)) + 2 + _json_length(v, default, memo) for k, v in value.items())
        )
    elif default is not None:
        size = _json_length(default(value), default, memo)
    else:
        raise _Unsized
    memo[id(value)] = (value, size)
    return size
