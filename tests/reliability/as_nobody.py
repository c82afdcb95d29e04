"""Run a command as an unprivileged user (uid 65534, no capabilities) from a root test process.

The interpreter may live where that user cannot reach it (pyenv under /root,
mode 0700).  Then the command runs in a private mount namespace in which each
such directory is covered by an empty, traversable tmpfs holding bind mounts of
exactly the entries the command needs; nothing changes outside the namespace.
Run as a script, this file is that namespace's root-owned first stage: it makes
the mounts, then execs the command through `setpriv`.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

UID = 65534


def _drop_prefix() -> list[str]:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RuntimeError("setpriv is not installed")
    return [setpriv, f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--"]


def hidden(paths: list[str]) -> dict[str, list[str]]:
    """Directories that stop `paths` being reached by others, each with the entries below it to show."""
    found: dict[str, set[str]] = {}
    for path in paths:
        parts = os.path.realpath(path).strip("/").split("/")
        for depth in range(len(parts)):
            directory = "/" + "/".join(parts[:depth])
            if not os.stat(directory).st_mode & stat.S_IXOTH:
                found.setdefault(directory, set()).add(parts[depth])
                break
    return {d: sorted(names) for d, names in found.items()}


def command(argv: list[str], needs: list[str]) -> list[str]:
    """argv that runs `argv` as the unprivileged user, revealing `needs` if something hides them."""
    drop = _drop_prefix()
    cover = hidden(needs)
    if not cover:
        return drop + argv
    unshare = shutil.which("unshare")
    if unshare is None:
        raise RuntimeError(f"{sorted(cover)} hide(s) the interpreter from uid {UID} and unshare is not installed")
    return [
        unshare,
        "--mount",
        "--propagation",
        "private",
        "--",
        sys.executable,
        "-I",
        os.path.abspath(__file__),
        json.dumps(cover),
        "--",
        *drop,
        *argv,
    ]


def available(needs: list[str]) -> str | None:
    """None when `command` can work here, else why not."""
    if os.geteuid() != 0:
        return "only a root test process can switch to another user"
    try:
        probe = command([sys.executable, "-I", "-S", "-c", "pass"], needs)
    except RuntimeError as exc:
        return str(exc)
    done = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return f"cannot run the interpreter as uid {UID}: {tail}"
    return None


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _reveal(cover: dict[str, list[str]]) -> None:
    for directory, names in cover.items():
        aside = tempfile.mkdtemp(prefix="lmc-reveal-")
        for name in names:
            source, spot = os.path.join(directory, name), os.path.join(aside, name)
            if os.path.isdir(source):
                os.mkdir(spot)
            else:
                open(spot, "w").close()
            _mount("--bind", source, spot)
        _mount("-t", "tmpfs", "-o", "mode=0755,size=1m", "tmpfs", directory)
        for name in names:
            spot, target = os.path.join(aside, name), os.path.join(directory, name)
            if os.path.isdir(spot):
                os.mkdir(target)
            else:
                open(target, "w").close()
            _mount("--move", spot, target)
            (os.rmdir if os.path.isdir(spot) else os.unlink)(spot)
        os.rmdir(aside)


if __name__ == "__main__":
    split = sys.argv.index("--")
    _reveal(json.loads(sys.argv[1]))
    rest = sys.argv[split + 1 :]
    os.execv(rest[0], rest)
