"""The `--out` results file of `lmc run --data`: its line format, the digests that keep resume honest, its lock.

Each line is one JSON object, written whole with one `write`, keys in this order:

    id              the example's id (from the data, or from its content: `datasets.content_id`)
    line            its 1-based line in the data file
    input_sha256    sha256 of the example's program inputs (canonical JSON), so a changed input is noticed
    program_sha256  sha256 of the program's IR (instructions, demos, code), so a changed program is noticed
    lm              the default LM the answer came from
    outputs         the program's outputs, or null when the example failed
    error, error_kind, usage

A rerun skips an id only when its line says the same input, program and LM; an id
whose input changed is run again (its old line is dropped).  A file holding anything
else (another program's results, lines of an older lmc, unrelated text) is refused,
never truncated; only a torn *last* line that starts like an lmc line (a crash in
mid-write) is cut off.  The file is held under an exclusive lock for the whole run,
so a second run on it fails at once instead of interleaving.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import ConfigError
from .ir import fingerprint
from .limits import open_input

LINE_PREFIX = b'{"id": '
_SHA = re.compile(r"[0-9a-f]{64}")
_NEEDED = ("id", "input_sha256", "program_sha256", "lm", "outputs", "error")


class OutputInUse(ConfigError):
    """Another process holds the lock on the --out file."""


def input_digest(inputs: dict) -> str:
    blob = json.dumps(inputs, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def run_stamp(rt: Any) -> dict:
    """What decides an answer besides the input: the program (its IR) and the LM."""
    return {"program_sha256": fingerprint(rt.ir), "lm": rt.default_lm().model}


def result_line(ex: Any, result: Any, input_sha256: str, stamp: dict) -> dict:
    return {
        "id": ex.id,
        "line": ex.line,
        "input_sha256": input_sha256,
        "program_sha256": stamp["program_sha256"],
        "lm": stamp["lm"],
        "outputs": result.outputs,
        "error": result.error,
        "error_kind": result.error_kind,
        "usage": result.usage(),
    }


@dataclass
class Previous:
    """What an earlier run left: per id, the input digest its line answers and whether it succeeded."""

    done: dict[str, tuple[str, bool]] = field(default_factory=dict)
    dropped: int = 0  # torn last line cut off


@dataclass
class Plan:
    todo: list
    skipped: int = 0
    previously_failed: int = 0
    changed: list = field(default_factory=list)  # ids re-run because their input changed


class ResultsFile:
    """`--out`, opened for one run: locked, checked against this run, repaired, then appended to."""

    def __init__(self, path: str | os.PathLike):
        self.shown = str(path)
        self.path = Path(os.path.realpath(path))
        self.fd = -1

    # -- lock ------------------------------------------------------------------
    def open(self) -> ResultsFile:
        if os.path.exists(self.path):
            # A FIFO or device is refused (it would be read forever), and so is a file over the data limit.
            fd, _ = open_input(self.path, "data", lambda m: ConfigError(f"--out {self.shown}: {m}"))
            os.close(fd)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced by something else since the check above
                os.close(fd)
                raise ConfigError(f"--out {self.shown}: is not a regular file")
            try:
                _lock(fd)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise OutputInUse(
                    f"{self.shown} is in use by another run" + (f" ({holder})" if holder else "") + "; two runs on one --out would mix their lines",
                    hint="wait for it to finish, or give this run another --out",
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # The other run may have replaced the file between our open and our lock: lock what the path names now.
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    self.fd = fd
                    return self
            except FileNotFoundError:
                pass
            os.close(fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock
            self.fd = -1

    def __enter__(self) -> ResultsFile:
        return self.open() if self.fd < 0 else self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------
    def read(self, stamp: dict) -> Previous:
        """The finished ids, after refusing a file that is not this run's and cutting a torn last line."""
        data = _read_all(self.fd)
        prev = Previous()
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline
        keep = len(data) - len(tail)
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            obj = self._parse(raw, number)
            self._same_run(obj, stamp, number)
            prev.done[obj["id"]] = (obj["input_sha256"], obj["error"] is None)
        if tail:
            if not (tail.startswith(LINE_PREFIX) or LINE_PREFIX.startswith(tail)):
                self._parse(tail, len(lines) + 1)  # refuses it as not an lmc line
            # A crash in mid-write: cut exactly the torn bytes, in place (the lock stays on this file).
            os.ftruncate(self.fd, keep)
            os.fsync(self.fd)
            prev.dropped = 1
        return prev

    def _parse(self, raw: bytes, number: int) -> dict:
        where = f"{self.shown}:{number}"
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            obj = None
        if isinstance(obj, dict) and all(k in obj for k in ("id", "outputs", "error", "usage")) and "input_sha256" not in obj:
            raise ConfigError(
                f"{where}: written by an earlier lmc, without the input digests that make resuming safe; move the file away (or delete it) and rerun"
            )
        ok = (
            isinstance(obj, dict)
            and all(k in obj for k in _NEEDED)
            and isinstance(obj["id"], str)
            and isinstance(obj["input_sha256"], str)
            and _SHA.fullmatch(obj["input_sha256"])
            and isinstance(obj["program_sha256"], str)
            and (obj["error"] is None or isinstance(obj["error"], str))
        )
        if not ok:
            raise ConfigError(
                f"{where}: not an lmc result line; {self.shown} was not written by `lmc run --out`, so lmc will not append to it or cut it",
                hint="choose another --out",
            )
        return obj

    def _same_run(self, obj: dict, stamp: dict, number: int) -> None:
        where = f"{self.shown}:{number}"
        if obj["program_sha256"] != stamp["program_sha256"]:
            raise ConfigError(
                f"{where}: holds results of another program, or of another version of this one "
                f"(program sha256 {obj['program_sha256'][:12]}, this run {stamp['program_sha256'][:12]}); "
                "resuming would mix their answers",
                hint="move the file away or give this run another --out",
            )
        if obj["lm"] != stamp["lm"]:
            raise ConfigError(
                f"{where}: holds answers of LM '{obj['lm']}', this run uses '{stamp['lm']}'; resuming would mix their answers",
                hint="move the file away or give this run another --out",
            )

    # -- planning ------------------------------------------------------------------
    def plan(self, examples: Sequence[Any], input_names: Sequence[str], prev: Previous) -> Plan:
        """Which examples to run: new ids, and ids whose input changed (their old lines are dropped here)."""
        plan = Plan([])
        for ex in examples:
            seen = prev.done.get(ex.id)
            if seen is not None and seen[0] == input_digest(ex.inputs(input_names)):
                plan.skipped += 1
                if not seen[1]:
                    plan.previously_failed += 1
                continue
            if seen is not None:
                plan.changed.append(ex.id)
            plan.todo.append(ex)
        if plan.changed:
            self.drop(plan.changed)
        return plan

    def drop(self, ids: Iterable[str]) -> None:
        """Rewrite the file without the lines of `ids`: a new file, locked before it replaces the old one."""
        gone = set(ids)
        kept = [raw + b"\n" for raw in _read_all(self.fd).split(b"\n")[:-1] if raw.strip() and json.loads(raw)["id"] not in gone]
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, os.fstat(self.fd).st_mode & 0o777)
        try:
            _lock(fd)
            os.write(fd, b"".join(kept))
            os.fsync(fd)
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        os.close(self.fd)
        self.fd = fd


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no advisory locks on this platform
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _holder(fd: int) -> str | None:
    """'pid N: COMMAND' of the process holding the flock on `fd`'s file, read from /proc/locks (Linux)."""
    try:
        ino = os.fstat(fd).st_ino
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            rows = fh.read().splitlines()
    except OSError:
        return None
    for row in rows:
        parts = row.split()
        if len(parts) < 6 or "->" in parts or parts[1] != "FLOCK":
            continue
        try:
            if int(parts[5].rsplit(":", 1)[1]) != ino:
                continue
        except (IndexError, ValueError):
            continue
        pid = parts[4]
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            cmd = ""
        if len(cmd) > 80:
            cmd = cmd[:77] + "..."
        return f"pid {pid}" + (f": {cmd}" if cmd else "")
    return None
