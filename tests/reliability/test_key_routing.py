"""The user's key goes only where the user sent it: the loopback rule read as an attacker would, and no redirects.

Hostile hosts are made reachable: spellings the OS resolver reads as 127.0.0.1 reach a
loopback server as they are, and names such as `127.0.0.1.evil.example.com` are resolved
to it by a patched `getaddrinfo`.  So a wrong answer from `is_loopback` would show up as
a request (with the key) arriving at a server, not only as a wrong boolean.
"""

from __future__ import annotations

import json
import socket

import pytest

from lmc.netguard import check_artifact_lm, is_loopback
from tests.lmserver import LoopbackServer
from tests.reliability.helpers import SENTIMENT, sentiment_responder
from tests.reliability.test_artifact_trust import _artifact

SECRET = "sk-test-SECRET"
ANTHROPIC_SECRET = "sk-ant-test-SECRET"


# ---------------------------------------------------------------- the rule itself

LOOPBACK = [
    "http://127.0.0.1:8000/v1",
    "http://127.0.0.1/v1",
    "https://127.0.0.1/v1",
    "http://127.255.255.254:1/",
    "http://127.3.2.1",
    "http://localhost:8000/v1",
    "http://LOCALHOST/v1",
    "HTTP://localhost/v1",
    "http://[::1]:8000/v1",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::ffff:127.0.0.1]:8000/v1",
    "http://[::ffff:7f00:1]/v1",
    "http://evil@127.0.0.1/v1",
    "http://user:pw@localhost:1/v1",
    "http://127.0.0.1:8000/v1?x=1#frag",
]
REMOTE = [
    # names that start or end like loopback
    "http://127.0.0.1.evil.example.com/v1",
    "http://127.0.0.1.nip.io/v1",
    "http://localhost.evil/v1",
    "http://localhost.evil.example.com:8000/v1",
    "http://evil-localhost/v1",
    "http://mylocalhost/v1",
    # the trailing-dot spelling of localhost: not exactly `localhost`
    "http://localhost./v1",
    "http://127.0.0.1./v1",
    # userinfo and parser confusion: the host is what follows the last '@'
    "http://127.0.0.1@evil.example.com/v1",
    "http://localhost:8000@evil.example.com/v1",
    "http://127.0.0.1:80@evil/",
    "http://a@b@127.0.0.1/v1",
    "http://evil.example.com\\@127.0.0.1/v1",
    "http://127.0.0.1\\@evil.example.com/v1",
    "http://127.0.0.1%2f@evil.example.com/v1",
    "http://127.0.0.1\t.evil.example.com/v1",
    "http://127.0.0.1\n.evil.example.com/v1",
    "http://127.0.0.1 .evil.example.com/v1",
    "http://localhost\x00.evil/v1",
    # spellings the OS resolver (inet_aton) reads as 127.0.0.1 but `ipaddress` does not
    "http://2130706433/v1",
    "http://0177.0.0.1/v1",
    "http://0x7f.1/v1",
    "http://0x7f000001/v1",
    "http://127.1/v1",
    "http://127.0.1/v1",
    "http://017700000001/v1",
    "http://127.000.000.001/v1",
    # percent-escaped and IDN spellings (fullwidth letters and digits map to ASCII under IDNA)
    "http://%31%32%37.0.0.1/v1",
    "http://%6cocalhost/v1",
    "http://ｌｏｃａｌｈｏｓｔ/v1",
    "http://１２７.０.０.１/v1",
    "http://xn--lcalhost-5za/v1",
    "http://localhost\u3002/v1",
    "http://127\u30020\u30020\u30021/v1",
    # IPv6 that is not ::1, and IPv4-compatible (not mapped) forms
    "http://[::127.0.0.1]/v1",
    "http://[::2]/v1",
    "http://[::]/v1",
    "http://[fe80::1]/v1",
    "http://[::ffff:8.8.8.8]/v1",
    "http://[::1%25lo]/v1",
    # every address of this machine that is not loopback
    "http://0.0.0.0:8000/v1",
    "http://0/v1",
    "http://10.0.0.1/v1",
    "http://192.168.1.1/v1",
    "http://203.0.113.9/v1",
    # not http(s), no host, bad port, not text
    "ftp://127.0.0.1/v1",
    "file:///etc/passwd",
    "127.0.0.1:8000",
    "//127.0.0.1/v1",
    "http:///v1",
    "http://:80/v1",
    "http://127.0.0.1:99999/v1",
    "http://127.0.0.1:80:80/v1",
    "",
    None,
    2130706433,
]


@pytest.mark.parametrize("url", LOOPBACK)
def test_loopback_addresses(url):
    assert is_loopback(url) is True


@pytest.mark.parametrize("url", REMOTE, ids=[repr(u)[:60] for u in REMOTE])
def test_hostile_and_ambiguous_names_are_not_loopback(url):
    assert is_loopback(url) is False


@pytest.mark.parametrize(
    "settings",
    [
        {"base_url": "http://evil/v1"},
        {"api_base": "http://evil/v1"},
        {"extra_headers": {"x": "y"}},
        {"api_key": "sk-theirs"},
        {"custom_llm_provider": "openai"},
        {"langfuse_host": "http://evil"},
        {"success_callback": ["webhook"]},
        {"aws_region_name": "x"},
    ],
)
def test_an_artifact_lm_may_not_set_routing_settings(settings):
    from lmc.errors import ConfigError

    with pytest.raises(ConfigError, match="may only set sampling parameters"):
        check_artifact_lm("openai/x", settings, "a.lmc.json: its LM")


def test_an_artifact_lm_may_set_sampling_settings_and_not_name_a_url():
    from lmc.errors import ConfigError

    check_artifact_lm(
        "openai/x",
        {"temperature": 0.2, "top_p": 0.9, "max_tokens": 50, "stop": ["\n"], "seed": 1, "top_k": 40, "max_completion_tokens": 9, "logit_bias": {}},
        "here",
    )
    with pytest.raises(ConfigError, match="holds a URL"):
        check_artifact_lm("openai/http://evil.example.com/v1", {}, "here")


# ---------------------------------------------------------------- from the CLI: no key reaches a hostile host

RESOLVER_ONLY = ["2130706433", "0177.0.0.1", "0x7f.1", "127.1", "localhost."]  # the OS itself reads these as loopback
PATCHED_NAMES = ["127.0.0.1.evil.example.com", "localhost.evil", "evil.example.com", "xn--lcalhost-5za"]


class RecordingServer(LoopbackServer):
    """A loopback LM server that records every request's headers; optionally answers each with a redirect."""

    def __init__(self, *a, redirect_to: str | None = None, **kw):
        super().__init__(sentiment_responder, *a, **kw)
        self.redirect_to = redirect_to
        self.seen: list[dict] = []

    async def _respond(self, method, path, headers, body, writer):
        if path != "/v1/_stats":
            self.seen.append({"method": method, "path": path, **headers})
        if self.redirect_to is not None:
            self._send(writer, 307, b"", {"Location": self.redirect_to + path})
            await writer.drain()
            return True
        if path.endswith("/messages"):  # Anthropic's API: answered only so the call can finish
            payload = {
                "id": "m",
                "type": "message",
                "role": "assistant",
                "model": "claude",
                "content": [{"type": "text", "text": "<sentiment>positive</sentiment>"}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 1, "output_tokens": 1},
            }
            self._send(writer, 200, json.dumps(payload).encode())
            await writer.drain()
            return True
        return await super()._respond(method, path, headers, body, writer)


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_SECRET)
    monkeypatch.delenv("LMC_LM", raising=False)
    monkeypatch.delenv("LMC_TRANSPORT", raising=False)


@pytest.fixture
def hostile_dns(monkeypatch):
    """Names an attacker controls resolve to 127.0.0.1 here, so a request to them would be seen by our server."""
    real = socket.getaddrinfo

    def fake(host, *a, **kw):
        if isinstance(host, str) and host.rstrip(".").lower() in PATCHED_NAMES:
            host = "127.0.0.1"
        return real(host, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


@pytest.mark.parametrize("host", RESOLVER_ONLY + PATCHED_NAMES)
@pytest.mark.parametrize("where", ["lm", "alias"])
def test_run_refuses_an_artifact_naming_a_hostile_host_and_sends_nothing(cli, env, hostile_dns, tmp_path, host, where):
    with RecordingServer() as srv:
        base = f"http://{host}:{srv.port}/v1"
        if where == "lm":
            art = _artifact(tmp_path / "a.lmc.json", {"model": "openai/test", "api_base": base, "api_key_env": None, "settings": {}})
            code, out, err = cli("run", art, "-i", "review=review number 4", "--no-cache")
        else:
            art = _with_alias_used(tmp_path / "a.lmc.json", base)
            code, out, err = cli("run", art, "--lm", "openai/test", "-i", "review=review number 4", "--no-cache")
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "--api-base" in lines[0], err
        assert srv.seen == [], "a request reached the hostile host"
        assert SECRET not in out + err


def test_the_loopback_spellings_that_count_are_used(cli, env, tmp_path):
    with RecordingServer() as srv:
        for base in (f"http://localhost:{srv.port}/v1", f"http://127.0.0.1:{srv.port}/v1", f"http://127.0.0.1:{srv.port}/v1/"):
            art = _artifact(tmp_path / "a.lmc.json", {"model": "openai/test", "api_base": base, "api_key_env": None, "settings": {}})
            code, out, err = cli("run", art, "-i", "review=review number 4", "--no-cache")
            assert code == 0, err
        assert len(srv.seen) == 2 * 3  # each run: the endpoint's JSON-schema probe (no cache), then the call


def test_the_user_may_send_requests_to_any_host_explicitly(cli, env, hostile_dns, tmp_path):
    with RecordingServer() as srv:
        base = f"http://127.0.0.1.evil.example.com:{srv.port}/v1"
        art = _artifact(tmp_path / "a.lmc.json", {"model": "openai/test", "api_base": base, "api_key_env": None, "settings": {}})
        code, out, err = cli("run", art, "--api-base", base, "-i", "review=review number 4", "--no-cache")
        assert code == 0, err
        assert len(srv.seen) == 2  # the probe and the call: the user chose it, --api-base is consent


@pytest.mark.parametrize("setting", [{"base_url": "http://evil.example.com/v1"}, {"extra_headers": {"X-Key": "1"}}])
def test_run_refuses_an_artifact_lm_that_reroutes_through_settings(cli, env, tmp_path, setting):
    with RecordingServer() as srv:
        art = _artifact(tmp_path / "a.lmc.json", {"model": "openai/test", "api_base": srv.url, "api_key_env": None, "settings": setting})
        code, _, err = cli("run", art, "-i", "review=x", "--no-cache")
        assert code == 2 and "may only set sampling parameters" in err, err
        assert srv.seen == []


def test_eval_refuses_a_hostile_alias_before_any_lm_call(cli, env, hostile_dns, tmp_path):
    from tests.reliability.helpers import labeled_reviews, write_jsonl

    with RecordingServer() as srv:
        art = _with_alias_used(tmp_path / "a.lmc.json", f"http://127.0.0.1.evil.example.com:{srv.port}/v1")
        data = write_jsonl(tmp_path / "d.jsonl", labeled_reviews(3))
        code, _, err = cli("eval", art, "--data", data, "--lm", "openai/test", "--no-cache")
        assert code == 2 and "may not choose a remote server" in err, err
        assert srv.seen == []


def _with_alias_used(path, base: str):
    """A sentiment artifact whose predictor uses an IR LM alias pointing at `base` (as `lm="evil"` would)."""
    from dataclasses import replace

    from lmc import artifact
    from lmc import ir as I
    from lmc.targets import load_target

    t = load_target(SENTIMENT)
    preds = tuple(replace(p, settings=tuple(sorted({**dict(p.settings), "lm": "evil"}.items()))) for p in t.ir.predictors)
    ir = replace(t.ir, predictors=preds, lms=(I.LMAlias("evil", "openai/test", (("api_base", base),)),))
    artifact.write(artifact.Artifact(ir=ir, program=t.program_json(), compile={}, lm=None), path)
    return path


# ---------------------------------------------------------------- redirects


@pytest.mark.parametrize("transport", ["litellm", "direct"])
@pytest.mark.parametrize(
    "model,secret,header", [("openai/test", SECRET, "authorization"), ("anthropic/claude-3-haiku-20240307", ANTHROPIC_SECRET, "x-api-key")]
)
def test_no_request_follows_a_redirect_to_another_host(cli, env, monkeypatch, tmp_path, transport, model, secret, header):
    monkeypatch.setenv("LMC_TRANSPORT", transport)
    with RecordingServer() as second, RecordingServer(redirect_to=f"http://127.0.0.1:{second.port}") as first:
        code, out, err = cli("run", SENTIMENT, "--lm", model, "--api-base", first.url, "-i", "review=review number 2", "--no-cache")
        if transport == "direct" and model.startswith("anthropic/"):
            # Anthropic's protocol is not OpenAI's: lmc refuses before sending anything.
            assert code == 2 and "--transport direct cannot send requests for anthropic/" in err, err
            assert first.seen == [] and second.seen == []
            return
        assert code == 2, err
        assert "redirect" in err and f"127.0.0.1:{second.port}" in err and "does not follow redirects" in err
        assert len(err.strip().splitlines()) == 1
        assert len(first.seen) == 1 and secret in first.seen[0].get(header, "")  # the user's chosen server
        assert second.seen == [], f"the redirect was followed: {second.seen}"
        assert secret not in out + err


def test_the_redirect_guard_leaves_other_httpx_use_alone():
    import httpx

    from lmc.netguard import RedirectRefused, refuse_redirects

    with RecordingServer() as second, RecordingServer(redirect_to=f"http://127.0.0.1:{second.port}") as first:
        with refuse_redirects() as seen, httpx.Client(follow_redirects=True) as client:
            with pytest.raises(RedirectRefused):
                client.post(first.url + "/chat/completions", json={})
        assert seen and second.seen == []
        with httpx.Client(follow_redirects=True) as client:  # outside an LM call httpx behaves as documented
            client.post(first.url + "/chat/completions", json={"model": "x", "messages": []})
        assert len(second.seen) == 1
