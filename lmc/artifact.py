"""The frozen artifact: one diff-friendly JSON file; writing is atomic, reading verifies and never runs code."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, strict_json
from . import ir as I
from .errors import ArtifactError
from .files import atomic_write_text
from .limits import read_bounded

FORMAT = "lmc-artifact/1"
FORMAT_VERSION = 1
_ABS = re.compile(r"^(/|[A-Za-z]:[\\/]|~)")


@dataclass(frozen=True)
class Artifact:
    ir: I.IR
    program: dict  # name, path, source, sha256
    compile: dict  # the compile report
    lm: dict | None  # the LM the artifact was compiled with (model, api_base, settings; never a key)

    @property
    def name(self) -> str:
        return self.program.get("name", self.ir.entry)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def portable_path(path: str | os.PathLike) -> str:
    """A path as stored in artifacts and reports: relative to the working directory, never absolute."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return p.name


def predictor_view(p: I.Predictor) -> dict:
    """The human-readable part of the artifact (what `inspect` and `diff` read)."""

    def fields(fs):
        return [{"name": f.name, "type": f.type.name, **({"description": f.description} if f.description else {})} for f in fs]

    return {
        "module": p.module,
        "role": p.role,
        "signature": {"name": p.signature.name, "inputs": fields(p.signature.inputs), "outputs": fields(p.signature.outputs)},
        "instructions": p.instructions,
        "demos": [dict(d) for d in p.demos],
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in p.settings},
    }


def to_json(art: Artifact) -> dict:
    ir_json = I.to_json(art.ir)
    return {
        "format": FORMAT,
        "lmc_version": __version__,
        "program": art.program,
        "lm": art.lm,
        "predictors": {p.id: predictor_view(p) for p in art.ir.predictors},
        "compile": art.compile,
        "ir": ir_json,
        "ir_sha256": hashlib.sha256(I.dumps(ir_json).encode("utf-8")).hexdigest(),
    }


def dumps(art: Artifact) -> str:
    return json.dumps(to_json(art), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def write(art: Artifact, path: str | os.PathLike) -> None:
    """Write atomically (temp file + rename), so a crash never leaves half an artifact."""
    text = dumps(art)
    atomic_write_text(path, text)


def read(path: str | os.PathLike) -> Artifact:
    """Load and verify an artifact; any problem is one ArtifactError naming the file."""
    shown = str(path)

    def fail(message: str) -> ArtifactError:
        if message == "is a directory":
            message = "is a directory, expected an artifact (.lmc.json)"
        return ArtifactError(f"{shown}: {message}")

    raw = read_bounded(path, "artifact", fail)  # regular files up to the artifact limit (200 MB by default)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ArtifactError(f"{shown}: not UTF-8 text; expected an artifact written by `lmc compile`") from None
    try:
        data = strict_json.loads(text)
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{shown}:{e.lineno}: not valid JSON: {e.msg} at column {e.colno}") from None
    except ValueError as e:
        raise ArtifactError(f"{shown}: not valid JSON: {e}") from None
    except RecursionError:
        raise ArtifactError(f"{shown}: JSON nested too deeply") from None
    return from_json(data, shown)


def from_json(data: Any, shown: str = "<artifact>") -> Artifact:
    if not isinstance(data, dict):
        raise ArtifactError(f"{shown}: expected a JSON object at the top level")
    fmt = data.get("format")
    if not isinstance(fmt, str) or not fmt.startswith("lmc-artifact/"):
        if isinstance(data.get("format"), str) and data["format"].startswith("lmc-report/"):
            raise ArtifactError(f"{shown}: this is an evaluation report, not an artifact")
        raise ArtifactError(f"{shown}: not an lmc artifact (no 'format': 'lmc-artifact/N')")
    try:
        version = int(fmt.split("/", 1)[1])
    except ValueError:
        raise ArtifactError(f"{shown}: bad format '{fmt}'") from None
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{shown}: artifact format {version} is newer than this lmc reads ({FORMAT_VERSION}); "
            f"upgrade lmc (artifact written by lmc {data.get('lmc_version', '?')})"
        )
    for key in ("program", "ir", "ir_sha256"):
        if key not in data:
            raise ArtifactError(f"{shown}: missing '{key}'")
    ir_json = data["ir"]
    try:
        digest = hashlib.sha256(I.dumps(ir_json).encode("utf-8")).hexdigest()
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{shown}: IR is not plain JSON: {e}") from None
    if digest != data["ir_sha256"]:
        raise ArtifactError(f"{shown}: IR does not match its sha256; the artifact was edited or corrupted — recompile it")
    ir = I.from_json(ir_json, f"{shown}: ir")
    program = data["program"]
    if not isinstance(program, dict) or not isinstance(program.get("source", ""), str):
        raise ArtifactError(f"{shown}: malformed 'program'")
    src = program.get("source")
    if src is not None and program.get("sha256") and sha256_text(src) != program["sha256"]:
        raise ArtifactError(f"{shown}: program source does not match its sha256; the artifact was edited")
    _refuse_absolute_paths(ir, shown)
    _refuse_foreign_key_names(ir, data.get("lm"), shown)
    _check_predictor_view(data, ir, shown)
    return Artifact(ir=ir, program=program, compile=data.get("compile") or {}, lm=data.get("lm"))


def _check_predictor_view(data: dict, ir: I.IR, shown: str) -> None:
    """The readable predictor view must say what the IR says; a hand edit there is refused."""
    view = data.get("predictors")
    if view is None:
        return
    expected = {p.id: predictor_view(p) for p in ir.predictors}
    if not isinstance(view, dict) or set(view) != set(expected):
        raise ArtifactError(f"{shown}: 'predictors' does not match the IR; the artifact was edited — recompile it")
    for pid, v in view.items():
        if json.dumps(v, sort_keys=True) != json.dumps(expected[pid], sort_keys=True):
            raise ArtifactError(f"{shown}: predictor '{pid}' was edited by hand (it no longer matches the IR); recompile it")


_KEY_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*_API_KEY")


def _refuse_foreign_key_names(ir: I.IR, lm: Any, shown: str) -> None:
    """The env var an LM's key is read from must look like an API key's (a hostile artifact could name
    AWS_SECRET_ACCESS_KEY and have lmc send it as a bearer token)."""
    names = [dict(a.settings).get("api_key_env") for a in ir.lms]
    if isinstance(lm, dict):
        names.append(lm.get("api_key_env"))
    for name in names:
        if name is not None and not (isinstance(name, str) and _KEY_ENV_NAME.fullmatch(name)):
            raise ArtifactError(f"{shown}: names {str(name)[:60]!r} as an API key variable; an artifact may only name variables called *_API_KEY")


def _refuse_absolute_paths(ir: I.IR, shown: str) -> None:
    for r in ir.retrievers:
        if _ABS.match(r.path) or ".." in Path(r.path).parts:
            raise ArtifactError(f"{shown}: retriever '{r.name}' uses path '{r.path}'; artifacts hold only paths relative to the project")


def is_artifact_path(path: str | os.PathLike) -> bool:
    name = str(path)
    if name.endswith(".lmc.json"):
        return True
    if name.endswith(".json"):
        import stat

        try:
            # Non-blocking, and only a regular file is sniffed: a FIFO named x.json must not hang us here.
            fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return False
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            head = f.read(4096).decode("utf-8", "replace")
        return '"lmc-artifact/' in head or '"ir"' in head
    return False
