"""Fixtures of the reliability tests: fast LM-client defaults and an in-process CLI that never shows a traceback."""

from __future__ import annotations

import pytest

from tests.reliability.helpers import FAST_ENV


@pytest.fixture
def fast_client(monkeypatch):
    """Every LMClient built during the test times out after 1 s and retries after ~10-50 ms."""
    from lmc import lm

    original = lm.LMClient.__init__

    def init(self, **kw):
        kw.setdefault("timeout", float(FAST_ENV["LMC_TEST_LM_TIMEOUT"]))
        kw.setdefault("retry_wait", float(FAST_ENV["LMC_TEST_RETRY_WAIT"]))
        kw.setdefault("retry_max_wait", float(FAST_ENV["LMC_TEST_RETRY_MAX_WAIT"]))
        kw.setdefault("max_retries", int(FAST_ENV["LMC_TEST_MAX_RETRIES"]))
        original(self, **kw)

    monkeypatch.setattr(lm.LMClient, "__init__", init)


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """`lmc ARGS` in-process from tmp_path; returns (exit code, stdout, stderr) and checks for tracebacks."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LMC_LM", raising=False)

    def run(*args) -> tuple[int, str, str]:
        from lmc.cli import main

        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err + captured.out, captured.err
        return code, captured.out, captured.err

    return run
