"""Shared pytest fixtures: the loopback OpenAI-compatible server, the scripted fake LM and LM clients over them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakelm import FakeLM  # noqa: E402
from tests.lmserver import LoopbackServer  # noqa: E402


@pytest.fixture
def lm_server():
    """A loopback server with the default echo responder, no latency and no faults."""
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture(params=["direct", "litellm"])
def transport(request, monkeypatch):
    """Run the test once per transport: every LMClient it builds (directly or through the CLI) uses this one."""
    monkeypatch.setenv("LMC_TRANSPORT", request.param)
    return request.param


@pytest.fixture
def fake_lm():
    """A FakeLM answering "ok"; set `.script` to change what it says."""
    return FakeLM("ok")


@pytest.fixture
def lm_client(tmp_path, fake_lm):
    """An LMClient over `fake_lm` with a cache in a temporary directory."""
    from lmc.lm import LMClient

    client = LMClient(cache_dir=tmp_path / "cache", backend=fake_lm, retry_wait=0.001)
    yield client
    client.close()


@pytest.fixture
def fast_retry_client(tmp_path):
    """A factory of real (HTTP) LMClients with short timeouts and quick retries, closed after the test."""
    from lmc.lm import LMClient

    made = []

    def make(**kw):
        opts = dict(cache_dir=tmp_path / "cache", use_cache=False, timeout=2.0, max_retries=3, retry_wait=0.01, retry_max_wait=0.05)
        opts.update(kw)
        client = LMClient(**opts)
        made.append(client)
        return client

    yield make
    for c in made:
        c.close()
