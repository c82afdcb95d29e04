"""OpenTelemetry export: spans of examples, module calls and LM requests, in memory and over real OTLP/HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the 'otel' extra is not installed (make install installs it)")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

import lmc  # noqa: E402
from lmc.errors import LmcError  # noqa: E402
from tests.lmserver import LoopbackServer  # noqa: E402
from tests.test_compile_cli import SENTIMENT, responder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LM_KEY = "sk-test-OTEL-LMKEY-4242"
OTLP_TOKEN = "otel-SECRET-token-9999"

TWO_STEP = SENTIMENT.replace(
    """module classify = Predict(Classify)
program main(review: str) -> (sentiment: "positive" | "negative") {
  return classify(review=review)
}""",
    """module classify = Predict(Classify)
module second = Predict(Classify)
program main(review: str) -> (sentiment: "positive" | "negative") {
  first = classify(review=review)
  return second(review=review + " " + first.sentiment)
}""",
)


@pytest.fixture(scope="module")
def server():
    with LoopbackServer(responder) as srv:
        yield srv


class Collector:
    """A loopback OTLP/HTTP collector: decodes each POST /v1/traces and keeps its spans, bodies and headers."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                collector.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "Collector":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def spans(self) -> list[dict]:
        out = []
        for req in self.requests:
            msg = ExportTraceServiceRequest()
            msg.ParseFromString(req["body"])
            for rs in msg.resource_spans:
                resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append(
                            {
                                "name": s.name,
                                "trace": s.trace_id.hex(),
                                "id": s.span_id.hex(),
                                "parent": s.parent_span_id.hex(),
                                "status": s.status.code,
                                "attrs": {a.key: _value(a.value) for a in s.attributes},
                                "resource": resource,
                            }
                        )
        return out


def _value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def lmc_cli(cwd: Path, *args: str, env: dict | None = None, code: str | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "OPENAI_API_KEY": LM_KEY, **(env or {})}
    full.pop("LMC_LM", None)
    argv = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "lmc", *args]
    return subprocess.run(argv, cwd=cwd, env=full, capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- in memory, through the Python API


def test_spans_nest_and_carry_genai_attributes(tmp_path, server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", LM_KEY)
    (tmp_path / "two.lmp").write_text(TWO_STEP)
    exporter = InMemorySpanExporter()
    prog = lmc.load(tmp_path / "two.lmp", lm="openai/test", api_base=server.url, cache_dir=None, otel=exporter)
    try:
        assert prog(review="good food") == {"sentiment": "positive"}
    finally:
        prog.close()
    spans = exporter.get_finished_spans()
    by_name: dict = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    assert sorted(by_name) == ["chat openai/test", "example main", "module classify", "module second"]
    example = by_name["example main"][0]
    assert example.parent is None and example.attributes["lmc.ok"] is True
    assert example.attributes["gen_ai.usage.input_tokens"] > 0 and example.attributes["lmc.lm_calls"] == 2
    for name in ("module classify", "module second"):
        module = by_name[name][0]
        assert module.parent.span_id == example.context.span_id
        assert module.attributes["lmc.module.kind"] == "Predict"
    chats = by_name["chat openai/test"]
    assert len(chats) == 3 and [bool(c.attributes.get("lmc.probe")) for c in chats].count(True) == 1  # the endpoint's probe too
    modules = {s.context.span_id for s in by_name["module classify"] + by_name["module second"]}
    for chat in chats:
        a = chat.attributes
        assert chat.parent.span_id in modules and chat.context.trace_id == example.context.trace_id
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.system"] == "openai"
        assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == "openai/test"
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["gen_ai.usage.cost"] == 0.0 and a["lmc.latency_s"] >= 0 and a["lmc.cached"] is False
        assert a["server.address"] == "127.0.0.1" and isinstance(a["server.port"], int)
        assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a  # content is opt-in


def test_content_opt_in_and_failures(tmp_path, server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", LM_KEY)
    (tmp_path / "s.lmp").write_text(SENTIMENT)
    exporter = InMemorySpanExporter()
    prog = lmc.load(tmp_path / "s.lmp", lm="openai/test", api_base=server.url, cache_dir=None, otel=exporter, otel_content=True)
    try:
        prog(review=f"good, and here is my key {LM_KEY}")
    finally:
        prog.close()
    chat = next(s for s in exporter.get_finished_spans() if s.name.startswith("chat") and not s.attributes.get("lmc.probe"))
    messages = json.loads(chat.attributes["gen_ai.input.messages"])
    assert messages[-1]["role"] == "user" and "here is my key ***" in messages[-1]["parts"][0]["content"]
    assert json.loads(chat.attributes["gen_ai.output.messages"])[0]["parts"][0]["content"].startswith("<sentiment>")
    assert all(LM_KEY not in json.dumps(dict(s.attributes)) for s in exporter.get_finished_spans())

    # An LM that refuses (a 401) leaves an error span with a scrubbed message.
    exporter.clear()
    with LoopbackServer(responder, api_key="the-right-key") as strict:
        prog = lmc.load(tmp_path / "s.lmp", lm="openai/test", api_base=strict.url, cache_dir=None, otel=exporter)
        try:
            with pytest.raises(LmcError):
                prog(review="good")
        finally:
            prog.close()
    spans = exporter.get_finished_spans()
    chat = next(s for s in spans if s.name.startswith("chat"))
    assert chat.status.status_code.name == "ERROR" and chat.attributes["error.type"]
    assert all(LM_KEY not in (s.status.description or "") + json.dumps(dict(s.attributes)) for s in spans)


def test_eval_spans_carry_the_score(tmp_path, server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", LM_KEY)
    (tmp_path / "s.lmp").write_text(SENTIMENT)
    rows = [{"id": "a", "review": "good", "sentiment": "positive"}, {"id": "b", "review": "bad", "sentiment": "positive"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    exporter = InMemorySpanExporter()
    lmc.evaluate(tmp_path / "s.lmp", data=tmp_path / "d.jsonl", lm="openai/test", api_base=server.url, cache_dir=None, otel=exporter)
    examples = {s.attributes["lmc.example.id"]: s for s in exporter.get_finished_spans() if s.name == "example main"}
    assert set(examples) == {"a", "b"}  # one span per example, the scorer's and the interpreter's merged
    assert examples["a"].attributes["lmc.score"] == 1.0 and examples["a"].attributes["lmc.passed"] is True
    assert examples["b"].attributes["lmc.score"] == 0.0 and examples["b"].attributes["lmc.passed"] is False


# ---------------------------------------------------------------- over OTLP/HTTP, from the CLI


def test_cli_exports_to_a_real_otlp_endpoint_without_secrets(tmp_path, server):
    (tmp_path / "two.lmp").write_text(TWO_STEP)
    rows = [{"id": f"r{i}", "review": f"good {i}" if i != 2 else f"good, key {LM_KEY}"} for i in range(3)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with Collector() as collector:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {OTLP_TOKEN}",
            "OTEL_SERVICE_NAME": "route-bot",
        }
        r = lmc_cli(
            tmp_path,
            "run",
            "two.lmp",
            "--data",
            "in.jsonl",
            "--out",
            "out.jsonl",
            "--otel-content",
            "--lm",
            "openai/test",
            "--api-base",
            server.url,
            "--no-cache",
            env=env,
        )
        assert r.returncode == 0, r.stderr
    assert collector.requests and all(req["path"] == "/v1/traces" for req in collector.requests)
    assert all(req["headers"].get("authorization") == f"Bearer {OTLP_TOKEN}" for req in collector.requests)
    for req in collector.requests:  # neither the LM key nor the collector's token in any exported byte
        assert LM_KEY.encode() not in req["body"] and OTLP_TOKEN.encode() not in req["body"]
    spans = collector.spans()
    names = sorted(s["name"] for s in spans)
    assert names.count("example main") == 3 and names.count("module classify") == 3
    assert names.count("module second") == 3 and names.count("chat openai/test") == 6 + 1  # and the endpoint's probe
    assert spans[0]["resource"]["service.name"] == "route-bot"
    assert len({s["trace"] for s in spans}) == 3  # each example its own trace
    ids = {s["id"]: s for s in spans}
    for s in spans:
        if s["name"].startswith("chat"):
            assert ids[s["parent"]]["name"].startswith("module ")
            assert s["attrs"]["gen_ai.usage.input_tokens"] > 0 and "gen_ai.input.messages" in s["attrs"]
    assert any("key ***" in s["attrs"].get("gen_ai.input.messages", "") for s in spans)


def test_otel_flag_without_the_extra_is_one_line(tmp_path):
    (tmp_path / "s.lmp").write_text(SENTIMENT)
    block = "import sys\nsys.modules['opentelemetry'] = None\nfrom lmc.cli import main\nsys.exit(main(sys.argv[1:]))"
    r = lmc_cli(tmp_path, "run", "s.lmp", "-i", "review=x", "--otel", "--lm", "openai/test", code=block)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == ["error: --otel needs the OpenTelemetry extra: pip install 'lmc[otel]'"]
    r = lmc_cli(
        tmp_path, "run", "s.lmp", "-i", "review=x", "--lm", "openai/test", code=block, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    )
    assert r.returncode == 2 and "OTEL_EXPORTER_OTLP_ENDPOINT is set" in r.stderr and "Traceback" not in r.stderr


def test_a_collector_that_is_down_fails_fast_without_the_token(tmp_path, server):
    (tmp_path / "s.lmp").write_text(SENTIMENT)
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://user:{OTLP_TOKEN}@127.0.0.1:9/v1/traces?key={OTLP_TOKEN}"}
    r = lmc_cli(tmp_path, "run", "s.lmp", "-i", "review=good", "--otel", "--lm", "openai/test", "--api-base", server.url, env=env)
    assert r.returncode == 2 and r.stdout == "", r.stderr
    line = r.stderr.strip().splitlines()[0]
    assert line.startswith("error: cannot reach the OpenTelemetry collector at http://127.0.0.1:9")
    assert OTLP_TOKEN not in r.stderr and "Traceback" not in r.stderr


def test_opentelemetry_is_imported_only_when_asked_for(tmp_path, server):
    (tmp_path / "s.lmp").write_text(SENTIMENT)
    probe = (
        "import sys\nfrom lmc.cli import main\ncode = main(sys.argv[1:])\n"
        "print('OTEL-IMPORTED' if any(m.startswith('opentelemetry') for m in sys.modules) else 'OTEL-ABSENT')"
    )
    r = lmc_cli(tmp_path, "--help", code=probe)
    assert "OTEL-ABSENT" in r.stdout
    r = lmc_cli(
        tmp_path,
        "run",
        "s.lmp",
        "-i",
        "review=good",
        "--lm",
        "openai/test",
        "--api-base",
        server.url,
        code=probe,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": ""},
    )
    assert r.returncode == 0 and "OTEL-ABSENT" in r.stdout, r.stderr
    r = lmc_cli(
        tmp_path,
        "run",
        "s.lmp",
        "-i",
        "review=good",
        "--lm",
        "openai/test",
        "--api-base",
        server.url,
        code=probe,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "LMC_OTEL": "0"},
    )
    assert r.returncode == 0 and "OTEL-ABSENT" in r.stdout, r.stderr


def test_secret_values_cover_keys_and_otlp_headers():
    from lmc.telemetry import secret_values

    env = {
        "OPENAI_API_KEY": "sk-abcdef",
        "MY_TOKEN": "tok-123456",
        "HOME": "/root/long-path",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-honeycomb-team=hc-secret-1,authorization=Bearer bear-secret-2",
    }
    found = secret_values(env)
    for s in ("sk-abcdef", "tok-123456", "hc-secret-1", "bear-secret-2", "Bearer bear-secret-2"):
        assert s in found
    assert "/root/long-path" not in found


def test_a_refusing_collector_is_one_scrubbed_warning(tmp_path, server):
    """The SDK's own error log quotes the endpoint; a token in its path must not reach stderr."""

    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        (tmp_path / "s.lmp").write_text(SENTIMENT)
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1/traces/{OTLP_TOKEN}"
        r = lmc_cli(
            tmp_path,
            "run",
            "s.lmp",
            "-i",
            "review=good",
            "--otel",
            "--lm",
            "openai/test",
            "--api-base",
            server.url,
            env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": url},
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert r.returncode == 0 and json.loads(r.stdout) == {"sentiment": "positive"}, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert warnings and all(ln.startswith("warning: OpenTelemetry export: ") for ln in warnings), r.stderr
    assert OTLP_TOKEN not in r.stderr and "Traceback" not in r.stderr


def test_sdk_log_records_are_scrubbed_of_the_endpoint_token(capsys, monkeypatch):
    import logging

    from lmc.telemetry import _quiet_sdk_logs

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"x-api-key={OTLP_TOKEN}")
    log = logging.getLogger("opentelemetry")
    before = list(log.handlers), log.propagate
    try:
        _quiet_sdk_logs("http://127.0.0.1:4318/v1/traces?token=query-SECRET-777")
        logging.getLogger("opentelemetry.exporter.otlp").error(
            "Failed to export to /v1/traces?token=query-SECRET-777 with header %s\nsecond line", OTLP_TOKEN
        )
    finally:
        log.handlers[:], log.propagate = before
    err = capsys.readouterr().err
    assert err.startswith("warning: OpenTelemetry export: Failed to export") and err.count("\n") == 1
    assert "query-SECRET-777" not in err and OTLP_TOKEN not in err
