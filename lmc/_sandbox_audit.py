"""The audit hook of the sandbox child: the imports, files and interpreter events a program is refused, and why.

`lmc/_sandbox_child.py` loads this file by path during its trusted set-up (the child
cannot import lmc) and installs the hook just before the program runs.  Like the
child, it imports only modules the child has loaded anyway.  The kernel boundary
(`lmc/_confine.py`) is what holds the process; the hook turns the common attempts
into refusals the LM can read.  See docs/security.md for the threat model.
"""

import itertools
import os
import posix
import sys

# Modules whose import is refused, by the reason given to the LM.  Checked on
# every dotted component of an imported name and of an extension file's name.
_NETWORK = frozenset({"socket", "_socket", "ssl", "_ssl"})
_PROCESSES = frozenset({"subprocess", "_posixsubprocess", "multiprocessing", "_multiprocessing", "pty"})
_NATIVE = frozenset(
    {
        "ctypes",
        "_ctypes",
        "_ctypes_test",
        "_testcapi",
        "_testinternalcapi",
        "_testbuffer",
        "_testmultiphase",
        "_testimportmultiple",
        "_testclinic",
        "_xxsubinterpreters",
        "_xxinterpchannels",
        "_xxtestfuzz",
        "xxlimited",
        "xxlimited_35",
        "xxsubtype",
        "cffi",
    }
)
# Modules that reach files, users or the terminal without raising audit events.
_OTHER = frozenset(
    {
        "gc",
        "pwd",
        "grp",
        "spwd",
        "nis",
        "resource",
        "mmap",
        "fcntl",
        "termios",
        "tty",
        "sqlite3",
        "_sqlite3",
        "dbm",
        "_dbm",
        "_gdbm",
        "shelve",
        "syslog",
        "readline",
        "curses",
        "_curses",
        "_curses_panel",
        "tkinter",
        "_tkinter",
        "_posixshmem",
        "ossaudiodev",
        "webbrowser",
        "faulthandler",
        "pdb",
        "bdb",
    }
)
BLOCKED = _NETWORK | _PROCESSES | _NATIVE | _OTHER


def _reason_table() -> dict:
    reasons = {}
    for name in _NETWORK:
        reasons[name] = f"refused: network access is not allowed (import of '{name}')"
    for name in _PROCESSES:
        reasons[name] = f"refused: starting processes is not allowed (import of '{name}')"
    for name in _NATIVE:
        reasons[name] = f"refused: native code access is not allowed (import of '{name}')"
    for name in _OTHER:
        reasons[name] = f"refused: importing '{name}' is not allowed in the sandbox"
    return reasons


def _norm(path, cwd):
    """Absolute, lexically normalised path; touches no filesystem, globals or builtins."""
    if not path.startswith("/"):
        path = cwd + "/" + path
    parts = []
    for part in path.split("/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def install_hook(sandbox_dir: str, read_roots: tuple, max_write_opens: int) -> None:  # noqa: C901 - its body is the audit hook, one flat function by design
    """Install the audit hook that refuses what the sandbox does not allow.

    The hook is one flat function that reads no globals or builtins: everything
    it uses is bound here, before any untrusted code runs, to closure cells that
    hold only immutable objects.  A program that reaches the hook's frame
    through a traceback can therefore read but not change its policy (cells are
    only reachable through the function object, which nothing else references).
    Nor does the hook ever call back into objects the program controls: paths
    are copied to exact `str`s before any method is used on them.
    """
    mapping = type(type.__dict__)  # mappingproxy: a read-only view
    type_, issubclass_, len_, next_ = type, issubclass, len, next
    str_, bytes_, int_ = str, bytes, int
    str_get, bytes_get, decode = str.__getitem__, bytes.__getitem__, bytes.decode
    all_ = slice(None)
    denied, import_denied = PermissionError, ImportError
    getcwd, lstat = posix.getcwd, posix.lstat
    oserror = OSError
    device_types = (0o020000, 0o060000)  # S_IFCHR, S_IFBLK
    norm = _norm
    sandbox = sandbox_dir
    sandbox_slash = sandbox_dir + "/"
    roots = tuple(root + "/" for root in read_roots)
    devices = frozenset({"/dev/null", "/dev/urandom", "/dev/random", "/dev/zero"})
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    import_reasons = mapping(_reason_table())
    third_party = frozenset({"site-packages", "dist-packages"})
    writes = itertools.count(1)
    max_writes = max_write_opens
    path_events = mapping(
        {
            # event: (indices of path arguments, is-a-change, verb for the message)
            "os.listdir": ((0,), False, "listing"),
            "os.scandir": ((0,), False, "listing"),
            "os.walk": ((0,), False, "listing"),
            "os.fwalk": ((0,), False, "listing"),
            "os.getxattr": ((0,), False, "reading"),
            "os.listxattr": ((0,), False, "reading"),
            "os.chdir": ((0,), True, "changing directory to"),
            "os.remove": ((0,), True, "removing"),
            "os.rmdir": ((0,), True, "removing"),
            "os.mkdir": ((0,), True, "creating"),
            "os.rename": ((0, 1), True, "renaming"),
            "os.truncate": ((0,), True, "truncating"),
            "shutil.copyfile": ((0, 1), True, "copying"),
            "shutil.copytree": ((0, 1), True, "copying"),
            "shutil.move": ((0, 1), True, "moving"),
            "shutil.rmtree": ((0,), True, "removing"),
            "shutil.unpack_archive": ((0, 1), True, "unpacking"),
            "tempfile.mkstemp": ((0,), True, "creating"),
            "tempfile.mkdtemp": ((0,), True, "creating"),
        }
    )
    processes = "refused: starting processes is not allowed"
    signals = "refused: sending signals is not allowed"
    code = "refused: building code objects directly is not allowed"
    introspection = "refused: interpreter introspection (gc) is not allowed"
    limits = "refused: changing resource limits is not allowed"
    links = "refused: creating links is not allowed"
    # The kernel filter refuses these everywhere (Landlock cannot tell the
    # sandbox's files from the user's); the hint keeps the LM's retry useful.
    metadata = (
        "refused: changing file permissions, owners, times or extended attributes is not allowed (shutil.copyfile copies contents without them)"
    )
    event_reasons = mapping(
        {
            "os.system": processes,
            "os.exec": processes,
            "os.fork": processes,
            "os.forkpty": processes,
            "os.posix_spawn": processes,
            "os.spawn": processes,
            "subprocess.Popen": processes,
            "os.startfile": processes,
            "pty.spawn": processes,
            "webbrowser.open": processes,
            "os.kill": signals,
            "os.killpg": signals,
            "signal.pthread_kill": signals,
            "sys.addaudithook": "refused: changing the sandbox's audit hooks is not allowed",
            "sys.setprofile": "refused: profiling hooks are not allowed",
            "sys.settrace": "refused: tracing hooks are not allowed",
            "code.__new__": code,
            "marshal.loads": code,
            "marshal.load": code,
            "gc.get_objects": introspection,
            "gc.get_referrers": introspection,
            "gc.get_referents": introspection,
            "resource.setrlimit": limits,
            "resource.prlimit": limits,
            "os.symlink": links,
            "os.link": links,
            "os.chmod": metadata,
            "os.chown": metadata,
            "os.chflags": metadata,
            "os.lchflags": metadata,
            "os.utime": metadata,
            "os.setxattr": metadata,
            "os.removexattr": metadata,
            "shutil.copymode": metadata,
            "shutil.copystat": metadata,
            "shutil.chown": metadata,
        }
    )
    network = "refused: network access is not allowed"
    native = "refused: native code access is not allowed"
    prefix_reasons = mapping(
        {
            "socket": network,
            "ssl": network,
            "urllib": network,
            "http": network,
            "ftplib": network,
            "smtplib": network,
            "imaplib": network,
            "nntplib": network,
            "poplib": network,
            "telnetlib": network,
            "ctypes": native,
            "fcntl": native,
            "mmap": native,
            "syslog": native,
            "_posixsubprocess": processes,
        }
    )

    def hook(event, args):  # noqa: C901 - one flat function on purpose (see the docstring above): helpers would be globals
        if event == "import":
            comps = []
            for index in (0, 1):
                if index >= len_(args) or args[index] is None:
                    continue
                arg = args[index]
                if type_(arg) is not str_:
                    if not issubclass_(type_(arg), str_):
                        raise import_denied("refused: unsupported module name or path")
                    arg = str_get(arg, all_)
                if index == 1:
                    # An extension module is native code: load it only from the
                    # interpreter's own library, never from a file the program wrote.
                    full = norm(arg, getcwd())
                    trusted = False
                    for root in roots:
                        if full.startswith(root):
                            trusted = True
                            for comp in full[len_(root) :].split("/"):
                                if comp in third_party:
                                    trusted = False
                            break
                    if not trusted:
                        raise import_denied(native + " (extension module outside the standard library)")
                comps.extend(arg.rpartition("/")[2].split("."))
            for comp in comps:
                reason = import_reasons.get(comp)
                if reason is not None:
                    raise import_denied(reason)
            return
        if event == "open":
            raw, mode, flags = args
            indices = (0,)
            if type_(flags) is int_ and flags & write_flags:
                change = True
            else:
                change = type_(mode) is str_ and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)
            # os.open (mode None) can make directory descriptors, usable as
            # dir_fd to reach outside; allow it only inside the sandbox.
            sandbox_only = mode is None
            verb = "writing" if change else "reading"
            if change and type_(raw) is not int_ and next_(writes) > max_writes:
                raise denied(f"refused: more than {max_writes} files opened for writing")
        else:
            spec = path_events.get(event)
            if spec is None:
                reason = event_reasons.get(event)
                if reason is None:
                    if event == "object.__setattr__" and len_(args) > 1:
                        name = args[1]
                        if type_(name) is not str_ and issubclass_(type_(name), str_):
                            name = str_get(name, all_)
                        if type_(name) is str_ and name == "__code__":
                            raise denied("refused: replacing a function's code is not allowed")
                        return
                    reason = prefix_reasons.get(event.partition(".")[0])
                    if reason is None:
                        return
                raise denied(reason)
            indices, change, verb = spec
            sandbox_only = False
        for index in indices:
            if index >= len_(args):
                continue
            raw = args[index]
            kind = type_(raw)
            if kind is int_:
                continue  # an already-open descriptor
            if raw is None:
                path = "."
            elif kind is str_:
                path = raw
            elif issubclass_(kind, str_):
                path = str_get(raw, all_)
            elif issubclass_(kind, bytes_):
                path = decode(bytes_get(raw, all_), "utf-8", "surrogateescape")
            else:
                raise denied("refused: unsupported path type")
            full = norm(path, getcwd())
            if full == sandbox or full.startswith(sandbox_slash):
                # A root child could mknod (no audit event) a disk device here.
                try:
                    kind = lstat(full).st_mode & 0o170000
                except oserror:
                    kind = 0
                if kind in device_types:
                    raise denied("refused: opening device files is not allowed")
                continue
            if full in devices and not sandbox_only:
                continue
            if not change and not sandbox_only:
                allowed = False
                for root in roots:
                    if full.startswith(root) or full + "/" == root:
                        for comp in full[len_(root) :].split("/"):
                            if comp in third_party:
                                break
                            reason = import_reasons.get(comp.partition(".")[0])
                            if reason is not None:
                                raise import_denied(reason)
                        else:
                            allowed = True
                        break
                if allowed:
                    continue
            shown = path if len_(path) <= 120 else path[:117] + "..."
            raise denied(f"refused: {verb} {shown!r} is not allowed (outside the sandbox directory)")

    sys.addaudithook(hook)
