"""The sandbox escape corpus: attacks on the files, processes and secrets around a ProgramOfThought child; its runner.

Each `Escape` is a program an attacker-controlled LM could write.  It receives
as globals the paths it wants to reach (the worst case: the attacker knows
them) and ends with the stolen data as its value, or raises when every channel
it tried was closed.  `python -m tests.reliability.escape_corpus SPEC` runs the
cases of a spec file through `lmc.sandbox` and prints their outcomes as JSON;
`test_sandbox_escapes.py` builds the spec, runs this as root and as an
unprivileged user, and judges the outcome from outside (canary files,
secrets, connections, signals).

Modes: `full` is the product (every layer).  `kernel` skips the audit hook and
the namespaces (`unshare --net`, and `--user` for an unprivileged parent), so
only the kernel filters (Landlock, seccomp) and the uid and rlimits stand: what
holds there holds without the friendly layer.  `control` also skips the kernel
filters, to show each attack is live (it does escape where only the uid and
rlimits hold).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from dataclasses import dataclass

ROOT_AND_USER = frozenset({"root", "unprivileged"})


@dataclass(frozen=True)
class Escape:
    id: str
    about: str
    code: str
    # Users for which the control run (no hook, no kernel layer) must escape:
    # proof the attack is real.  Empty when the other process layers (uid,
    # RLIMIT_NPROC, the network namespace) stop it on their own.
    live: frozenset = ROOT_AND_USER
    # True when the program may finish normally (it then must hold nothing secret).
    may_finish: bool = False


# Helpers every attack may use; nothing here may fail under the audit hook.
PRELUDE = """
import os
got, errors = [], []
def attempt(label, fn):
    try:
        value = fn()
    except BaseException as exc:
        errors.append(f"{label}: {type(exc).__name__}: {exc}")
        return None
    got.append(value)
    return value
def outcome():
    if got:
        return got
    raise PermissionError("blocked: " + " | ".join(errors))
def libc():
    import ctypes
    lib = ctypes.CDLL(None, use_errno=True)
    lib.syscall.restype = ctypes.c_long
    return ctypes, lib
def checked(ctypes, rc):
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc
def sysno(x86_64, aarch64):
    return x86_64 if os.uname().machine == "x86_64" else aarch64
def here_fd():
    return os.open(".", os.O_RDONLY | os.O_DIRECTORY)
def dotdot(path):
    # the path of `path` relative to the sandbox directory, through '..'
    return os.path.relpath(path, os.getcwd())
"""

E = Escape
ESCAPES: tuple[Escape, ...] = (
    # ------------------------------------------------------------ plain paths
    E("abs-read", "open the canary by its absolute path", "result = open(canary).read()"),
    E(
        "abs-write",
        "append to the canary and create a file beside it",
        "attempt('append', lambda: open(canary, 'a').write('pwned'))\n"
        "attempt('create', lambda: open(os.path.join(case_dir, 'pwned'), 'w').write('x'))\n"
        "result = outcome()",
    ),
    E(
        "chdir-dotdot-chain",
        "chdir('..') up to / and open the canary relative to it",
        "for _ in range(40):\n    os.chdir('..')\nresult = [os.getcwd(), open(canary.lstrip('/')).read()]",
    ),
    # ------------------------------------------------------ directory fds (the exploit)
    E(
        "dirfd-dotdot-read",
        "open the sandbox dir, chdir into a subfolder, read '../..' relative to the dir fd",
        "fd = here_fd()\nos.mkdir('sub')\nos.chdir('sub')\n"
        "path = os.path.relpath(canary, os.path.dirname(os.getcwd()))\n"
        "f = os.open(path, os.O_RDONLY, dir_fd=fd)\nresult = os.read(f, 4096).decode()",
    ),
    E(
        "dirfd-dotdot-append",
        "append to the canary through a directory fd and '..'",
        "fd = here_fd()\nf = os.open(dotdot(canary), os.O_WRONLY | os.O_APPEND, dir_fd=fd)\nresult = os.write(f, b'pwned')",
    ),
    E(
        "dirfd-create-outside",
        "create a file beside the canary through a directory fd",
        "fd = here_fd()\n"
        "f = os.open(dotdot(os.path.join(case_dir, 'pwned')), os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)\n"
        "result = os.write(f, b'x')",
    ),
    E(
        "dirfd-mkdir-outside",
        "mkdir beside the canary through a directory fd",
        "fd = here_fd()\nos.mkdir(dotdot(os.path.join(case_dir, 'newdir')), dir_fd=fd)\nresult = 'made'",
    ),
    E(
        "dirfd-rename-in",
        "rename the canary into the sandbox through directory fds, then read it",
        "fd = here_fd()\nos.rename(dotdot(canary), 'stolen', src_dir_fd=fd, dst_dir_fd=fd)\nresult = open('stolen').read()",
    ),
    E(
        "dirfd-rename-over",
        "rename a sandbox file over the canary through directory fds",
        "open('mine', 'w').write('pwned')\nfd = here_fd()\nos.rename('mine', dotdot(canary), src_dir_fd=fd, dst_dir_fd=fd)\nresult = 'replaced'",
    ),
    E("dirfd-unlink", "delete the canary through a directory fd", "fd = here_fd()\nos.unlink(dotdot(canary), dir_fd=fd)\nresult = 'deleted'"),
    E(
        "dirfd-link-in",
        "hard-link the canary into the sandbox through directory fds",
        "fd = here_fd()\nos.link(dotdot(canary), 'hard', src_dir_fd=fd, dst_dir_fd=fd)\nresult = open('hard').read()",
    ),
    E(
        "dirfd-symlink-outside",
        "plant a symlink beside the canary through a directory fd",
        "fd = here_fd()\nos.symlink('/etc/passwd', dotdot(os.path.join(case_dir, 'evil')), dir_fd=fd)\nresult = 'planted'",
    ),
    # ------------------------------------------------------ links planted inside the sandbox
    E("symlink-read", "symlink to the canary inside the sandbox, read through it", "os.symlink(canary, 'link')\nresult = open('link').read()"),
    E(
        "symlink-write",
        "symlink to the canary inside the sandbox, append through it",
        "os.symlink(canary, 'link')\nresult = open('link', 'a').write('pwned')",
    ),
    E(
        "symlink-dir",
        "symlink to the canary's directory, read and create through it",
        "os.symlink(case_dir, 'd')\n"
        "attempt('read', lambda: open('d/canary.txt').read())\n"
        "attempt('create', lambda: open('d/pwned', 'w').write('x'))\nresult = outcome()",
    ),
    E("hardlink-planted", "hard-link the canary into the sandbox by absolute path", "os.link(canary, 'hard')\nresult = open('hard').read()"),
    E(
        "symlink-race",
        "a timer signal swaps a regular sandbox file for a symlink to the canary while it is opened",
        "import signal\n"
        "def swap(*_):\n"
        "    try:\n        os.replace('l', 'f')\n    except OSError:\n        pass\n"
        "signal.signal(signal.SIGALRM, swap)\nstolen = None\n"
        "for i in range(60):\n"
        "    open('f', 'w').write('harmless')\n"
        "    attempt('plant', lambda: os.symlink(canary, 'l'))\n"
        "    signal.setitimer(signal.ITIMER_REAL, 0.0002)\n"
        "    for _ in range(30):\n"
        "        data = attempt('read', lambda: open('f').read())\n"
        "        if data and 'CANARY' in data:\n            stolen = data\n"
        "    signal.setitimer(signal.ITIMER_REAL, 0)\n"
        "    if stolen:\n        break\n"
        "if stolen is None:\n    raise PermissionError('race lost: ' + (errors[-1] if errors else 'no error'))\n"
        "result = stolen",
    ),
    E(
        "opath-reopen",
        "open the canary with O_PATH (no access check) and reopen it through /proc/self/fd",
        "fd = os.open(canary, os.O_PATH)\n"
        "attempt('read', lambda: open(f'/proc/self/fd/{fd}').read())\n"
        "attempt('append', lambda: open(f'/proc/self/fd/{fd}', 'a').write('pwned'))\nresult = outcome()",
    ),
    E(
        "linkat-empty-path",
        "link an O_PATH fd of the canary into the sandbox (linkat AT_EMPTY_PATH)",
        "ctypes, lib = libc()\nfd = os.open(canary, os.O_PATH)\n"
        "checked(ctypes, lib.linkat(fd, b'', -100, b'stolen', 0x1000))\nresult = open('stolen').read()",
    ),
    E(
        "rename-exchange",
        "atomically exchange a sandbox file with the canary (renameat2 RENAME_EXCHANGE)",
        "ctypes, lib = libc()\nopen('mine', 'w').write('pwned')\n"
        "at = ctypes.c_long(-100)\n"
        "checked(ctypes, lib.syscall(sysno(316, 276), at, b'mine', at, canary.encode(), 2))\n"
        "result = open('mine').read()",
    ),
    # ------------------------------------------------------------ /proc
    E("proc-self-root", "reach the canary through /proc/self/root", "result = open('/proc/self/root' + canary).read()"),
    E("proc-self-cwd-dotdot", "reach the canary through /proc/self/cwd/..", "result = open('/proc/self/cwd/' + dotdot(canary)).read()"),
    E(
        "proc-self-fd-dotdot",
        "reach the canary through /proc/self/fd/N/.. of the sandbox dir fd",
        "fd = here_fd()\nresult = open(f'/proc/self/fd/{fd}/' + dotdot(canary)).read()",
    ),
    E(
        "proc-ppid-cwd",
        "reach lmc's project directory through /proc/<ppid>/cwd",
        "ppid = os.getppid()\n"
        "attempt('readlink', lambda: os.readlink(f'/proc/{ppid}/cwd'))\n"
        "attempt('read', lambda: open(f'/proc/{ppid}/cwd/canary.txt').read())\n"
        "attempt('write', lambda: open(f'/proc/{ppid}/cwd/pwned', 'w').write('x'))\n"
        "if not any('CANARY' in str(g) or g == 1 for g in got):\n"
        "    raise PermissionError('blocked: ' + ' | '.join(errors))\nresult = got",
        live=frozenset({"unprivileged"}),
    ),
    E(
        "proc-ppid-root",
        "reach the canary through /proc/<ppid>/root",
        "result = open(f'/proc/{os.getppid()}/root' + canary).read()",
        live=frozenset({"unprivileged"}),
    ),
    E(
        "proc-ppid-environ",
        "read the parent's environment (its API key) from /proc/<ppid>/environ",
        "result = open(f'/proc/{os.getppid()}/environ', 'rb').read().decode('latin-1')",
        live=frozenset({"unprivileged"}),
    ),
    E(
        "proc-ppid-mem",
        "read the parent's memory through /proc/<ppid>/mem at its stack",
        "ppid = os.getppid()\n"
        "maps = open(f'/proc/{ppid}/maps').read().splitlines()\n"
        "start, end = [int(x, 16) for x in [l for l in maps if '[stack]' in l][0].split()[0].split('-')]\n"
        "f = os.open(f'/proc/{ppid}/mem', os.O_RDONLY)\n"
        "data = os.pread(f, end - start, start)\nat = data.find(b'CANARY-')\n"
        "result = data[max(at - 80, 0):at + 80].decode('latin-1') if at >= 0 else f'read {len(data)} bytes'",
        live=frozenset({"unprivileged"}),
    ),
    E(
        "parent-environment",
        "look for the parent's API key in every environment the child can see",
        "attempt('os.environ', lambda: dict(os.environ))\n"
        "attempt('self', lambda: open('/proc/self/environ', 'rb').read().decode('latin-1'))\n"
        "attempt('parent', lambda: open(f'/proc/{os.getppid()}/environ', 'rb').read().decode('latin-1'))\n"
        "result = outcome()",
        live=frozenset({"unprivileged"}),
        may_finish=True,
    ),
    # ------------------------------------------------------------ other ways to the files
    E(
        "importlib-posix",
        "import posix through importlib and read through a dir fd with it",
        "import importlib\nposix = importlib.import_module('posix')\n"
        "fd = posix.open('.', posix.O_RDONLY)\nf = posix.open(dotdot(canary), posix.O_RDONLY, dir_fd=fd)\n"
        "result = posix.read(f, 4096).decode()",
    ),
    E(
        "ctypes-libc-open",
        "__import__('ctypes') and call libc open/read on the canary",
        "ctypes, lib = libc()\nf = checked(ctypes, lib.open(canary.encode(), 0))\n"
        "buf = ctypes.create_string_buffer(4096)\nn = checked(ctypes, lib.read(f, buf, 4096))\n"
        "result = buf.raw[:n].decode()",
    ),
    E(
        "ctypes-syscall-openat",
        "raw openat system call through ctypes, with '..' from the sandbox dir fd",
        "ctypes, lib = libc()\nfd = here_fd()\n"
        "f = checked(ctypes, lib.syscall(sysno(257, 56), fd, dotdot(canary).encode(), 0, 0))\n"
        "result = os.read(f, 4096).decode()",
    ),
    E(
        "open-by-handle",
        "name_to_handle_at + open_by_handle_at (bypasses path lookup; root child's capability)",
        "ctypes, lib = libc()\n"
        "class Handle(ctypes.Structure):\n"
        "    _fields_ = [('size', ctypes.c_uint), ('type', ctypes.c_int), ('data', ctypes.c_ubyte * 128)]\n"
        "h = Handle(128, 0)\nmount_id = ctypes.c_int()\n"
        "at = ctypes.c_long(-100)\n"
        "checked(ctypes, lib.syscall(sysno(303, 264), at, canary.encode(), ctypes.byref(h), ctypes.byref(mount_id), 0))\n"
        "mfd = here_fd()  # any directory of the same filesystem\n"
        "f = checked(ctypes, lib.syscall(sysno(304, 265), mfd, ctypes.byref(h), 0))\n"
        "result = os.read(f, 4096).decode()",
        live=frozenset({"root"}),
    ),
    E("truncate-outside", "truncate the canary by path", "os.truncate(canary, 0)\nresult = 'truncated'"),
    E(
        "chmod-outside",
        "make the canary world-readable (Landlock has no metadata right: seccomp's job)",
        "os.chmod(canary, 0o666)\nresult = 'chmodded'",
    ),
    E(
        "utime-xattr-outside",
        "change the canary's times and extended attributes",
        "attempt('utime', lambda: os.utime(canary, (0, 0)))\n"
        "attempt('setxattr', lambda: os.setxattr(canary, 'user.pwned', b'1'))\n"
        "result = outcome()",
    ),
    E(
        "device-node",
        "make a block device of the disk holding the canary in the sandbox, then read it",
        "st = os.stat(canary)\nos.mknod('disk', 0o60600, st.st_dev)\nresult = open('disk', 'rb').read(4096).decode('latin-1')",
        live=frozenset(),
    ),
    E(
        "mount-namespace",
        "unshare user+mount namespaces and bind-mount the canary's directory into the sandbox",
        "ctypes, lib = libc()\n"
        "checked(ctypes, lib.unshare(0x10000000 | 0x00020000))\n"
        "os.mkdir('m')\nchecked(ctypes, lib.mount(case_dir.encode(), b'm', None, 4096, None))\n"
        "result = open('m/canary.txt').read()",
    ),
    # ------------------------------------------------------------ lmc's own files
    E(
        "cache-write",
        "poison lmc's LM cache: overwrite an entry and add one",
        "attempt('overwrite', lambda: open(cache_file, 'w').write('{\"text\": \"pwned\"}'))\n"
        "attempt('create', lambda: open(os.path.join(cache_dir, 'ff.json'), 'w').write('{}'))\n"
        "result = outcome()",
    ),
    E(
        "artifact-write",
        "rewrite the artifact being run, in place and by replacing it",
        "attempt('in place', lambda: open(artifact, 'r+').write('{\"pwned\": 1}'))\n"
        "open('evil.json', 'w').write('{}')\n"
        "attempt('replace', lambda: os.replace('evil.json', artifact))\n"
        "result = outcome()",
    ),
    # ------------------------------------------------------------ processes
    E(
        "subprocess-cat",
        "subprocess (through _posixsubprocess) runs cat on the canary",
        "import _posixsubprocess, subprocess\nresult = subprocess.run(['/bin/cat', canary], capture_output=True).stdout.decode()",
        live=frozenset(),
    ),
    E(
        "os-system",
        "os.system copies the canary into the sandbox",
        "rc = os.system(f'cat {canary} > copied')\nresult = open('copied').read() if rc == 0 else None\n"
        "if result is None:\n    raise PermissionError(f'system returned {rc}')",
        live=frozenset(),
    ),
    E("exec-binary", "replace the child with /bin/cat of the canary (exec needs no new process)", "os.execv('/bin/cat', ['cat', canary])"),
    E(
        "memfd-execve",
        "write a script into a memfd and execve it",
        "fd = os.memfd_create('x', 0)\nos.write(fd, f'#!/bin/sh\\nexec cat {canary}\\n'.encode())\nos.execve(f'/proc/self/fd/{fd}', ['x'], {})",
    ),
    E(
        "fork",
        "fork a child that reads the canary",
        "pid = os.fork()\nif pid == 0:\n    print(open(canary).read())\n    os._exit(0)\nos.waitpid(pid, 0)",
        live=frozenset(),
    ),
    E(
        "vfork-posix-spawn",
        "posix_spawn (vfork) cat of the canary",
        "pid = os.posix_spawn('/bin/cat', ['cat', canary], {})\nos.waitpid(pid, 0)",
        live=frozenset(),
    ),
    E(
        "signal-parent",
        "send signals to the parent and to every process of the user (kill -1)",
        "import signal\n"
        "attempt('parent', lambda: os.kill(os.getppid(), signal.SIGURG))\n"
        "attempt('everyone', lambda: os.kill(-1, signal.SIGURG))\n"
        "attempt('group', lambda: os.killpg(os.getpgid(os.getppid()), signal.SIGURG))\n"
        "result = outcome()",
    ),
    E(
        "ptrace-parent",
        "ptrace-seize the parent, or read its memory with process_vm_readv",
        "ctypes, lib = libc()\nppid = os.getppid()\n"
        "def seize():\n"
        "    checked(ctypes, lib.syscall(sysno(101, 117), 0x4206, ppid, 0, 0))\n"
        "    lib.syscall(sysno(101, 117), 17, ppid, 0, 0)\n"
        "    return 'seized'\n"
        "class IOV(ctypes.Structure):\n"
        "    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n"
        "def vm_read():\n"
        "    try:\n"
        "        stack = [l for l in open(f'/proc/{ppid}/maps') if '[stack]' in l][0]\n"
        "        address = int(stack.split('-')[0], 16)\n"
        "    except OSError:\n"
        "        address = 0x400000\n"
        "    buf = ctypes.create_string_buffer(64)\n"
        "    local, remote = IOV(ctypes.addressof(buf), 64), IOV(address, 64)\n"
        "    checked(ctypes, lib.syscall(sysno(310, 270), ppid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))\n"
        "    return 'read parent memory'\n"
        "attempt('seize', seize)\nattempt('process_vm_readv', vm_read)\nresult = outcome()",
        live=frozenset({"unprivileged"}),
    ),
    # ------------------------------------------------------------ sockets
    E(
        "unix-socket-named",
        "connect to a unix socket of the user's (think ssh-agent) by path",
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect(unix_path)\ns.sendall(b'hello')\nresult = 'connected'",
    ),
    E(
        "unix-socket-abstract",
        "connect to an abstract unix socket of the host",
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0' + abstract_name)\nresult = 'connected'",
    ),
    E(
        "tcp-loopback",
        "connect to a TCP listener on 127.0.0.1",
        "import socket\ns = socket.create_connection(('127.0.0.1', tcp_port), timeout=2)\nresult = 'connected'",
    ),
    E(
        "ipv6-socket",
        "connect to a TCP listener on ::1",
        "import socket\nif tcp6_port is None:\n    raise OSError('no IPv6 on this host')\n"
        "s = socket.socket(socket.AF_INET6)\ns.settimeout(2)\ns.connect(('::1', tcp6_port))\nresult = 'connected'",
    ),
)

MODES = ("full", "kernel", "control")
ENV_SECRET_NAME = "OPENAI_API_KEY"


# ---------------------------------------------------------------- runner


def _listeners(case: dict) -> list[socket.socket]:
    """Sockets an escaped program could reach; any connection they accept is an escape."""
    made = []
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(case["inputs"]["unix_path"])
    os.chmod(case["inputs"]["unix_path"], 0o777)
    made.append(unix)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind("\0" + case["inputs"]["abstract_name"])
    made.append(abstract)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    case["inputs"]["tcp_port"] = tcp.getsockname()[1]
    made.append(tcp)
    try:
        tcp6 = socket.socket(socket.AF_INET6)
        tcp6.bind(("::1", 0))
        case["inputs"]["tcp6_port"] = tcp6.getsockname()[1]
        made.append(tcp6)
    except OSError:
        case["inputs"]["tcp6_port"] = None
    for s in made:
        s.listen(8)
        s.setblocking(False)
    return made


def _connections(listeners: list[socket.socket]) -> int:
    count = 0
    for s in listeners:
        while True:
            try:
                conn, _ = s.accept()
            except (BlockingIOError, OSError):
                break
            conn.close()
            count += 1
        s.close()
    return count


def run_spec(spec: dict) -> list[dict]:
    from lmc import sandbox

    signals = {"n": 0}

    def count(_signum, _frame):
        signals["n"] += 1

    signal.signal(signal.SIGURG, count)
    limits = sandbox.SandboxLimits(timeout_s=float(spec.get("timeout_s", 6.0)), cpu_s=3)
    product_plan = sandbox._plan()
    net = sandbox._netns_prefix()
    bare = product_plan.prefix[len(net) :] if product_plan.prefix[: len(net)] == net else product_plan.prefix
    bare_plan = sandbox._Plan(bare, product_plan.self_drop, product_plan.unprivileged)
    out = []
    for case in spec["cases"]:
        os.chdir(case["inputs"]["case_dir"])
        listeners = _listeners(case)
        before = signals["n"]
        audit, kernel = {"full": (True, True), "kernel": (False, True), "control": (False, False)}[case["mode"]]
        record = {"key": case["key"], "ipv6": case["inputs"]["tcp6_port"] is not None}
        plan = product_plan if case["mode"] == "full" else bare_plan
        sandbox._plan = lambda plan=plan: plan
        try:
            result = sandbox._run(PRELUDE + case["code"], case["inputs"], limits, audit=audit, kernel=kernel)
            record.update(ok=result.ok, value=json.dumps(result.value)[:20000], stdout=result.stdout[:20000], error=result.error)
        except Exception as exc:  # a setup failure is a failed test, reported with its text
            record.update(ok=None, value="null", stdout="", error=f"runner: {type(exc).__name__}: {exc}")
        record["connections"] = _connections(listeners)
        record["signals"] = signals["n"] - before
        record["uid"] = os.getuid()
        out.append(record)
    return out


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as handle:
        spec = json.load(handle)
    json.dump(run_spec(spec), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
