"""Child side of the sandbox: applies limits and the kernel boundary, installs the audit hook, runs one program.

This file is executed as a script by `lmc.sandbox` in a fresh `python -I -S -B`
process; it must not import anything from lmc (the child has no site-packages;
`lmc/_confine.py` and `lmc/_sandbox_audit.py` are loaded by path).  Everything
before `confine()` is trusted set-up; from there on the kernel (Landlock, seccomp)
holds the process, and the audit hook installed next (`lmc/_sandbox_audit.py`)
only turns common attempts into friendly refusals.
See docs/security.md for the threat model.
"""

import os
import sys

import _ast
import _json
import _signal
import resource

NOBODY = 65534
# Files a program may open for writing; with RLIMIT_FSIZE this bounds its disk use.
MAX_WRITE_OPENS = 64

# Standard modules a ProgramOfThought program is likely to use, none of which
# imports a refused module.  Those the program mentions are imported before the
# hook, from their cached bytecode; after it, modules compile from source
# (marshal is refused), which costs ~100 ms for `statistics` and its imports.
_PRELOAD = (
    "math",
    "cmath",
    "statistics",
    "fractions",
    "decimal",
    "numbers",
    "random",
    "itertools",
    "functools",
    "operator",
    "collections",
    "heapq",
    "bisect",
    "array",
    "struct",
    "re",
    "string",
    "textwrap",
    "unicodedata",
    "difflib",
    "json",
    "csv",
    "datetime",
    "time",
    "calendar",
    "copy",
    "pprint",
    "reprlib",
    "typing",
    "dataclasses",
    "enum",
    "abc",
    "contextlib",
    "base64",
    "binascii",
    "hashlib",
    "zlib",
    "io",
    "fnmatch",
    "graphlib",
)


def _preload(code: str, blocked: frozenset) -> None:
    before = blocked & set(sys.modules)  # `resource`, imported by this file on purpose
    words = set("".join(c if c.isalnum() or c == "_" else " " for c in code).split())
    if words & {"datetime", "time", "calendar"}:
        words.add("_strptime")  # imported lazily by strptime()
    for name in (*_PRELOAD, "_strptime"):
        if name in words:
            try:
                __import__(name)
            except Exception:  # the program will meet the failure when it imports
                pass
    leaked = (blocked & set(sys.modules)) - before
    if leaked:
        raise RuntimeError(f"pre-imports loaded refused modules: {sorted(leaked)}")


# JSON straight from the C accelerator: the `json` package imports `re` and
# `enum`, which would double the start-up time of a trivial program.
class _ScanContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name):
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


def _json_loads(text: str):
    # typeshed types make_scanner's argument as a JSONDecoder; any object with its attributes will do.
    value, end = _json.make_scanner(_ScanContext())(text, 0)  # type: ignore[arg-type]
    if text[end:].strip():
        raise ValueError("trailing data after the JSON value")
    return value


def _json_dumps(value) -> str:
    def refuse(obj):
        raise TypeError(f"{type(obj).__name__} is not JSON-serializable")

    encode = _json.make_encoder({}, refuse, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True)
    return "".join(encode(value, 0))


def _apply_limits(job: dict) -> None:
    lim = job["limits"]
    mb = int(lim["memory_mb"])
    cpu = max(1, int(lim["cpu_s"]))
    fsize = int(lim["max_file_bytes"])
    # A soft CPU limit below the hard one delivers SIGXCPU first and SIGKILL a
    # second later, in case the program installed a SIGXCPU handler.
    settings = [
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_FSIZE, (fsize, fsize)),
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_NOFILE, (32, 32)),
        (resource.RLIMIT_AS, (mb * 1024 * 1024, mb * 1024 * 1024)),
    ]
    for which, value in settings:
        resource.setrlimit(which, value)
    # Without this, writing past RLIMIT_FSIZE kills the process with SIGXFSZ
    # instead of raising an OSError the program (and the LM) can see.
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)


def _drop_privileges(job: dict) -> None:
    if job.get("drop_to_nobody") and os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    # Set after the uid change: the process count is per (real) user, and 0
    # makes every fork and thread creation fail for a non-root process.
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))


def _disable_pyc() -> None:
    # Loading .pyc files needs marshal.loads, which can build arbitrary (and
    # memory-unsafe) code objects; refusing marshal needs imports from source.
    import _frozen_importlib_external as external

    def no_cache(*_args, **_kwargs):
        raise NotImplementedError

    external.cache_from_source = no_cache


def _convert_path_arguments() -> None:
    """Give the hook plain strings where pathlib passes Path objects to `os` functions.

    The hook refuses path objects it cannot read without calling their code, so
    `Path('d').mkdir()` would fail; converting before the call keeps pathlib
    usable.  Undoing this only makes the program's own calls fail.
    """
    fspath, pathlike = os.fspath, os.PathLike

    def converting(function):
        def call(*args, **kwargs):
            args = tuple(fspath(a) if isinstance(a, pathlike) else a for a in args)
            return function(*args, **kwargs)

        call.__name__ = function.__name__
        call.__doc__ = function.__doc__
        return call

    for name in ("listdir", "scandir", "mkdir", "rmdir", "remove", "unlink", "rename", "replace", "chmod", "truncate", "utime", "open", "chdir"):
        setattr(os, name, converting(getattr(os, name)))


def _jsonable(value, depth: int = 0):
    """Convert a program's result to plain JSON data (lossy for exotic types)."""
    if depth > 50:
        raise ValueError("result is nested too deeply")
    if value is None or isinstance(value, bool):
        return None if value is None else bool(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (list, tuple, range)) or type(value).__name__ in ("dict_keys", "dict_values", "dict_items"):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [_jsonable(v, depth + 1) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(_jsonable(k, depth + 1)): _jsonable(v, depth + 1) for k, v in value.items()}
    name = type(value).__name__
    if name == "Fraction":
        return int(value) if value.denominator == 1 else float(value)
    if name == "Decimal":
        if value.is_finite():
            return int(value) if value == value.to_integral_value() else float(value)
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if hasattr(value, "isoformat") and name in ("date", "datetime", "time"):
        return value.isoformat()
    return str(value)


def _error_line(exc: BaseException) -> int | None:
    line = getattr(exc, "lineno", None) if isinstance(exc, SyntaxError) else None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<program>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _describe(exc: BaseException, memory_mb: int) -> str:
    if isinstance(exc, MemoryError):
        return f"killed: exceeded {memory_mb} MB memory limit"
    elif isinstance(exc, (PermissionError, ImportError)) and str(exc).startswith("refused: "):
        text = str(exc)
    elif isinstance(exc, SyntaxError):
        text = f"{type(exc).__name__}: {exc.msg}"
    elif isinstance(exc, OSError) and exc.errno == 27:  # EFBIG from RLIMIT_FSIZE
        text = "refused: file size limit exceeded"
    else:
        try:
            message = str(exc)
        except Exception:  # a user exception whose __str__ fails
            message = ""
        first = message.strip().splitlines()[0] if message.strip() else ""
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    if len(text) > 300:
        text = text[:297] + "..."
    line = _error_line(exc)
    return f"{text} (line {line})" if line else text


_UNSET = object()


def _run(job: dict) -> dict:
    code = job["code"]
    memory_mb = int(job["limits"]["memory_mb"])
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    namespace.update(job["inputs"])
    try:
        tree = compile(code, "<program>", "exec", _ast.PyCF_ONLY_AST)
        assert isinstance(tree, _ast.Module)  # what PyCF_ONLY_AST gives for "exec"
        last = None
        final = tree.body[-1] if tree.body else None
        if isinstance(final, _ast.Expr):
            tree.body.pop()
            last = _ast.Expression(final.value)
        body = compile(tree, "<program>", "exec")
        tail = compile(last, "<program>", "eval") if last is not None else None
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        return {"ok": False, "error": _describe(exc, memory_mb)}
    value, has_value = None, False
    try:
        exec(body, namespace)
        if tail is not None:
            value = eval(tail, namespace)
            has_value = value is not None
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return {"ok": False, "error": f"SystemExit: {exc.code}"}
    except BaseException as exc:  # the program's failure is data, reported to the LM
        return {"ok": False, "error": _describe(exc, memory_mb)}
    # An input that happens to be called `result` is not the program's answer
    # unless the program rebinds it.
    given = job["inputs"].get("result", _UNSET)
    if "result" in namespace and namespace["result"] is not given:
        value, has_value = namespace["result"], True
    try:
        return {"ok": True, "has_value": has_value, "value": _jsonable(value) if has_value else None}
    except BaseException as exc:
        return {"ok": False, "error": "result is not JSON-serializable: " + _describe(exc, memory_mb)}


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _load(name: str):
    """`lmc/<name>.py`, loaded by path: the lmc package is not importable here (and the module stays out of sys.modules)."""
    import _frozen_importlib as bootstrap
    import _frozen_importlib_external as external

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
    spec = external.spec_from_file_location("_lmc" + name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"no loader for {path}")
    module = bootstrap.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _confinement(job: dict):
    """Load `lmc/_confine.py` while the interpreter's files are still readable (before the uid drop).

    Loaded by path: the lmc package is not importable here.  Returns a function
    that confines this process and returns the status for the parent.
    """
    strict = job.get("isolation", "strict") == "strict"
    if not job.get("kernel", True):
        return lambda: {"unconfined": "the kernel layer was switched off by the caller (tests only)"}
    before = set(sys.modules)
    try:
        module = _load("_confine")
        rules = module.read_rules(list(sys.path))
    except Exception as exc:  # no ctypes in this Python, say
        why = f"cannot load the kernel confinement code: {type(exc).__name__}: {exc}"
        return lambda: {"refused": why} if strict else {"unconfined": why}
    loaded = set(sys.modules) - before

    def confine() -> dict:
        try:
            return module.status(os.getcwd(), rules, strict=strict, simulate_missing=bool(job.get("simulate_missing")))
        finally:
            # ctypes was needed for the set-up only; the program must import
            # it (and meet the audit hook) if it wants it.
            for name in loaded:
                sys.modules.pop(name, None)

    return confine


def main() -> None:
    job_path, result_fd = sys.argv[1], int(sys.argv[2])
    with open(job_path, "rb") as handle:
        job = _json_loads(handle.read().decode("utf-8"))
    os.unlink(job_path)
    # The audit hook's policy, loaded while this is trusted set-up; a failure stops the child before any program runs.
    audit = _load("_sandbox_audit")
    confine = _confinement(job)
    _apply_limits(job)
    _drop_privileges(job)
    _preload(job["code"], audit.BLOCKED)
    status = confine()
    # The status goes first on the result pipe, before the program can write
    # there, so the parent can trust it.
    _write_all(result_fd, (_json_dumps(status) + "\n").encode())
    if "refused" in status:
        os._exit(0)
    _disable_pyc()
    _convert_path_arguments()
    sandbox_dir = os.path.realpath(os.getcwd())
    # The interpreter's own library, readable so that imports work; never the
    # third-party site-packages below it (the hook refuses those paths).
    read_roots = tuple(sorted({os.path.realpath(p) for p in sys.path if os.path.isdir(p)}))
    if job.get("audit", True):
        audit.install_hook(sandbox_dir, read_roots, MAX_WRITE_OPENS)
    try:
        report = _run(job)
    except BaseException as exc:  # e.g. MemoryError while building the namespace
        report = {"ok": False, "error": _describe(exc, int(job["limits"]["memory_mb"]))}
    for stream in (sys.stdout, sys.__stdout__, sys.stderr, sys.__stderr__):
        if stream is None:  # no such stream in this process
            continue
        try:
            stream.flush()
        except BaseException:  # the program may have closed or replaced it
            pass
    limit = int(job["limits"]["max_output_bytes"])
    data = _json_dumps(report).encode()
    if len(data) > limit + 1024:
        data = _json_dumps({"ok": False, "error": f"refused: result is larger than {limit} bytes"}).encode()
    _write_all(result_fd, data)
    os.close(result_fd)
    # Skip interpreter shutdown: atexit handlers, __del__ methods and leftover
    # threads belong to the program and must not run after its report.
    os._exit(0)


if __name__ == "__main__":
    main()
