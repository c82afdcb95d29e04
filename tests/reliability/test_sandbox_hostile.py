"""Hostile ProgramOfThought code: each attack must be refused or killed, quickly, with a reason for the LM."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid

import pytest

from lmc import sandbox
from lmc.sandbox import SandboxLimits, run_code

FAST = SandboxLimits(timeout_s=2.0, cpu_s=1)
SECRET = "sk-test-SECRET"


def hostile(code: str, limits: SandboxLimits = FAST, inputs: dict | None = None, *, bound: float = 4.0, audit=True, kernel=True):
    """Run `code`, check it was stopped within `bound` seconds, return the result."""
    start = time.monotonic()
    result = sandbox._run(code, inputs, limits, audit=audit, kernel=kernel)
    assert time.monotonic() - start < bound, result
    assert result.ok is False, result
    assert result.error and "\n" not in result.error
    assert result.value is None
    return result


# ----------------------------------------------------------- secrets and files


@pytest.fixture
def fake_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    key = home / ".ssh" / "id_rsa"
    key.write_text("-----BEGIN FAKE PRIVATE KEY-----\nTOPSECRETKEY\n")
    key.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    return home


def test_reading_ssh_key_by_absolute_path_is_refused(fake_home):
    key = str(fake_home / ".ssh" / "id_rsa")
    r = hostile(f"result = open({key!r}).read()")
    assert r.error.startswith("refused: reading ")
    assert "outside the sandbox directory" in r.error
    assert "TOPSECRETKEY" not in r.stdout + r.error


def test_home_is_not_even_known_to_the_program(fake_home):
    # HOME is unset and the user database (pwd) cannot be imported, so '~' stays literal.
    r = hostile("import os\nresult = open(os.path.expanduser('~/.ssh/id_rsa')).read()")
    assert r.error == "FileNotFoundError: [Errno 2] No such file or directory: '~/.ssh/id_rsa' (line 2)"
    assert "TOPSECRETKEY" not in r.stdout + r.error


def test_listing_home_is_refused(fake_home):
    r = hostile(f"import os\nresult = os.listdir({str(fake_home)!r})")
    assert r.error.startswith("refused: listing ")


def test_reading_etc_passwd_is_refused():
    r = hostile("result = open('/etc/passwd').read()")
    assert r.error == "refused: reading '/etc/passwd' is not allowed (outside the sandbox directory) (line 1)"


def test_relative_escape_from_the_sandbox_is_refused():
    r = hostile("result = open('../' * 20 + 'etc/passwd').read()")
    assert r.error.startswith("refused: reading ")


def test_environment_variables_do_not_reach_the_program(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    r = run_code("import os\nresult = dict(os.environ)")
    assert r.ok, r.error
    assert "OPENAI_API_KEY" not in r.value
    assert SECRET not in repr(r.value)
    assert "HOME" not in r.value and "PATH" not in r.value


def test_environment_of_processes_is_not_readable(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    for path in ("/proc/self/environ", f"/proc/{os.getpid()}/environ"):
        r = hostile(f"result = open({path!r}, 'rb').read()")
        assert r.error.startswith("refused: reading ")
        assert SECRET not in r.stdout + r.error


def test_writing_outside_the_sandbox_is_refused():
    target = f"/tmp/lmc-outside-{uuid.uuid4().hex}.txt"
    r = hostile(f"open({target!r}, 'w').write('pwned')")
    assert r.error.startswith(f"refused: writing '{target}'")
    assert not os.path.exists(target)


def test_os_level_writes_and_deletes_outside_are_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for code in (
        f"import os\nos.remove({str(victim)!r})",
        f"import os\nos.truncate({str(victim)!r}, 0)",
        f"import os\nos.rename({str(victim)!r}, 'mine.txt')",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
        f"import os\nos.close(os.open({str(victim)!r}, os.O_RDONLY))",
    ):
        r = hostile(code)
        assert r.error.startswith("refused: "), (code, r.error)
    assert victim.read_text() == "keep me"


def test_links_cannot_be_made_to_reach_outside():
    r = hostile("import os\nos.symlink('/etc/passwd', 'p')\nresult = open('p').read()")
    assert r.error == "refused: creating links is not allowed (line 2)"


def test_directory_descriptors_outside_cannot_be_opened():
    lib = os.path.dirname(os.__file__)
    r = hostile(f"import os\nfd = os.open({lib!r}, os.O_RDONLY)\nos.open('x.py', os.O_WRONLY | os.O_CREAT, dir_fd=fd)")
    assert r.error.startswith("refused: ")


def test_third_party_packages_are_not_readable():
    site = next((p for p in sys.path if p.endswith("site-packages")), None)
    if site is None:
        pytest.skip("no site-packages on this interpreter")
    r = hostile(f"import os\nresult = os.listdir({site!r})")
    assert r.error.startswith("refused: ")


# ------------------------------------------------------------------- network


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.1)
    accepted = []

    def accept():
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    yield server.getsockname()[1], accepted
    thread.join()
    server.close()


def test_socket_to_localhost_is_refused(listener):
    port, accepted = listener
    r = hostile(f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))")
    assert r.error.startswith("refused: network access is not allowed")
    assert not accepted


def test_urllib_request_to_localhost_is_refused(listener):
    port, accepted = listener
    r = hostile(f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/')")
    assert r.error.startswith("refused: network access is not allowed")
    assert not accepted


def test_socket_through_importlib_is_refused():
    r = hostile("import importlib\ns = importlib.import_module('socket')")
    assert r.error.startswith("refused: network access is not allowed")


def test_raw_socket_extension_through_a_loader_is_refused():
    code = (
        "import importlib.machinery as m, importlib.util as u, sys\n"
        "spec = m.PathFinder.find_spec('_socket', sys.path)\n"
        "mod = u.module_from_spec(spec)\n"
    )
    r = hostile(code)
    assert r.error.startswith("refused: network access is not allowed")


def test_network_namespace_layer_alone_has_no_route(listener):
    """Without the audit hook and the kernel filters, the empty network namespace (when available) still stops it."""
    if not sandbox._netns_prefix():
        pytest.skip("unshare --net is not available here")
    port, accepted = listener
    r = hostile(f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))", audit=False, kernel=False)
    assert "Network is unreachable" in r.error or "ConnectionRefused" in r.error
    assert not accepted


# ----------------------------------------------------------------- processes


def test_subprocess_is_refused():
    r = hostile("import subprocess\nsubprocess.run(['ls'])")
    assert r.error == "refused: starting processes is not allowed (import of 'subprocess') (line 1)"


def test_os_system_is_refused():
    r = hostile("import os\nos.system('ls')")
    assert r.error == "refused: starting processes is not allowed (line 2)"


def test_exec_and_spawn_are_refused():
    for call in ("os.execv('/bin/ls', ['ls'])", "os.posix_spawn('/bin/ls', ['ls'], {})", "os.popen('ls').read()"):
        r = hostile(f"import os\n{call}")
        assert r.error.startswith("refused: starting processes is not allowed"), (call, r.error)


def test_fork_bomb_is_refused():
    r = hostile("import os\nwhile True:\n    os.fork()\n")
    assert r.error == "refused: starting processes is not allowed (line 3)"


@pytest.fixture
def dropped(monkeypatch):
    """As root, use the plainest drop (the child's own setuid to nobody, no capability kept);
    these programs only use modules the child has already imported."""
    if sandbox._is_root():
        plan = sandbox._Plan(sandbox._netns_prefix(), self_drop=True, unprivileged=True)
        monkeypatch.setattr(sandbox, "_plan", lambda: plan)


def test_fork_fails_by_process_limit_even_without_the_hook(dropped):
    """RLIMIT_NPROC=0 stops fork on its own (as root only after the drop to nobody: root ignores NPROC)."""
    r = hostile("import os\nwhile True:\n    os.fork()\n", audit=False, kernel=False)
    assert r.error == "BlockingIOError: [Errno 11] Resource temporarily unavailable (line 3)"


def test_privilege_drop_alone_protects_roots_files(dropped, fake_home):
    if not sandbox._is_root():
        pytest.skip("only a root parent drops privileges")
    key = str(fake_home / ".ssh" / "id_rsa")
    r = hostile(f"import os\nassert os.getuid() == 65534\nresult = open({key!r}).read()", audit=False, kernel=False)
    assert r.error.startswith("PermissionError: [Errno 13] Permission denied")


def test_default_plan_alone_stops_fork_writes_and_devices(fake_home):
    """Whatever the plan chosen on this machine, the process layers (uid, rlimits) hold without hook or kernel filters."""
    plan = sandbox._plan()
    if not plan.unprivileged:
        pytest.skip(f"the child is not unprivileged here: {plan}")
    r = hostile("import os\nwhile True:\n    os.fork()\n", audit=False, kernel=False)
    assert "BlockingIOError" in r.error
    key = str(fake_home / ".ssh" / "id_rsa")
    r = hostile(f"open({key!r}, 'a').write('x')", audit=False, kernel=False)
    assert r.error.startswith("PermissionError: [Errno 13]")
    r = hostile("import os\nos.mknod('null', 0o20600, os.makedev(1, 3))", audit=False, kernel=False)
    assert r.error.startswith("PermissionError: ")


def test_device_files_are_refused_even_for_a_root_child(monkeypatch):
    if not sandbox._is_root():
        pytest.skip("only root can make device nodes")
    monkeypatch.setattr(sandbox, "_plan", lambda: sandbox._Plan(sandbox._netns_prefix(), False, False))
    # (1, 3) is /dev/null: harmless if the refusal ever failed.
    code = "import os\nos.mknod('null', 0o20600, os.makedev(1, 3))\nopen('null', 'rb').read()"
    # Landlock grants no right to make device nodes, even to root...
    r = hostile(code)
    assert r.error == "PermissionError: [Errno 13] Permission denied (line 2)"
    # ...and without it the hook still refuses to open one.
    r = hostile(code, kernel=False)
    assert r.error == "refused: opening device files is not allowed (line 3)"


def test_signalling_other_processes_is_refused():
    r = hostile("import os\nos.kill(os.getppid(), 0)")
    assert r.error == "refused: sending signals is not allowed (line 2)"


# -------------------------------------------------------------------- limits


def test_infinite_loop_is_killed_at_the_time_limit():
    r = hostile("while True:\n    pass\n", SandboxLimits(timeout_s=1.0, cpu_s=5), bound=3.0)
    assert r.error == "killed: exceeded 1 s time limit"


def test_infinite_loop_is_killed_at_the_cpu_limit():
    # A generous wall clock: on a crowded machine one CPU-second can take many wall seconds.
    r = hostile("while True:\n    pass\n", SandboxLimits(timeout_s=20.0, cpu_s=1), bound=20.0)
    assert r.error == "killed: exceeded 1 s CPU time limit"


def test_sleeping_forever_is_killed_at_the_time_limit():
    r = hostile("import time\ntime.sleep(60)", SandboxLimits(timeout_s=1.0), bound=3.0)
    assert r.error == "killed: exceeded 1 s time limit"


def test_ten_gigabytes_is_refused_by_the_memory_limit():
    r = hostile("b'x' * 10**10")
    assert r.error == "killed: exceeded 256 MB memory limit"


def test_growing_memory_is_stopped_by_the_memory_limit():
    r = hostile("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))\n", SandboxLimits(timeout_s=5.0, memory_mb=128))
    assert r.error == "killed: exceeded 128 MB memory limit"


def test_large_file_is_stopped_by_the_file_size_limit():
    r = hostile("with open('big.bin', 'wb') as f:\n    for _ in range(100):\n        f.write(b'x' * 10**6)\n")
    assert r.error.startswith("refused: file size limit exceeded")


def test_one_hundred_megabyte_write_is_stopped():
    r = hostile("open('big.bin', 'wb').write(b'x' * 100_000_000)")
    assert "limit" in r.error


def test_many_files_are_stopped():
    r = hostile("for i in range(1000):\n    open(f'f{i}', 'w').write('x')\n")
    assert r.error.startswith("refused: more than 64 files opened for writing")


def test_printing_a_hundred_megabytes_is_truncated_not_hung():
    limits = SandboxLimits(timeout_s=5.0, max_output_bytes=10_000)
    r = hostile("print('x' * 100_000_000)", limits, bound=4.0)
    assert r.error == "killed: printed more than 10000 bytes of output"
    assert len(r.stdout) <= 10_000


def test_printing_forever_is_truncated_not_hung():
    limits = SandboxLimits(timeout_s=5.0, max_output_bytes=10_000)
    r = hostile("while True:\n    print('y' * 1000)\n", limits, bound=4.0)
    assert r.error.startswith("killed: printed more than 10000 bytes")


def test_deep_recursion_is_an_error_not_a_crash():
    r = hostile("def f(n):\n    return f(n + 1)\nf(0)")
    assert r.error.startswith("RecursionError: ")


# -------------------------------------------------------------- native code


@pytest.mark.parametrize("code", ["import ctypes", "__import__('ctypes')", "import importlib\nimportlib.import_module('ctypes')", "import _ctypes"])
def test_ctypes_is_refused(code):
    r = hostile(code)
    assert r.error.startswith("refused: native code access is not allowed")


# ---------------------------------------------------------- sandbox tampering


def test_adding_an_audit_hook_is_refused():
    # CPython swallows a hook's veto of sys.addaudithook; the new hook is just not added.
    r = run_code("import sys\ncalls = []\nsys.addaudithook(lambda *a: calls.append(a))\nopen('x', 'w').close()\nresult = len(calls)")
    assert r.ok and r.value == 0, r


def test_clearing_sys_modules_does_not_reopen_imports():
    r = hostile("import sys\nsys.modules.clear()\nimport socket")
    assert r.error.startswith("refused: network access is not allowed")


def test_reloading_os_does_not_escape():
    r = hostile("import sys\ndel sys.modules['os']\nimport os\nos.system('ls')")
    assert r.error.startswith("refused: starting processes is not allowed")


def test_gc_is_refused_even_through_the_builtin_importer():
    r = hostile("import gc")
    assert r.error.startswith("refused: importing 'gc'")
    r = hostile("import _frozen_importlib as f, _imp\ngc = _imp.create_builtin(f.ModuleSpec('gc', None))\ngc.get_objects()")
    assert r.error == "refused: interpreter introspection (gc) is not allowed (line 3)"


def test_tracing_and_profiling_are_refused():
    r = hostile("import sys\nsys.settrace(lambda *a: None)")
    assert r.error.startswith("refused: tracing hooks")
    r = hostile("import sys\nsys.setprofile(lambda *a: None)")
    assert r.error.startswith("refused: profiling hooks")


def test_building_code_objects_is_refused():
    r = hostile("f = lambda: 0\ng = f.__code__.replace(co_consts=(1,))")
    assert r.error.startswith("refused: building code objects")
    r = hostile("import marshal\nmarshal.loads(marshal.dumps(compile('1', 'x', 'eval')))")
    assert r.error.startswith("refused: building code objects")
    r = hostile("f = lambda: 0\nf.__code__ = (lambda: 1).__code__")
    assert r.error.startswith("refused: replacing a function's code")


def test_subclasses_walk_to_os_system_is_still_refused():
    code = (
        "wrap = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]\n"
        "system = wrap.__init__.__globals__['system']\n"
        "system('ls')\n"
    )
    r = hostile(code)
    assert r.error == "refused: starting processes is not allowed (line 3)"


def test_exec_tricks_do_not_escape():
    code = "exec(\"__builtins__['__import__']('os').system('ls')\" if isinstance(__builtins__, dict) else \"__import__('os').system('ls')\")"
    r = hostile(code)
    assert r.error.startswith("refused: starting processes is not allowed")


def test_rebinding_builtins_does_not_weaken_the_hook():
    code = (
        "import builtins\n"
        "for name in ('type', 'isinstance', 'issubclass', 'len', 'str', 'any', 'PermissionError'):\n"
        "    setattr(builtins, name, lambda *a, **k: True)\n"
        "print(open('/etc/passwd').read())\n"
    )
    r = hostile(code)
    # The report itself may be garbled (the runner uses the same builtins), but the read was refused.
    assert "root:" not in r.stdout


def test_tampering_with_the_child_module_does_not_weaken_the_hook():
    code = (
        "import sys, os\n"
        "main = sys.modules['__main__']\n"
        "for name in dir(main):\n"
        "    value = getattr(main, name)\n"
        "    if isinstance(value, frozenset):\n"
        "        setattr(main, name, frozenset())\n"
        "main._norm = lambda path, cwd: os.getcwd() + '/x'\n"
        "os.path.realpath = lambda p, **k: os.getcwd()\n"
        "import socket\n"
    )
    r = hostile(code)
    assert r.error.startswith("refused: network access is not allowed")


def test_hook_frame_from_a_traceback_cannot_change_the_policy():
    code = """
import types
try:
    open('/etc/passwd')
except PermissionError as exc:
    tb = exc.__traceback__
frames = []
while tb is not None:
    frames.append(tb.tb_frame)
    tb = tb.tb_next
for frame in frames:
    for name, value in list(frame.f_locals.items()):
        if isinstance(value, types.FunctionType):
            try:
                value.__code__ = (lambda *a, **k: '/').__code__
            except Exception:
                pass
        if isinstance(value, (set, dict, list)):
            value.clear()
    frame.f_globals.clear()
result = open('/etc/passwd').read()
"""
    r = hostile(code)
    assert r.error.startswith("refused: reading '/etc/passwd'")


def test_path_objects_that_lie_are_refused():
    code = (
        "class Sly(str):\n"
        "    calls = 0\n"
        "    def startswith(self, *a):\n"
        "        return True\n"
        "    def __eq__(self, other):\n"
        "        return True\n"
        "    __hash__ = str.__hash__\n"
        "open(Sly('/etc/passwd')).read()\n"
    )
    r = hostile(code)
    assert r.error.startswith("refused: reading '/etc/passwd'")


def test_native_extension_written_by_the_program_is_refused():
    code = (
        "import importlib.machinery as m, importlib.util as u, os\n"
        "path = os.path.abspath('evil.cpython-311-x86_64-linux-gnu.so')\n"
        "open(path, 'wb').write(b'\\x7fELF not really')\n"
        "spec = u.spec_from_file_location('evil', path, loader=m.ExtensionFileLoader('evil', path))\n"
        "u.module_from_spec(spec)\n"
    )
    r = hostile(code)
    assert r.error == "refused: native code access is not allowed (extension module outside the standard library) (line 5)"


def test_a_forged_report_cannot_crash_the_parent():
    code = "import os, sys\nos.write(int(sys.argv[2]), b'[' * 30000 + b']' * 30000)\nos._exit(0)"
    r = hostile(code)
    assert r.error.startswith("crashed: ")


def test_a_forged_report_only_fools_its_own_result():
    code = 'import os, sys\nos.write(int(sys.argv[2]), b\'{"ok": true, "has_value": true, "value": 7}\')\nos._exit(0)'
    r = run_code(code)
    assert r.ok and r.value == 7
