"""Files lmc writes: the one atomic-write helper, strict JSON encoding, and the checks that keep outputs off inputs.

Every command names its inputs and outputs to `check_outputs` before its first LM
call: an output that is one of the inputs (same resolved path, or the same inode
through a hard link or symlink), two outputs that are one file, a directory where a
file is expected, or a location that cannot be written is refused there, when
nothing has been spent yet.  Whole files are then written with `atomic_write_*`
(temp file in the same directory, fsync, rename), so a crash leaves the old file or
the new one, never half of either.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .errors import ConfigError


# ---------------------------------------------------------------- atomic writes


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Replace `path` with `data` in one rename; a symlink is written through, an existing file keeps its mode.

    `fsync=False` suits caches, where a lost entry after a power cut costs one call, not a result."""
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    # O_EXCL with a random name: two writers never share a temp file; 0o666 lets the umask decide, as open() does.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


# ---------------------------------------------------------------- strict JSON
# lmc writes JSON with allow_nan=False everywhere; NaN and infinity are refused where a value is
# produced (interpreter, output parsing, inputs), and this finds them for those checks.


def find_non_finite(value: Any, where: str = "") -> str | None:
    """The JSON path of the first NaN/infinity in `value` (e.g. "outputs.score"), or None."""
    if isinstance(value, float):
        return None if value == value and value not in (float("inf"), float("-inf")) else (where or "the value")
    if isinstance(value, dict):
        for k, v in value.items():
            found = find_non_finite(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = find_non_finite(v, f"{where}[{i}]")
            if found:
                return found
    return None


# ---------------------------------------------------------------- inputs and outputs


@dataclass(frozen=True)
class Output:
    """A location a command will write: a file (replaced or appended to) or a directory it fills."""

    label: str  # how the user named it, e.g. "--report"
    path: str
    directory: bool = False  # a folder lmc creates files in (checked for kind and writability only)


def _identity(path: str) -> tuple[str, tuple[int, int] | None]:
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
        return real, (st.st_dev, st.st_ino)
    except OSError:
        return real, None


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: same resolved path, or same device and inode (hard links)."""
    ra, ia = _identity(os.fspath(a))
    rb, ib = _identity(os.fspath(b))
    return ra == rb or (ia is not None and ia == ib)


def check_outputs(outputs: Iterable[Output | None], inputs: Iterable[tuple[str, Any]]) -> None:
    """Refuse, before any work is done, outputs that would overwrite an input or each other, or cannot be written.

    `inputs` are (label, path) pairs; paths that are None or do not exist are skipped.
    """
    outs = [o for o in outputs if o is not None and o.path is not None]
    ins = [(label, os.fspath(p)) for label, p in inputs if p is not None]
    for o in outs:
        for label, p in ins:
            if os.path.exists(p) and same_file(o.path, p):
                shown = f"{label} {p}" if os.fspath(p) != o.path else label
                raise ConfigError(f"{o.label} {o.path} is the {shown}; writing it would destroy an input", hint="choose another output path")
    for i, a in enumerate(outs):
        for b in outs[i + 1 :]:
            if same_file(a.path, b.path):
                raise ConfigError(f"{a.label} and {b.label} are both {a.path}; one would overwrite the other")
    for o in outs:
        check_writable(o)


_SPECIAL = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_writable(o: Output) -> None:
    """The location can be written: its kind fits, and the nearest existing folder accepts a new file."""
    p = Path(o.path)
    if p.exists():
        if o.directory and not p.is_dir():
            raise ConfigError(f"{o.label} {o.path}: is a file; expected a directory")
        if not o.directory and p.is_dir():
            raise ConfigError(f"{o.label} {o.path}: is a directory; expected a file path")
        mode = p.stat().st_mode
        if not o.directory and not stat.S_ISREG(mode):
            # lmc replaces whole files by renaming over them (or appends to --out): never over a FIFO or device.
            kind = next((name for test, name in _SPECIAL if test(mode)), "not a regular file")
            raise ConfigError(f"{o.label} {o.path}: is {kind}" + (", not a regular file" if kind[0] == "a" else ""))
        if not o.directory and not os.access(p, os.W_OK):
            raise ConfigError(f"{o.label} {o.path}: the file is read-only")
    # Walk up the path as the user wrote it (messages name what they typed) to the first thing that exists.
    folder = Path(os.path.normpath(p if (o.directory and p.exists()) else p.parent))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{o.label} {o.path}: cannot create it; '{folder}' is a file, not a directory")
    _probe(folder, o)


def _probe(folder: Path, o: Output) -> None:
    """Create and remove a file: the only test that also holds for root, read-only mounts and full quotas."""
    probe = folder / f".lmc-probe-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{o.label} {o.path}: cannot write in '{folder}': {e.strerror or e}") from None
