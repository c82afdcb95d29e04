"""API keys from the environment and lmc.yaml reach the server and nowhere else: no file, log line or message."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.lmserver import LoopbackServer
from tests.reliability.helpers import SENTIMENT, labeled_reviews, reviews, sentiment_responder, write_jsonl

ENV_SECRET = "sk-test-SECRET"
YAML_SECRET = "sk-yaml-SECRET"
ALIAS_SECRET = "sk-alias-SECRET"
SECRETS = (ENV_SECRET, YAML_SECRET, ALIAS_SECRET, "SECRET")


class KeyCheckingServer(LoopbackServer):
    """Accepts only YAML_SECRET, and like some real providers echoes the key it was sent in its 401 message."""

    def __init__(self, *a, accept: str = YAML_SECRET, **kw):
        super().__init__(*a, **kw)
        self.accept = accept
        self.keys_seen: set[str] = set()

    async def _respond(self, method, path, headers, body, writer):
        auth = headers.get("authorization", "")
        if path.startswith("/v1/") and path != "/v1/_stats" and method == "POST":
            self.keys_seen.add(auth)
            if auth != f"Bearer {self.accept}":
                with self._lock:
                    self.requests += 1
                self._error(
                    writer,
                    401,
                    f"Incorrect API key provided: {auth.removeprefix('Bearer ')}. Your headers were {{'Authorization': '{auth}'}}",
                    "invalid_request_error",
                )
                await writer.drain()
                return True
        return await super()._respond(method, path, headers, body, writer)


@pytest.fixture
def verbose_logs(tmp_path):
    """Everything any logger says at DEBUG, as lmc and its libraries would write it with verbose logging."""
    path = tmp_path / "debug.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s %(args)s"))
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield path
    root.removeHandler(handler)
    root.setLevel(old)
    handler.close()


def _every_file(*roots: Path) -> dict[Path, bytes]:
    out = {}
    for root in roots:
        for p in root.rglob("*"):
            if p.is_file():
                out[p] = p.read_bytes()
    return out


def _leaks(blob: bytes | str) -> list[str]:
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    return [s for s in SECRETS if s in text]


@pytest.mark.slow
def test_a_full_session_leaks_no_key(cli, fast_client, tmp_path, monkeypatch, verbose_logs, transport):
    monkeypatch.setenv("OPENAI_API_KEY", ENV_SECRET)
    monkeypatch.setenv("LITELLM_LOG", "DEBUG")
    # lmc.yaml exports its keys to these variables; set them here so the test restores them afterwards.
    monkeypatch.setenv("LMC_API_KEY", YAML_SECRET)
    monkeypatch.setenv("LMC_JUDGE_API_KEY", ALIAS_SECRET)
    with KeyCheckingServer(sentiment_responder) as srv:
        (tmp_path / "lmc.yaml").write_text(
            f"lm: openai/test\napi_base: {srv.url}\napi_key: {YAML_SECRET}\n"
            f"lms:\n  judge:\n    model: openai/test\n    api_base: {srv.url}\n    api_key: {ALIAS_SECRET}\n",
            encoding="utf-8",
        )
        write_jsonl(tmp_path / "train.jsonl", labeled_reviews(10))
        write_jsonl(tmp_path / "dev.jsonl", labeled_reviews(6, start=50))
        write_jsonl(tmp_path / "in.jsonl", reviews(8, start=200))
        steps = [
            (
                "compile",
                SENTIMENT,
                "--train",
                "train.jsonl",
                "--dev",
                "dev.jsonl",
                "-o",
                "art.lmc.json",
                "--cache-dir",
                "cache",
                "--optimizer",
                "bootstrap",
            ),
            ("run", "art.lmc.json", "--data", "in.jsonl", "--out", "out.jsonl", "--trace", "trace.jsonl", "--cache-dir", "cache"),
            ("run", "art.lmc.json", "--input", '{"review": "review number 7"}', "--trace", "one.jsonl", "--cache-dir", "cache"),
            (
                "eval",
                "art.lmc.json",
                "--data",
                "dev.jsonl",
                "--report",
                "report.json",
                "--junit",
                "junit.xml",
                "--summary",
                "summary.md",
                "--cache-dir",
                "cache",
                "--baseline",
                SENTIMENT,
                "--format",
                "json",
            ),
            ("inspect", "art.lmc.json"),
            ("inspect", "art.lmc.json", "--format", "json"),
            ("inspect", "art.lmc.json", "--emit-prompts", "prompts"),
            ("diff", "art.lmc.json", "art.lmc.json"),
        ]
        printed = []
        for step in steps:
            code, out, err = cli(*step)
            assert code == 0, f"{step[0]}: {err}"
            printed.append(out + err)
        assert srv.keys_seen == {f"Bearer {YAML_SECRET}"}  # the yaml key was the one sent, and only to the server
    files = _every_file(tmp_path)
    written = {"art.lmc.json", "art.stats.json", "out.jsonl", "trace.jsonl", "one.jsonl", "report.json", "junit.xml", "summary.md"}
    assert written <= {p.name for p in files}
    assert any(p.parts[-3] == "cache" for p in files)
    for p, blob in files.items():
        if p.name == "lmc.yaml":
            continue  # the user's own file
        assert not _leaks(blob), f"{p.relative_to(tmp_path)} holds a key"
    for text in printed:
        assert not _leaks(text)
    trace = (tmp_path / "trace.jsonl").read_text()
    assert '"prompt"' in trace  # the traces do carry full prompts, so the check above means something
    assert verbose_logs.stat().st_size > 0  # the libraries did log at DEBUG, and none of it held a key


def test_a_rejected_key_is_not_echoed(cli, fast_client, tmp_path, monkeypatch, transport):
    """The server answers 401 quoting the key back; lmc's message names the variable to fix, never the key."""
    monkeypatch.setenv("OPENAI_API_KEY", ENV_SECRET)
    write_jsonl(tmp_path / "in.jsonl", reviews(3))
    with KeyCheckingServer(sentiment_responder, accept="sk-the-right-one") as srv:
        code, out, err = cli(
            "run", SENTIMENT, "--lm", "openai/test", "--api-base", srv.url, "--data", "in.jsonl", "--out", "out.jsonl", "--cache-dir", "cache"
        )
        assert srv.keys_seen == {f"Bearer {ENV_SECRET}"}
        code1, out1, err1 = cli("run", SENTIMENT, "--lm", "openai/test", "--api-base", srv.url, "-i", "review=hello", "--no-cache")
    assert code == 3 and code1 == 3, err + err1
    assert "authentication failed" in err and "OPENAI_API_KEY" in err
    for text in (out, err, out1, err1):
        assert not _leaks(text), text
    for p, blob in _every_file(tmp_path).items():
        assert not _leaks(blob), p


def test_yaml_key_is_refused_in_artifact_lm_spec(tmp_path):
    """The artifact's `lm` entry names the env var that holds the key, never the key (LMSpec has no key field)."""
    from lmc.lm import LMSpec, parse_lm

    spec = parse_lm("openai/test", "http://127.0.0.1:1/v1", api_key_env="LMC_API_KEY")
    assert "api_key" not in {f for f in LMSpec.__dataclass_fields__}
    assert json.dumps(spec.to_json()).count("SECRET") == 0
