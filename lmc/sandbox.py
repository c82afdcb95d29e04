"""Run LM-written Python (ProgramOfThought) in a separate, limited process behind a kernel-enforced boundary.

`run_code` starts a fresh `python -I -S -B` child (`lmc/_sandbox_child.py`) with
an empty environment, a private temporary directory as its working directory,
resource limits, no privileges (when started as root) and, where the kernel
allows it, no network namespace.  Before the program runs, the child confines
itself with Landlock (reads only the standard library, writes only its own
directory, no TCP, no signals or abstract sockets outside) and a seccomp filter
(no sockets, processes, exec, ptrace, ...) via `lmc/_confine.py`; without them
it refuses to run unless the user set `LMC_SANDBOX=weak`.  An audit hook on top
turns common attempts into friendly refusals.  The parent enforces the
wall-clock limit and the output cap and reads the program's result back as
JSON.  The threat model is docs/security.md.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lmc.errors import ConfigError, LmcError

__all__ = ["SandboxError", "SandboxLimits", "SandboxResult", "SandboxUnavailable", "arun_code", "isolation", "require_isolation", "run_code"]

_CHILD = Path(__file__).with_name("_sandbox_child.py")
_NOBODY = 65534
_STDERR_KEEP = 4096
# The one switch a user has: `strict` (default) refuses to run without the
# kernel boundary, `weak` runs with whatever this machine offers.
MODE_VARIABLE = "LMC_SANDBOX"
# Tests only: answer as a kernel without Landlock would (can only take away).
SIMULATE_MISSING_VARIABLE = "LMC_SANDBOX_TEST_NO_LANDLOCK"

log = logging.getLogger("lmc.sandbox")


class SandboxError(LmcError):
    """The sandbox could not be set up (bad inputs, no interpreter); never the program's own failure."""


class SandboxUnavailable(SandboxError, ConfigError):
    """This machine offers no kernel-enforced boundary and the user did not opt in to running without one.

    A ConfigError, so a run stops at the first ProgramOfThought instead of
    failing every example the same way.
    """

    def __init__(self, why: str):
        super().__init__(
            f"cannot run ProgramOfThought code: {why}; set {MODE_VARIABLE}=weak to run it without a "
            "kernel-enforced file boundary (docs/security.md, section 1)"
        )


@dataclass(frozen=True)
class SandboxLimits:
    """Limits applied to one run; every one is enforced by the kernel or the parent."""

    timeout_s: float = 5.0  # wall clock
    cpu_s: int = 5
    memory_mb: int = 256
    max_output_bytes: int = 64_000
    max_file_bytes: int = 1_000_000


@dataclass(frozen=True)
class SandboxResult:
    """What happened to one program: its value, its (capped) stdout, or a one-line reason."""

    ok: bool
    value: object | None
    stdout: str
    error: str | None
    duration_s: float


def run_code(code: str, inputs: dict | None = None, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `code` in a fresh sandboxed process and return its result.

    `inputs` are JSON values bound as global variables.  The result is the
    variable `result` if the program sets it, else the value of its last
    expression statement (when not None), else its stdout stripped.
    """
    return _run(code, inputs, limits)


async def arun_code(code: str, inputs: dict | None = None, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """`run_code` without blocking the event loop (the wait happens in a worker thread)."""
    import asyncio  # only async callers pay for it

    return await asyncio.to_thread(_run, code, inputs, limits)


def isolation() -> str:
    """The kernel layers a run gets on this machine, e.g. 'Landlock ABI 7 + seccomp'.

    Raises `SandboxUnavailable` where there are none and `LMC_SANDBOX` is not
    `weak`; with `weak`, says what is missing instead.
    """
    from lmc import _confine

    strict = _mode() == "strict"
    try:
        return _probe_kernel(_simulating_missing(), strict)
    except _confine.Unavailable as exc:
        if strict:
            raise SandboxUnavailable(str(exc)) from None
        return f"none ({exc}; {MODE_VARIABLE}=weak)"


def require_isolation() -> None:
    """Refuse early, before any LM call is spent, when a run could not start its sandbox."""
    isolation()


# ------------------------------------------------------------------ internals


def _mode() -> str:
    value = os.environ.get(MODE_VARIABLE, "").strip().lower() or "strict"
    if value not in ("strict", "weak"):
        raise ConfigError(f"{MODE_VARIABLE} must be 'strict' or 'weak', not {os.environ[MODE_VARIABLE]!r}")
    return value


def _simulating_missing() -> bool:
    return os.environ.get(SIMULATE_MISSING_VARIABLE, "") not in ("", "0")


@functools.lru_cache(maxsize=4)
def _probe_kernel(simulate_missing: bool, require_seccomp: bool) -> str:
    from lmc import _confine

    abi = _confine.landlock_abi(simulate_missing=simulate_missing)
    try:
        _confine.seccomp_check()
    except _confine.Unavailable as exc:
        if require_seccomp:
            raise
        return f"Landlock ABI {abi} (no seccomp: {exc})"
    return f"Landlock ABI {abi} + seccomp"


def _job(code: str, inputs: dict | None, limits: SandboxLimits, audit: bool, kernel: bool) -> bytes:
    if not isinstance(code, str):
        raise SandboxError(f"sandbox code must be a string, not {type(code).__name__}")
    inputs = dict(inputs or {})
    for name in inputs:
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("__"):
            raise SandboxError(f"sandbox input name {name!r} is not a plain Python identifier")
    try:
        encoded_inputs = json.loads(json.dumps(inputs))
    except (TypeError, ValueError) as exc:
        raise SandboxError(f"sandbox inputs must be JSON values: {exc}") from None
    job = {
        "code": code,
        "inputs": encoded_inputs,
        "limits": {
            "memory_mb": limits.memory_mb,
            "cpu_s": limits.cpu_s,
            "max_file_bytes": limits.max_file_bytes,
            "max_output_bytes": limits.max_output_bytes,
        },
        "drop_to_nobody": _plan().self_drop,
        "audit": audit,
        "kernel": kernel,
        "isolation": _mode(),
        "simulate_missing": _simulating_missing(),
    }
    return json.dumps(job).encode()


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass(frozen=True)
class _Plan:
    """How the child is started: decided once per process by probing what this machine allows."""

    prefix: tuple[str, ...]  # argv before the interpreter: unshare, setpriv
    self_drop: bool  # the child calls setuid(nobody) itself
    unprivileged: bool  # the program runs as nobody (so the work directory is chowned)


@functools.lru_cache(maxsize=1)
def _plan() -> _Plan:
    net = _netns_prefix()
    if not _is_root():
        return _Plan(net, self_drop=False, unprivileged=False)
    priv = _setpriv_prefix(net)
    if priv:
        return _Plan(net + priv, self_drop=False, unprivileged=True)
    if _stdlib_world_readable():
        return _Plan(net, self_drop=True, unprivileged=True)
    return _Plan(net, self_drop=False, unprivileged=False)


def _probe(prefix: tuple[str, ...]) -> bool:
    try:
        probe = subprocess.run(
            [*prefix, sys.executable, "-I", "-S", "-c", "import statistics"],
            env={},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def _setpriv_prefix(net: tuple[str, ...]) -> tuple[str, ...]:
    """`setpriv` arguments that run the child as `nobody` with no capabilities, or () if unavailable.

    When `nobody` could not read the standard library (a Python under /root),
    the child keeps exactly one capability, CAP_DAC_READ_SEARCH, so imports
    still work; it still cannot write, signal, fork past RLIMIT_NPROC or make
    device nodes.
    """
    tool = shutil.which("setpriv")
    if not tool or not sys.platform.startswith("linux"):
        return ()
    caps = "-all" if _stdlib_world_readable() else "-all,+dac_read_search"
    prefix = (
        tool,
        f"--reuid={_NOBODY}",
        f"--regid={_NOBODY}",
        "--clear-groups",
        f"--inh-caps={caps}",
        f"--ambient-caps={caps}",
        f"--bounding-set={caps}",
        "--no-new-privs",
        "--",
    )
    return prefix if _probe(net + prefix) else ()


@functools.lru_cache(maxsize=1)
def _stdlib_world_readable() -> bool:
    """Whether an unprivileged child can still read the standard library to import lazily."""
    path = Path(sysconfig.get_paths()["stdlib"]).resolve()
    for directory in [path, *path.parents]:
        try:
            mode = directory.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IROTH)


@functools.lru_cache(maxsize=1)
def _netns_prefix() -> tuple[str, ...]:
    """`unshare` arguments that give the child an empty network namespace, or () if unavailable.

    An extra layer only: the audit hook refuses sockets whether or not this works.
    """
    tool = shutil.which("unshare")
    if not tool or not sys.platform.startswith("linux"):
        return ()
    prefix = (tool, "--net", "--") if _is_root() else (tool, "--user", "--net", "--")
    return prefix if _probe(prefix) else ()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except OSError:
        pass


def _remove_tree(path: str) -> None:
    def unlock(func, target, _exc):
        # The program may have made its own files read-only; the sandbox
        # directory is ours to delete regardless.
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=unlock)


def _run(code: str, inputs: dict | None, limits: SandboxLimits, *, audit: bool = True, kernel: bool = True) -> SandboxResult:
    """Run one program; `audit=False` and `kernel=False` are for tests that check the other layers alone."""
    job = _job(code, inputs, limits, audit, kernel)
    if kernel:
        require_isolation()
    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="lmc-sandbox-")
    try:
        job_path = os.path.join(workdir, ".job.json")
        with open(job_path, "wb") as handle:
            handle.write(job)
        if _plan().unprivileged:
            os.chown(workdir, _NOBODY, _NOBODY)
            os.chown(job_path, _NOBODY, _NOBODY)
        return _supervise(job_path, workdir, limits, started, strict=kernel and _mode() == "strict")
    finally:
        _remove_tree(workdir)


def _supervise(job_path: str, workdir: str, limits: SandboxLimits, started: float, strict: bool) -> SandboxResult:
    result_r, result_w = os.pipe()
    argv = [*_plan().prefix, sys.executable, "-I", "-S", "-B", "-X", "utf8", str(_CHILD), job_path, str(result_w)]
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(result_w,),
            cwd=workdir,
            env={},
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        os.close(result_r)
        os.close(result_w)
        raise SandboxError(f"cannot start the sandbox interpreter {sys.executable!r}: {exc}") from None
    os.close(result_w)
    deadline = started + limits.timeout_s
    caps = {"stdout": limits.max_output_bytes, "stderr": _STDERR_KEEP, "result": limits.max_output_bytes + 4096}
    buffers = {"stdout": bytearray(), "stderr": bytearray(), "result": bytearray()}
    killed: str | None = None
    selector = selectors.DefaultSelector()
    assert proc.stdout is not None and proc.stderr is not None
    selector.register(proc.stdout, selectors.EVENT_READ, "stdout")
    selector.register(proc.stderr, selectors.EVENT_READ, "stderr")
    selector.register(result_r, selectors.EVENT_READ, "result")
    try:
        killed = _collect(selector, buffers, caps, deadline, limits)
        if killed is None:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                killed = f"killed: exceeded {limits.timeout_s:g} s time limit"
    finally:
        if killed is not None or proc.poll() is None:
            _kill_group(proc)
        proc.wait()
        selector.close()
        proc.stdout.close()
        proc.stderr.close()
        os.close(result_r)
    duration = time.monotonic() - started
    stdout = buffers["stdout"].decode("utf-8", "replace")
    error = killed or _signal_reason(proc.returncode, limits)
    status, _, rest = bytes(buffers["result"]).partition(b"\n")
    _check_status(status, strict)
    report = None if error else _parse_report(rest)
    if error is None and report is None:
        error = _crash_reason(proc.returncode, bytes(buffers["stderr"]), limits)
    if error is not None or report is None:
        return SandboxResult(False, None, stdout, error, duration)
    if not report["ok"]:
        return SandboxResult(False, None, stdout, report["error"], duration)
    value = report["value"] if report["has_value"] else stdout.strip()
    return SandboxResult(True, value, stdout, None, duration)


def _collect(
    selector: selectors.BaseSelector, buffers: dict[str, bytearray], caps: dict[str, int], deadline: float, limits: SandboxLimits
) -> str | None:
    """Read the child's stdout, stderr and result pipe into `buffers` until they close; why it must be killed, if it must."""
    while selector.get_map():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return f"killed: exceeded {limits.timeout_s:g} s time limit"
        killed = None
        for key, _ in selector.select(timeout=remaining):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                selector.unregister(key.fileobj)
                continue
            buffer = buffers[key.data]
            room = caps[key.data] - len(buffer)
            buffer += chunk[: max(room, 0)]
            if len(chunk) > room:
                if key.data == "stdout":
                    killed = f"killed: printed more than {limits.max_output_bytes} bytes of output"
                elif key.data == "result":
                    killed = f"refused: result is larger than {limits.max_output_bytes} bytes"
                # stderr overflow is only diagnostics: keep the head, drop the rest
        if killed:
            return killed
    return None


def _check_status(line: bytes, strict: bool) -> None:
    """Act on the child's first line, written before the program ran (so the program cannot forge it).

    No line at all means the child died during its set-up, before running
    anything: that is reported as a crash by the caller.
    """
    try:
        status = json.loads(line.decode("utf-8")) if line else {}
    except ValueError:
        status = {}
    if not isinstance(status, dict):
        status = {}
    if isinstance(status.get("refused"), str):
        raise SandboxUnavailable(status["refused"])
    unconfined = status.get("unconfined")
    if isinstance(unconfined, str):
        if strict:  # the child should have refused; never accept less than asked
            raise SandboxUnavailable(unconfined)
        _warn_weak(unconfined)
    elif strict and line and not isinstance(status.get("confined"), str):
        raise SandboxUnavailable("the sandbox process did not confirm its confinement")


@functools.lru_cache(maxsize=8)
def _warn_weak(reason: str) -> None:
    if _mode() == "weak":
        log.warning("%s=weak: LM-written code runs without a kernel-enforced boundary (%s)", MODE_VARIABLE, reason)


def _signal_reason(returncode: int, limits: SandboxLimits) -> str | None:
    if returncode >= 0:
        return None
    number = -returncode
    if number in (signal.SIGXCPU, signal.SIGKILL):
        # We did not send this SIGKILL (that case is reported as the time
        # limit), so it is the hard CPU limit after an ignored SIGXCPU.
        return f"killed: exceeded {limits.cpu_s} s CPU time limit"
    if number == signal.SIGXFSZ:
        return f"killed: wrote a file larger than the {limits.max_file_bytes} byte limit"
    return f"crashed: the Python process died with {_signal_name(number)}"


def _crash_reason(returncode: int, stderr: bytes, limits: SandboxLimits) -> str:
    text = stderr.decode("utf-8", "replace")
    if "MemoryError" in text or "Cannot allocate memory" in text:
        return f"killed: exceeded {limits.memory_mb} MB memory limit"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    tail = f": {lines[-1][:200]}" if lines else ""
    return f"crashed: the program exited with status {returncode} without a result{tail}"


def _parse_report(data: bytes) -> dict | None:
    """Validate the child's JSON report; the child is untrusted, so check every field."""
    try:
        report = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(report, dict) or not isinstance(report.get("ok"), bool):
        return None
    if not report["ok"]:
        error = report.get("error")
        if not isinstance(error, str) or not error:
            return None
        return {"ok": False, "error": " ".join(error.split())[:500]}
    return {"ok": True, "has_value": bool(report.get("has_value")), "value": report.get("value")}
