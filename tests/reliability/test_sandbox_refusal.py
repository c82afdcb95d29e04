"""Where the kernel offers no boundary, ProgramOfThought refuses in one line, before any LM call, unless LMC_SANDBOX=weak."""

from __future__ import annotations

import json
import logging

import pytest

from lmc import sandbox
from lmc.sandbox import SandboxLimits, SandboxUnavailable, run_code
from tests.lmserver import LoopbackServer
from tests.reliability.helpers import ROOT, run_lmc, write_jsonl

POT = ROOT / "programs" / "pot_arith.lmp"
NO_LANDLOCK = {sandbox.SIMULATE_MISSING_VARIABLE: "1"}


def _kernel_boundary() -> bool:
    try:
        sandbox.isolation()
        return True
    except SandboxUnavailable:
        return False


needs_kernel = pytest.mark.skipif(not _kernel_boundary(), reason="this machine has no Landlock/seccomp boundary")


def pot_responder(request: dict) -> str:
    text = json.dumps(request.get("messages") or request.get("prompt"))
    if "<code_output>" in text:
        return "<answer>42</answer>"
    return "<code>result = 6 * 7</code>"


@pytest.fixture
def server():
    with LoopbackServer(pot_responder) as srv:
        yield srv


def _lmc(srv, tmp_path, *args, env=None):
    return run_lmc("run", POT, "--lm", "openai/test", "--api-base", srv.url, "--no-cache", *args, cwd=tmp_path, env=env)


def test_cli_refuses_with_one_line_and_no_lm_call(server, tmp_path):
    done = _lmc(server, tmp_path, "-i", "question=six times seven", env=NO_LANDLOCK)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: cannot run ProgramOfThought code: this kernel has no Landlock")
    assert "set LMC_SANDBOX=weak to run it without a kernel-enforced file boundary" in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert server.requests == 0  # refused before the code-writing call


def test_cli_refusal_stops_a_data_run_instead_of_failing_every_example(server, tmp_path):
    data = write_jsonl(tmp_path / "q.jsonl", [{"id": f"q{i}", "question": f"{i} + 1"} for i in range(5)])
    done = _lmc(server, tmp_path, "--data", data, "--out", tmp_path / "out.jsonl", env=NO_LANDLOCK)
    assert done.returncode == 2, done.stderr
    assert "cannot run ProgramOfThought code" in done.stderr and "Traceback" not in done.stderr
    assert server.requests == 0


def test_cli_eval_refuses_too(server, tmp_path):
    data = write_jsonl(tmp_path / "q.jsonl", [{"question": "six times seven", "answer": 42}])
    done = run_lmc("eval", POT, "--data", data, "--lm", "openai/test", "--api-base", server.url, "--no-cache", cwd=tmp_path, env=NO_LANDLOCK)
    assert done.returncode == 2, done.stderr
    assert "cannot run ProgramOfThought code" in done.stderr and "LMC_SANDBOX=weak" in done.stderr


def test_cli_weak_mode_runs_and_says_what_is_missing(server, tmp_path):
    done = _lmc(server, tmp_path, "-i", "question=six times seven", env={**NO_LANDLOCK, "LMC_SANDBOX": "weak"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"answer": 42}
    assert "LMC_SANDBOX=weak: LM-written code runs without a kernel-enforced boundary" in done.stderr
    assert server.requests == 3  # the code, the endpoint's JSON-schema probe (for the int answer), the answer


@needs_kernel
def test_cli_default_runs_behind_the_boundary(server, tmp_path):
    done = _lmc(server, tmp_path, "-i", "question=six times seven")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"answer": 42} and done.stderr == ""


def test_cli_unknown_mode_is_a_clear_error(server, tmp_path):
    done = _lmc(server, tmp_path, "-i", "question=q", env={"LMC_SANDBOX": "off"})
    assert done.returncode == 2
    assert done.stderr.strip() == "error: LMC_SANDBOX must be 'strict' or 'weak', not 'off'"
    assert server.requests == 0


# ------------------------------------------------------------- library level


def test_run_code_raises_the_refusal(monkeypatch):
    monkeypatch.setenv(sandbox.SIMULATE_MISSING_VARIABLE, "1")
    with pytest.raises(SandboxUnavailable) as info:
        run_code("result = 1")
    assert isinstance(info.value, sandbox.ConfigError)  # stops a run, like a bad option
    assert info.value.exit_code == 2


@needs_kernel
def test_the_child_refuses_on_its_own(monkeypatch):
    """Even if the parent's early check were skipped, the child does not run the program unconfined."""
    monkeypatch.setattr(sandbox, "require_isolation", lambda: None)
    monkeypatch.setenv(sandbox.SIMULATE_MISSING_VARIABLE, "1")
    with pytest.raises(SandboxUnavailable, match="this kernel has no Landlock"):
        sandbox._run("open('ran', 'w').write('x')\nresult = 1", None, SandboxLimits())


@needs_kernel
def test_weak_mode_still_uses_the_kernel_boundary_when_there_is_one(monkeypatch):
    monkeypatch.setenv("LMC_SANDBOX", "weak")
    assert sandbox.isolation().startswith("Landlock ABI ")
    r = sandbox._run("result = open('/etc/hostname').read()", None, SandboxLimits(), audit=False)
    assert not r.ok and r.error.startswith("PermissionError: [Errno 13]")


def test_weak_mode_without_the_kernel_layer_warns_once(monkeypatch, caplog):
    monkeypatch.setenv("LMC_SANDBOX", "weak")
    monkeypatch.setenv(sandbox.SIMULATE_MISSING_VARIABLE, "1")
    sandbox._warn_weak.cache_clear()
    assert sandbox.isolation().startswith("none (this kernel has no Landlock")
    with caplog.at_level(logging.WARNING, logger="lmc.sandbox"):
        for _ in range(2):
            r = run_code("result = 2 + 2")
            assert r.ok and r.value == 4
    assert len([rec for rec in caplog.records if "LMC_SANDBOX=weak" in rec.getMessage()]) == 1


@needs_kernel
def test_a_program_cannot_forge_the_refusal():
    """The status line is written before the program runs; a forged one is just a bad report."""
    code = 'import os, sys\nos.write(int(sys.argv[2]), b\'{"refused": "forged"}\\n\')\nos._exit(0)'
    r = sandbox._run(code, None, SandboxLimits(), audit=False)
    assert not r.ok and r.error.startswith("crashed: ")


@needs_kernel
def test_isolation_names_the_layers():
    assert sandbox.isolation() == f"Landlock ABI {_abi()} + seccomp"


def _abi() -> int:
    from lmc import _confine

    return _confine.landlock_abi()


def test_non_linux_is_explained(monkeypatch):
    from lmc import _confine

    monkeypatch.setattr(_confine.sys, "platform", "darwin")
    with pytest.raises(_confine.Unavailable, match="Landlock is Linux-only and this is darwin"):
        _confine.landlock_abi()
