"""The escape corpus, run as root and as an unprivileged user: no canary outside the sandbox is read or changed.

Every attack in `escape_corpus.ESCAPES` runs three times per user: `full` (the
product), `kernel` (audit hook and namespaces off: Landlock and seccomp, with
the uid and rlimits, must hold alone) and `control` (kernel filters off too:
the attack must then escape where the corpus says it is live, so a pass is not
an artefact of a canary nobody could reach).  The canaries are owned by the uid the sandboxed program runs as, so
ordinary file permissions never protect them: only the sandbox does.  The
verdict is taken from outside: canary files (content, inode, times, mode,
links, extended attributes), every secret's text in everything the runner
printed, connections accepted by listening sockets, signals received.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from lmc import sandbox
from tests.reliability import as_nobody
from tests.reliability.escape_corpus import ENV_SECRET_NAME, ESCAPES, MODES

ROOT = Path(__file__).resolve().parents[2]
MARK = "CANARY-"  # every secret starts with it; no path or message does
BENIGN = """
import statistics, hashlib, zlib, json, datetime, pathlib
d = pathlib.Path('work')
d.mkdir()
(d / 'data.json').write_text(json.dumps([3, 1, 2]))
(d / 'data.json').rename(d / 'numbers.json')
numbers = json.loads((d / 'numbers.json').read_text())
result = [statistics.median(numbers), hashlib.sha256(b'x').hexdigest()[:8], zlib.crc32(b'x'),
          datetime.date(2024, 3, 1).isoformat(), sorted(p.name for p in d.iterdir())]
"""
USERS = ("root", "unprivileged")


@dataclass
class CorpusRun:
    user: str
    records: dict  # key -> what the runner saw
    changed: dict  # key -> list of changes to that case's files
    world_changes: list
    raw: str


def _snapshot(top: Path) -> dict:
    """Everything about the files under `top` that an attack could change (reading changes none of it)."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames, ""]:
            path = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(path)
            entry = [st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_nlink]
            if os.path.islink(path):
                entry.append(os.readlink(path))
            elif os.path.isfile(path):
                entry.append(hashlib.sha256(Path(path).read_bytes()).hexdigest())
            try:
                entry.append(sorted(os.listxattr(path, follow_symlinks=False)))
            except OSError:
                pass
            seen[os.path.relpath(path, top)] = entry
    return seen


def _diff(before: dict, after: dict) -> list[str]:
    changes = [f"removed {p}" for p in before if p not in after] + [f"created {p}" for p in after if p not in before]
    changes += [f"changed {p}" for p in before if p in after and before[p] != after[p]]
    return changes


def _make_world(uid: int | None) -> tuple[Path, list[dict], str]:
    # Under /tmp, not pytest's tmp_path: that is private to root, and a
    # canary nobody can reach would prove nothing.
    world = Path(tempfile.mkdtemp(prefix="lmc-escape-", dir="/tmp"))
    os.chmod(world, 0o755)
    for sub in ("tmp", "sock", "cases"):
        (world / sub).mkdir()
    cases = []
    n = 0
    for escape in ESCAPES:
        for mode in MODES:
            n += 1
            case_dir = world / "cases" / f"{n:03d}"
            cache = case_dir / ".lmc" / "cache" / "ab"
            cache.mkdir(parents=True)
            (case_dir / "canary.txt").write_text(f"{MARK}{escape.id}-{mode}-{secrets.token_hex(8)}\n")
            (case_dir / "canary.txt").chmod(0o600)
            (cache / "abcdef.json").write_text(json.dumps({"text": f"{MARK}cache-{secrets.token_hex(8)}"}))
            (case_dir / "prog.lmc.json").write_text(json.dumps({"format": "lmc-artifact/1", "note": f"{MARK}artifact-{secrets.token_hex(8)}"}))
            cases.append(
                {
                    "key": f"{escape.id}/{mode}",
                    "mode": mode,
                    "code": escape.code,
                    "inputs": {
                        "canary": str(case_dir / "canary.txt"),
                        "case_dir": str(case_dir),
                        "cache_dir": str(cache),
                        "cache_file": str(cache / "abcdef.json"),
                        "artifact": str(case_dir / "prog.lmc.json"),
                        "unix_path": str(world / "sock" / f"{n:03d}.sock"),
                        "abstract_name": f"lmc-escape-{world.name}-{n:03d}",
                    },
                }
            )
    # The same user must still get ordinary work done behind the boundary.
    benign_dir = world / "cases" / "benign"
    benign_dir.mkdir()
    cases.append(
        {
            "key": "benign/full",
            "mode": "full",
            "code": BENIGN,
            "inputs": {
                "case_dir": str(benign_dir),
                "unix_path": str(world / "sock" / "benign.sock"),
                "abstract_name": f"lmc-escape-{world.name}-benign",
            },
        }
    )
    if uid is not None:
        for dirpath, dirnames, filenames in os.walk(world):
            for name in [*dirnames, *filenames]:
                os.chown(os.path.join(dirpath, name), uid, uid)
        os.chown(world, uid, uid)
    return world, cases, f"sk-{MARK}ENV-{secrets.token_hex(12)}"


def _run_corpus(user: str) -> CorpusRun:
    if sys.platform != "linux":
        pytest.skip("the kernel boundary and this corpus are Linux-only")
    try:
        sandbox.isolation()
    except sandbox.SandboxUnavailable as exc:
        pytest.skip(f"no kernel boundary on this machine, so nothing to attack: {exc}")
    is_root = os.geteuid() == 0
    if user == "root" and not is_root:
        pytest.skip("the root half of the corpus needs a root test process")
    needs = [str(ROOT), os.path.realpath(sys.executable), sysconfig.get_paths()["stdlib"], sys.executable]
    if user == "unprivileged" and is_root:
        why = as_nobody.available(needs)
        if why:
            pytest.skip(f"cannot run as an unprivileged user here: {why}")
    uid = as_nobody.UID if is_root else None
    world, cases, env_secret = _make_world(uid)
    try:
        spec = world / "spec.json"
        spec.write_text(json.dumps({"cases": cases}))
        os.chmod(spec, 0o644)
        argv = [sys.executable, "-m", "tests.reliability.escape_corpus", str(spec)]
        if user == "unprivileged" and is_root:
            argv = as_nobody.command(argv, needs)
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": str(ROOT),
            "TMPDIR": str(world / "tmp"),
            "HOME": str(world),
            "PYTHONDONTWRITEBYTECODE": "1",
            ENV_SECRET_NAME: env_secret,
        }
        before = {c["key"]: _snapshot(Path(c["inputs"]["case_dir"])) for c in cases if c["key"] != "benign/full"}
        top_before = sorted(os.listdir(world))
        done = subprocess.run(argv, cwd=world, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        records = {r["key"]: r for r in json.loads(done.stdout)}
        changed = {
            key: _diff(snap, _snapshot(Path(c["inputs"]["case_dir"])))
            for c in cases
            for key, snap in [(c["key"], before.get(c["key"]))]
            if snap is not None
        }
        world_changes = []
        if sorted(os.listdir(world)) != top_before:
            world_changes.append(f"top level now {sorted(os.listdir(world))}")
        if os.listdir(world / "tmp"):
            world_changes.append(f"left in the temporary directory: {os.listdir(world / 'tmp')}")
        expected_uid = as_nobody.UID if (user == "unprivileged" and is_root) else os.geteuid()
        assert {r["uid"] for r in records.values()} == {expected_uid}
        return CorpusRun(user, records, changed, world_changes, done.stdout)
    finally:
        shutil.rmtree(world, ignore_errors=True)


@pytest.fixture(scope="module", params=USERS)
def corpus(request) -> CorpusRun:
    return _run_corpus(request.param)


def _escaped(run: CorpusRun, key: str, may_finish: bool) -> list[str]:
    """What this case got past the sandbox, as evidence; empty when it was contained."""
    r = run.records[key]
    shown = f"{r['value']} {r['stdout']} {r['error']}"
    evidence = []
    if MARK in shown:
        evidence.append(f"a secret reached the output: ...{shown[shown.index(MARK) - 60 : shown.index(MARK) + 40]!r}...")
    evidence += run.changed[key]
    if r["connections"]:
        evidence.append(f"{r['connections']} connection(s) reached a listening socket")
    if r["signals"]:
        evidence.append(f"{r['signals']} signal(s) reached the parent")
    if r["ok"] and not may_finish:
        evidence.append(f"the program finished with {r['value'][:200]}")
    return evidence


@pytest.mark.parametrize("escape", ESCAPES, ids=lambda e: e.id)
def test_escape_is_contained(corpus, escape):
    """With the hook (full) and without it (kernel): nothing read, nothing changed, a clean one-line failure."""
    for mode in ("full", "kernel"):
        key = f"{escape.id}/{mode}"
        r = corpus.records[key]
        assert not r["error"] or not r["error"].startswith("runner: "), r["error"]
        evidence = _escaped(corpus, key, escape.may_finish)
        assert not evidence, (corpus.user, key, evidence)
        if not escape.may_finish:
            assert r["ok"] is False and r["error"] and "\n" not in r["error"], (corpus.user, key, r)
    assert not corpus.world_changes, corpus.world_changes


@pytest.mark.parametrize("escape", ESCAPES, ids=lambda e: e.id)
def test_attack_is_live_without_the_sandbox(corpus, escape):
    """The control run (no hook, no kernel layer) escapes where the corpus says it is live: the canary was reachable."""
    key = f"{escape.id}/control"
    evidence = _escaped(corpus, key, escape.may_finish)
    if escape.id == "ipv6-socket" and not corpus.records[key]["ipv6"]:
        pytest.skip("this host has no IPv6 loopback to listen on")
    if corpus.user in escape.live:
        assert evidence, (corpus.user, key, corpus.records[key])
    else:
        assert not evidence, (corpus.user, key, evidence)


def test_ordinary_programs_work_for_this_user(corpus):
    r = corpus.records["benign/full"]
    assert r["ok"], r["error"]
    assert json.loads(r["value"]) == [2, "2d711642", 2363233923, "2024-03-01", ["numbers.json"]]


def test_no_secret_anywhere_in_what_the_contained_runs_printed(corpus):
    contained = [r for key, r in corpus.records.items() if not key.endswith("/control")]
    text = json.dumps(contained)
    assert MARK not in text


def test_corpus_covers_the_attacks_the_issue_lists():
    ids = {e.id for e in ESCAPES}
    assert len(ids) == len(ESCAPES) >= 30
    required = {
        "dirfd-dotdot-read",
        "dirfd-rename-in",
        "dirfd-link-in",
        "dirfd-symlink-outside",
        "symlink-read",
        "hardlink-planted",
        "symlink-race",
        "proc-self-root",
        "proc-self-fd-dotdot",
        "proc-ppid-cwd",
        "proc-ppid-environ",
        "proc-ppid-mem",
        "chdir-dotdot-chain",
        "importlib-posix",
        "ctypes-libc-open",
        "ctypes-syscall-openat",
        "subprocess-cat",
        "memfd-execve",
        "fork",
        "vfork-posix-spawn",
        "signal-parent",
        "ptrace-parent",
        "unix-socket-named",
        "unix-socket-abstract",
        "ipv6-socket",
        "cache-write",
        "artifact-write",
        "parent-environment",
    }
    assert required <= ids, sorted(required - ids)
