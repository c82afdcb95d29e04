"""What a command runs: a .lmp program (checked and lowered) or a compiled artifact (read and verified)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import ir as I
from .artifact import Artifact, is_artifact_path, portable_path, read, sha256_text
from .check import check_path
from .errors import LmcError
from .lower import lower


@dataclass(frozen=True)
class Target:
    ir: I.IR
    kind: str  # program | artifact
    path: str
    name: str
    source: str
    sha256: str
    artifact: Artifact | None = None

    def program_json(self) -> dict:
        return {
            "name": self.name,
            "path": portable_path(self.path) if self.kind == "program" else (self.artifact.program.get("path") if self.artifact else None),
            "source": self.source,
            "sha256": self.sha256,
        }

    def input_files(self, label: str = "program", config_path: str | None = None) -> list[tuple[str, str]]:
        """The files a run of this target reads, as (label, path): itself, its retrievers' corpora, lmc.yaml."""
        out = [(label, self.path)]
        out += [(f"corpus of retriever '{r.name}'", r.path) for r in self.ir.retrievers]
        if config_path:
            out.append(("configuration", config_path))
        return out


def load_target(path: str | os.PathLike, program: str | None = None) -> Target:
    """A .lmp path is parsed, checked and lowered; an artifact is read and verified."""
    p = Path(path)
    if not p.exists():
        raise LmcError(f"{path}: no such file")
    if is_artifact_path(p):
        art = read(p)
        if program and program != art.ir.entry:
            raise LmcError(f"{path}: artifact holds program '{art.ir.entry}', not '{program}'")
        src = art.program.get("source") or ""
        return Target(art.ir, "artifact", str(path), art.name, src, art.program.get("sha256") or sha256_text(src), art)
    checked = check_path(p)
    ir = lower(checked, program)
    return Target(ir, "program", str(path), ir.entry, checked.source, sha256_text(checked.source))
