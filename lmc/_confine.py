"""Kernel confinement of the sandbox child: Landlock rules and a seccomp filter, set through raw system calls.

The sandbox child (`lmc/_sandbox_child.py`) calls `status` (which confines it)
after its trusted set-up and before any untrusted code runs; the parent
(`lmc.sandbox`) calls `landlock_abi` and `seccomp_check` to refuse early,
before an LM call is spent, where the kernel offers no boundary.  Standard
library only (the child has no site-packages), and no lmc imports: the child
loads this file by path.  Why these layers and
what each one holds is docs/security.md section 1.
"""

import ctypes
import errno
import os
import stat
import sys

# System call numbers shared by every architecture since Linux 5.x.
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_SECCOMP = 21
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2

_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1

# Landlock filesystem rights, by the ABI version that introduced them.
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

# The newest ABI whose rights this file knows; a newer kernel is used at this level.
KNOWN_ABI = 7

_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: FS_REFER, 3: FS_TRUNCATE, 5: FS_IOCTL_DEV}
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV

# What the program may do in its own directory: ordinary file work.  Not
# granted anywhere: executing files, device nodes, sockets and FIFOs, and
# device ioctls.
SANDBOX_RIGHTS = (
    FS_READ_FILE | FS_WRITE_FILE | FS_READ_DIR | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE_DIR | FS_MAKE_REG | FS_MAKE_SYM | FS_REFER | FS_TRUNCATE
)
READ_TREE_RIGHTS = FS_READ_FILE | FS_READ_DIR
THIRD_PARTY_DIRS = frozenset({"site-packages", "dist-packages"})

# seccomp: the architectures whose system call numbers are listed here.
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_X32_SYSCALL_BIT = 0x40000000
# Refused outright (EPERM): sockets of every family (named unix sockets are
# outside Landlock's reach before ABI 8), starting programs and processes,
# reading other processes, the kernel keyring, file handles (which bypass
# path lookup), namespaces and mounts, io_uring (whose operations bypass
# this filter), and the kernel-administration calls.
_DENY = {
    "socket": (41, 198),
    "socketpair": (53, 199),
    "execve": (59, 221),
    "execveat": (322, 281),
    "fork": (57, None),
    "vfork": (58, None),
    "clone": (56, 220),
    "clone3": (435, 435),
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "pidfd_open": (434, 434),
    "pidfd_send_signal": (424, 424),
    "pidfd_getfd": (438, 438),
    "kcmp": (312, 272),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "name_to_handle_at": (303, 264),
    "open_by_handle_at": (304, 265),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "unshare": (272, 97),
    "setns": (308, 268),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "fanotify_init": (300, 262),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "reboot": (169, 142),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "acct": (163, 89),
    "quotactl": (179, 60),
    "quotactl_fd": (443, 443),
    "iopl": (172, None),
    "ioperm": (173, None),
    "uselib": (134, None),
    "personality": (135, 92),
    "syslog": (103, 116),
    "lookup_dcookie": (212, 18),
    # Landlock has no right for changing a file's metadata: without these a
    # program could chmod the user's private key world-readable.  By path
    # only (an O_PATH descriptor of any file is a path here); the descriptor
    # forms need a real open, which Landlock already confines.
    "chmod": (90, None),
    "chown": (92, None),
    "lchown": (94, None),
    "fchmodat": (268, 53),
    "fchmodat2": (452, 452),
    "fchownat": (260, 54),
    "utime": (132, None),
    "utimes": (235, None),
    "futimesat": (261, None),
    "utimensat": (280, 88),
    "setxattr": (188, 5),
    "lsetxattr": (189, 6),
    "removexattr": (197, 14),
    "lremovexattr": (198, 15),
    "setxattrat": (463, 463),
    "removexattrat": (466, 466),
    "open_tree_attr": (467, 467),
    "file_setattr": (469, 469),
}
# Allowed only when the first argument is the process's own pid: a program
# may signal itself (abort, raise), never its parent or the user's processes.
_SIGNALS_SELF_ONLY = {"kill": (62, 129), "tkill": (200, 130), "tgkill": (234, 131), "rt_sigqueueinfo": (129, 138), "rt_tgsigqueueinfo": (297, 240)}
# Before Landlock ABI 3, truncate(2) on a path is not a Landlock right.
_TRUNCATE = (76, 45)


class Unavailable(Exception):
    """The kernel (or the platform, or a container's policy) offers no boundary here; the text says why."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


_libc_handle = None


def _libc():
    global _libc_handle
    if _libc_handle is None:
        handle = ctypes.CDLL(None, use_errno=True)
        handle.syscall.restype = ctypes.c_long
        handle.prctl.restype = ctypes.c_int
        handle.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        _libc_handle = handle
    return _libc_handle


def _syscall(number: int, *args) -> int:
    ctypes.set_errno(0)
    result = _libc().syscall(ctypes.c_long(number), *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    ctypes.set_errno(0)
    result = _libc().prctl(option, arg2, arg3, 0, 0)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


# ---------------------------------------------------------------- probing

_WHY = {
    errno.ENOSYS: "this kernel has no Landlock (it needs Linux 5.13 or newer built with CONFIG_SECURITY_LANDLOCK)",
    errno.EOPNOTSUPP: "Landlock is built into this kernel but disabled (add 'landlock' to the lsm= boot parameter)",
    errno.EPERM: "this container's seccomp policy forbids the Landlock system calls",
}


def landlock_abi(*, simulate_missing: bool = False) -> int:
    """The kernel's Landlock ABI version; raises `Unavailable` with the reason when there is none.

    `simulate_missing` answers as a kernel without Landlock would; only tests set it.
    """
    if not sys.platform.startswith("linux"):
        raise Unavailable(f"Landlock is Linux-only and this is {sys.platform}")
    if simulate_missing:
        raise Unavailable(_WHY[errno.ENOSYS] + " [simulated by LMC_SANDBOX_TEST_NO_LANDLOCK]")
    try:
        flags = ctypes.c_uint32(_CREATE_RULESET_VERSION)
        return _syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), flags)
    except OSError as exc:
        raise Unavailable(_WHY.get(exc.errno or 0, f"landlock_create_ruleset failed: {exc.strerror}")) from None


def _audit_arch() -> int:
    machine = os.uname().machine
    arch = _AUDIT_ARCH.get(machine)
    if arch is None or sys.maxsize < 2**32:
        raise Unavailable(f"lmc's seccomp filter knows the system calls of x86_64 and aarch64, not {machine}")
    return arch


def seccomp_check() -> None:
    """Raise `Unavailable` unless this process can install a seccomp filter for its architecture."""
    _audit_arch()
    try:
        _prctl(_PR_GET_SECCOMP)
    except OSError as exc:
        raise Unavailable(f"this kernel has no seccomp filters (prctl: {exc.strerror})") from None


# ---------------------------------------------------------------- applying


def _handled(abi: int) -> tuple[int, int, int]:
    fs = 0
    for version, rights in _FS_RIGHTS_BY_ABI.items():
        if abi >= version:
            fs |= rights
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    return fs, net, scoped


def _add_rule(ruleset: int, path: str, rights: int, handled_fs: int) -> bool:
    """Grant `rights` beneath `path`; False if the path does not exist (nothing to grant)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _FILE_RIGHTS
        attr = _PathBeneathAttr(rights & handled_fs, fd)
        _syscall(_SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(attr), ctypes.c_uint32(0))
    finally:
        os.close(fd)
    return True


def _stdlib_rules(directory: str) -> list[tuple[str, int]]:
    """Read rights on the standard library, but not on the third-party packages installed below it."""
    rules = [(directory, FS_READ_DIR)]
    try:
        names = os.listdir(directory)
    except OSError:
        return rules
    for name in names:
        if name not in THIRD_PARTY_DIRS:
            rules.append((os.path.join(directory, name), READ_TREE_RIGHTS))
    return rules


def _mapped_files() -> list[str]:
    """Files mapped into this process (the interpreter, libpython, libc and the extension modules loaded)."""
    found = []
    try:
        with open("/proc/self/maps", "rb") as maps:
            for line in maps.read().decode("utf-8", "replace").splitlines():
                fields = line.split(None, 5)
                if len(fields) == 6 and fields[5].startswith("/") and not fields[5].endswith(")"):
                    found.append(fields[5])
    except OSError:
        pass
    return sorted(set(found))


def _shared_libraries(directory: str) -> list[str]:
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    return [e.path for e in entries if ".so" in e.name and e.is_file()]


def read_rules(stdlib_dirs: list[str]) -> list[tuple[str, int]]:
    """Every path the child may read after confinement, with the rights granted beneath it."""
    rules: list[tuple[str, int]] = []
    seen = set()
    for directory in stdlib_dirs:
        real = os.path.realpath(directory)
        if real in seen or not os.path.isdir(real):
            continue
        seen.add(real)
        if os.path.exists(os.path.join(real, "os.py")):
            rules.extend(_stdlib_rules(real))
        else:
            rules.append((real, READ_TREE_RIGHTS))
    # Shared libraries that standard extension modules (zlib, _hashlib, pyexpat,
    # ...) load lazily live beside libc: that directory (system libraries,
    # world-readable, no user data) is readable, never executable.
    for path in _mapped_files():
        rules.append((path, FS_READ_FILE))
        name = os.path.basename(path)
        if name.startswith(("libc.so", "libc-")):
            rules.append((os.path.dirname(path), READ_TREE_RIGHTS))
        elif name.startswith("libpython"):
            # A Python with its own libraries (conda, a custom prefix) keeps
            # zlib, libffi, ... beside libpython; that directory may also hold
            # the standard library with its site-packages, so only the shared
            # libraries themselves are granted.
            rules.extend((lib, FS_READ_FILE) for lib in _shared_libraries(os.path.dirname(path)))
    for path in ("/etc/ld.so.cache", "/etc/localtime", "/dev/urandom", "/dev/random", "/dev/zero"):
        rules.append((os.path.realpath(path), FS_READ_FILE))
    rules.append(("/dev/null", FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE))
    return rules


def _bpf_program(arch: int, machine_index: int, pid: int, deny_truncate: bool) -> list[tuple[int, int, int, int]]:
    ld_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    kill_process, errno_eperm, allow = 0x80000000, 0x00050000 | errno.EPERM, 0x7FFF0000
    deny = sorted({nr for nrs in _DENY.values() if (nr := nrs[machine_index]) is not None})
    if deny_truncate:
        deny.append(_TRUNCATE[machine_index])
    signals = sorted({nrs[machine_index] for nrs in _SIGNALS_SELF_ONLY.values()})
    head = [(ld_abs, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, kill_process), (ld_abs, 0, 0, 0)]
    # Layout after the head: [x32 check] deny checks, signal checks, ALLOW,
    # SIGNAL block (3), ERRNO.  Jumps only go forward.
    checks: list[tuple[str, int]] = []
    if machine_index == 0:
        checks.append(("x32", _X32_SYSCALL_BIT))
    checks += [("deny", nr) for nr in deny] + [("signal", nr) for nr in signals]
    n = len(checks)
    body = []
    for i, (kind, value) in enumerate(checks):
        after = n - i - 1  # instructions left before ALLOW
        to_signal = after + 1
        to_errno = after + 4
        if kind == "x32":
            body.append((jge, to_errno, 0, value))
        elif kind == "deny":
            body.append((jeq, to_errno, 0, value))
        else:
            body.append((jeq, to_signal, 0, value))
    tail = [
        (ret, 0, 0, allow),
        (ld_abs, 0, 0, 16),  # args[0], low 32 bits (little endian)
        (jeq, 0, 1, pid),
        (ret, 0, 0, allow),
        (ret, 0, 0, errno_eperm),
    ]
    return head + body + tail


def _install_seccomp(deny_truncate: bool) -> None:
    arch = _audit_arch()
    index = 0 if os.uname().machine == "x86_64" else 1
    program = _bpf_program(arch, index, os.getpid(), deny_truncate)
    filters = (_SockFilter * len(program))(*[_SockFilter(*ins) for ins in program])
    fprog = _SockFprog(len(program), filters)
    _prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog))


def confine(sandbox_dir: str, rules: list, *, require_seccomp: bool = True, simulate_missing: bool = False) -> str:
    """Restrict this process for good: Landlock rules, then the seccomp filter.

    `rules` is `read_rules(...)`, computed before the child gives up its uid
    (a process that changed uid can no longer read its own /proc/self/maps).

    Returns a description of what was applied.  Raises `Unavailable` (nothing
    applied) when the kernel offers no Landlock, or no seccomp filter while
    `require_seccomp`; raises `OSError` if applying failed half-way (the caller
    must then not run anything it would not run unconfined).
    """
    abi = landlock_abi(simulate_missing=simulate_missing)
    try:
        seccomp_check()
        seccomp_missing = None
    except Unavailable as exc:
        if require_seccomp:
            raise
        seccomp_missing = str(exc)
    level = min(abi, KNOWN_ABI)
    handled_fs, handled_net, scoped = _handled(level)
    attr = _RulesetAttr(handled_fs, handled_net, scoped)
    size = 8 if level < 4 else (16 if level < 6 else 24)
    ruleset = _syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    try:
        if not _add_rule(ruleset, sandbox_dir, SANDBOX_RIGHTS, handled_fs):
            raise OSError(errno.ENOENT, f"sandbox directory {sandbox_dir!r} is gone")
        for path, rights in rules:
            try:
                _add_rule(ruleset, path, rights, handled_fs)
            except OSError:  # a read right the kernel will not attach costs an import, never safety
                pass
        # No rule for the network: with ABI >= 4 every TCP bind and connect is refused.
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        _syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    if seccomp_missing is not None:
        return f"Landlock ABI {abi} (no seccomp: {seccomp_missing})"
    _install_seccomp(deny_truncate=level < 3)
    return f"Landlock ABI {abi} + seccomp"


def status(sandbox_dir: str, rules: list, *, strict: bool, simulate_missing: bool = False) -> dict:
    """Confine this process and say how, as the child reports it to the parent.

    {"confined": what}; else {"refused": why} when the boundary is required
    (LMC_SANDBOX=strict, the default), or {"unconfined": why} when the user
    opted in to less.  A half-applied boundary is refused too in strict mode.
    """
    try:
        return {"confined": confine(sandbox_dir, rules, require_seccomp=strict, simulate_missing=simulate_missing)}
    except Unavailable as exc:
        why = str(exc)
    except OSError as exc:
        why = f"applying the kernel sandbox failed: {exc.strerror or exc}"
    return {"refused": why} if strict else {"unconfined": why}
