"""Offline supply-chain check: every lock entry pinned with hashes, no known-bad release locked, required or installed."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KNOWN_BAD = Path(__file__).resolve().parent / "known_bad.txt"
_REQ = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}\b")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: int
    line: int


def known_bad(path: Path = KNOWN_BAD) -> dict[tuple[str, str], str]:
    """(normalised name, version) -> reason."""
    out = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        text, _, why = raw.partition("#")
        text = text.strip()
        if not text:
            continue
        name, sep, version = text.partition("==")
        if not sep:
            raise ValueError(f"{path}: '{raw}' is not name==version")
        out[(normalise(name), version.strip())] = why.strip()
    return out


def read_lock(path: Path) -> tuple[list[Pin], list[str]]:
    """The pins of a `pip --require-hashes` file, and the lines that are neither pins, hashes nor comments."""
    pins: list[Pin] = []
    problems: list[str] = []
    entry: list[str] = []
    start = 0

    def flush() -> None:
        if not entry:
            return
        text = " ".join(e.rstrip("\\").strip() for e in entry)
        m = _REQ.match(text)
        if not m:
            problems.append(f"{path.name}:{start}: not an exact pin: {entry[0].strip()[:80]}")
        else:
            pins.append(Pin(normalise(m.group(1)), m.group(3), len(_HASH.findall(text)), start))
        entry.clear()

    for i, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[:1].isspace() and entry:
            entry.append(stripped)
            continue
        flush()
        if stripped.startswith("-"):
            problems.append(f"{path.name}:{i}: option line '{stripped[:60]}' (only pins with hashes belong here)")
            continue
        entry.append(stripped)
        start = i
    flush()
    return pins, problems


def check_lock(path: Path, bad: dict) -> list[str]:
    pins, problems = read_lock(path)
    if not pins:
        problems.append(f"{path.name}: holds no pins")
    for p in pins:
        if p.hashes == 0:
            problems.append(f"{path.name}:{p.line}: {p.name}=={p.version} has no --hash")
        if (p.name, p.version) in bad:
            problems.append(f"{path.name}:{p.line}: {p.name}=={p.version} is known bad: {bad[(p.name, p.version)]}")
    return problems


def check_pyproject(path: Path, bad: dict) -> list[str]:
    """Every known-bad release of a declared dependency is excluded by its specifier."""
    import tomllib

    from packaging.requirements import Requirement

    data = tomllib.loads(path.read_text(encoding="utf-8"))
    project = data.get("project", {})
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs.extend(extra)
    problems = []
    for text in reqs:
        req = Requirement(text)
        for (name, version), why in bad.items():
            if normalise(req.name) == name and req.specifier.contains(version, prereleases=True):
                problems.append(f"{path.name}: '{text}' allows {name}=={version} ({why}); add !={version}")
    return problems


def check_installed(bad: dict) -> list[str]:
    from importlib import metadata

    problems = []
    for dist in metadata.distributions():
        key = (normalise(dist.metadata["Name"] or ""), dist.version)
        if key in bad:
            problems.append(f"installed: {key[0]}=={key[1]} is known bad: {bad[key]}")
    return problems


def main() -> int:
    bad = known_bad()
    problems = check_pyproject(ROOT / "pyproject.toml", bad) + check_installed(bad)
    lock = ROOT / "requirements.lock"
    if lock.exists():
        problems += check_lock(lock, bad)
    else:
        problems.append("requirements.lock: missing; run `make lock`")
    for p in problems:
        print(f"supply-chain: {p}", file=sys.stderr)
    if not problems:
        print(f"supply-chain: ok ({len(bad)} known-bad releases checked)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
