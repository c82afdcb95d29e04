"""OpenTelemetry spans of a run: one per example, per module call and per LM request (GenAI conventions).

Off unless asked for (`--otel`, `RunOptions(otel=True)`, or `OTEL_EXPORTER_OTLP_ENDPOINT`
set), and then the OpenTelemetry SDK is imported, never before: plain runs and `lmc --help`
do not pay for it.  Spans go over OTLP/HTTP to the endpoint the standard `OTEL_EXPORTER_OTLP_*`
variables name (default http://localhost:4318), or to an exporter the caller passes.

    example {program}       lmc.example.id, lmc.ok, error.type, lmc.score, tokens, cost
      module {name}         lmc.module.name, lmc.module.kind
        chat {model}        gen_ai.* (provider, request/response model, usage tokens, finish reasons),
                            gen_ai.usage.cost, lmc.latency_s, lmc.cached; prompts and completions
                            (gen_ai.input.messages / gen_ai.output.messages) only with --otel-content

No attribute holds a secret: keys stay in the environment, server addresses keep only host
and port, and every string attribute is scrubbed of the values of secret-looking environment
variables (…KEY, …TOKEN, …SECRET, …PASSWORD, the OTLP headers) before it is set.
"""

from __future__ import annotations

import contextvars
import json
import os
from contextlib import contextmanager, nullcontext
from typing import Any, Iterator
from urllib.parse import urlparse

from . import __version__
from .errors import ConfigError

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_SECRET_NAME = ("KEY", "TOKEN", "SECRET", "PASSW", "CREDENTIAL", "AUTH")
MAX_CONTENT_CHARS = 32_000  # a prompt attribute past this is cut: collectors drop oversized spans whole
_EXAMPLE: contextvars.ContextVar[Any] = contextvars.ContextVar("lmc_otel_example", default=None)


class _NullSpan:
    def set(self, **attrs: Any) -> None:
        pass

    def score(self, score: Any, passed: bool) -> None:
        pass

    def example_result(self, result: Any) -> None:
        pass

    def lm_result(self, result: Any) -> None:
        pass

    def fail(self, e: BaseException) -> None:
        pass


_NULL = nullcontext(_NullSpan())


class NoTelemetry:
    """Telemetry switched off: every span is a shared no-op context."""

    enabled = False

    def example(self, example_id: Any, program: str) -> Any:
        return _NULL

    def module(self, name: str, kind: str) -> Any:
        return _NULL

    def lm_call(self, spec: Any, req: Any) -> Any:
        return _NULL

    def flush(self) -> None:
        pass


NO_TELEMETRY = NoTelemetry()


def wanted(otel: Any) -> bool:
    """Whether a run exports spans: asked for explicitly, or an OTLP endpoint is configured (LMC_OTEL=0 says no)."""
    if otel is not None:
        return otel is not False
    if os.environ.get("LMC_OTEL", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    return any(os.environ.get(v) for v in ENDPOINT_VARS)


def open_telemetry(otel: Any = None, *, content: bool = False) -> "Telemetry | NoTelemetry":
    """The run's telemetry: off, OTLP/HTTP (otel True, or the endpoint variables), or `otel` as the exporter."""
    if not wanted(otel):
        return NO_TELEMETRY
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        why = "--otel" if otel is not None else "OTEL_EXPORTER_OTLP_ENDPOINT is set, so lmc exports spans; that"
        raise ConfigError(
            f"{why} needs the OpenTelemetry extra: pip install 'lmc[otel]'", hint=None if otel is not None else "or set LMC_OTEL=0 to export nothing"
        ) from None
    attrs = {"service.version": __version__}
    # The user's service name (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) wins; "lmc" otherwise.
    if not os.environ.get("OTEL_SERVICE_NAME") and "service.name=" not in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attrs["service.name"] = "lmc"
    provider = TracerProvider(resource=Resource.create(attrs))
    if otel is True or otel is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = endpoint()
        check_endpoint(url)
        _quiet_sdk_logs(url)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:  # an exporter object (tests, an application that embeds lmc): spans leave as they end
        provider.add_span_processor(SimpleSpanProcessor(otel))
    return Telemetry(provider, content=content)


def endpoint() -> str:
    """Where OTLP/HTTP spans go, as the exporter reads the standard variables."""
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces:
        return traces
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or "http://localhost:4318"
    return base.rstrip("/") + "/v1/traces"


def check_endpoint(url: str) -> None:
    """Fail fast when the collector is not listening: the exporter would retry for its whole timeout at the
    end of the run (twice), then drop every span.  One TCP connect answers that and sends nothing."""
    import socket

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(
            f"OpenTelemetry endpoint '{parsed.scheme}://{parsed.hostname or ''}': expected an http(s) "
            "URL such as http://localhost:4318 in OTEL_EXPORTER_OTLP_ENDPOINT"
        )
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    shown = f"{parsed.scheme}://{parsed.hostname}:{port}"  # never the path, user or query: they may hold a token
    try:
        with socket.create_connection((parsed.hostname, port), timeout=3):
            pass
    except OSError as e:
        raise ConfigError(
            f"cannot reach the OpenTelemetry collector at {shown} ({e.strerror or type(e).__name__}); no span could be exported",
            hint="start the collector, point OTEL_EXPORTER_OTLP_ENDPOINT at it, or drop --otel "
            "(LMC_OTEL=0 when the variable is set for other programs)",
        ) from None


class _OneLine:
    """The SDK's own log records (an export that failed, a retry) as one scrubbed `warning:` line on stderr."""

    def __init__(self, secrets: list[str]):
        self.secrets = secrets

    def emit(self, text: str) -> None:
        import sys

        for s in self.secrets:
            text = text.replace(s, "***")
        sys.stderr.write("warning: OpenTelemetry export: " + " ".join(text.split())[:300] + "\n")


def _quiet_sdk_logs(url: str) -> None:
    """Route the SDK's log records through `_OneLine`: the messages quote the endpoint, whose path or
    query may hold a token, and a traceback would break lmc's one-line promise."""
    import logging

    parsed = urlparse(url)
    extra = [x for x in (parsed.query, parsed.password or "", parsed.username or "", parsed.path) if len(x) >= 6]
    sink = _OneLine(secret_values() + sorted(extra, key=len, reverse=True))

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                sink.emit(record.getMessage())
            except Exception:  # noqa: BLE001 - a log line must never fail the run
                pass

    log = logging.getLogger("opentelemetry")
    if not any(type(h).__name__ == "Handler" and getattr(h, "lmc", False) for h in log.handlers):
        handler = Handler(logging.WARNING)
        handler.lmc = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.propagate = False


def secret_values(environ: Any = None) -> list[str]:
    """Values no attribute may hold: secret-looking variables and the OTLP header values, longest first."""
    env = os.environ if environ is None else environ
    out = {v for k, v in env.items() if any(word in k.upper() for word in _SECRET_NAME) and len(v) >= 6}
    for name in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        for pair in env.get(name, "").split(","):
            value = pair.partition("=")[2].strip()
            out |= {value, *value.split()} if value else set()
    return sorted((s for s in out if len(s) >= 6), key=len, reverse=True)


class Telemetry:
    """Spans through one tracer provider; each example a trace of its own."""

    enabled = True

    def __init__(self, provider: Any, *, content: bool = False):
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.provider = provider
        self.tracer = provider.get_tracer("lmc", __version__)
        self.content = content
        self.secrets = secret_values()
        self._kind = SpanKind
        self._error = lambda text: Status(StatusCode.ERROR, text)

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, "***")
        return text

    @contextmanager
    def _span(self, name: str, kind: Any, attrs: dict) -> Iterator["_Span"]:
        with self.tracer.start_as_current_span(name, kind=kind, record_exception=False, set_status_on_exception=False) as span:
            handle = _Span(self, span)
            handle.set(**attrs)
            try:
                yield handle
            except BaseException as e:
                handle.fail(e)
                raise

    @contextmanager
    def example(self, example_id: Any, program: str) -> Iterator[Any]:
        """An example's span; nested calls (the interpreter inside a scorer) reuse the one already open."""
        current = _EXAMPLE.get()
        if current is not None:
            yield current
            return
        with self._span(
            f"example {program}", self._kind.INTERNAL, {"lmc.example.id": "" if example_id is None else str(example_id), "lmc.program": program}
        ) as h:
            token = _EXAMPLE.set(h)
            try:
                yield h
            finally:
                _EXAMPLE.reset(token)

    def module(self, name: str, kind: str) -> Any:
        return self._span(f"module {name}", self._kind.INTERNAL, {"lmc.module.name": name, "lmc.module.kind": kind})

    @contextmanager
    def lm_call(self, spec: Any, req: Any) -> Iterator[Any]:
        operation = "chat" if req.messages is not None else "text_completion"
        attrs: dict = {
            "gen_ai.operation.name": operation,
            "gen_ai.system": spec.provider,
            "gen_ai.provider.name": spec.provider,
            "gen_ai.request.model": spec.model,
            "gen_ai.request.temperature": float(req.temperature),
            "gen_ai.request.max_tokens": int(req.max_tokens),
        }
        if req.stop:
            attrs["gen_ai.request.stop_sequences"] = list(req.stop)
        if spec.api_base:
            url = urlparse(spec.api_base)  # host and port only: a URL may carry a user, a password or a key
            if url.hostname:
                attrs["server.address"] = url.hostname
                if url.port:
                    attrs["server.port"] = url.port
        if self.content:
            messages = req.messages if req.messages is not None else ({"role": "user", "content": req.prompt},)
            attrs["gen_ai.input.messages"] = _messages_json(messages)
        with self._span(f"{operation} {spec.model}", self._kind.CLIENT, attrs) as h:
            h.model = spec.model
            yield h

    def flush(self) -> None:
        """Send what is buffered (at the end of a command); a collector that is down costs at most a few seconds."""
        try:
            self.provider.force_flush(timeout_millis=5000)
        except Exception:  # noqa: BLE001 - telemetry must never fail the run it observes
            pass


class _Span:
    """What lmc code sets on an open span; every value goes through the telemetry's scrubber."""

    def __init__(self, telemetry: Telemetry, span: Any):
        self.t = telemetry
        self.span = span
        self.model: str | None = None  # an LM request's model: the response's, as lmc asks for no alias

    def set(self, **attrs: Any) -> None:
        for key, value in attrs.items():
            self.attr(key, value)

    def attr(self, key: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, str):
            value = self.t.scrub(value)
        elif isinstance(value, (list, tuple)):
            value = [self.t.scrub(v) if isinstance(v, str) else v for v in value]
        self.span.set_attribute(key, value)

    def fail(self, e: BaseException) -> None:
        self.attr("error.type", type(e).__name__)
        self.span.set_status(self.t._error(self.t.scrub(str(e))[:500]))

    def example_result(self, result: Any) -> None:
        u = result.usage()
        self.set(
            **{
                "lmc.ok": result.ok,
                "lmc.duration_s": round(result.duration_s, 6),
                "gen_ai.usage.input_tokens": u["prompt_tokens"],
                "gen_ai.usage.output_tokens": u["completion_tokens"],
                "gen_ai.usage.cost": u["cost"],
                "lmc.lm_calls": u["calls"] + u["cached_calls"],
            }
        )
        if not result.ok:
            kind = getattr(result.error_kind, "value", result.error_kind)
            self.attr("error.type", str(kind) if kind is not None else "error")
            self.span.set_status(self.t._error(self.t.scrub(result.error or "")[:500]))

    def score(self, score: float | None, passed: bool) -> None:
        self.set(**{"lmc.score": None if score is None else float(score), "lmc.passed": passed})

    def lm_result(self, result: Any) -> None:
        self.set(
            **{
                "gen_ai.response.model": self.model,
                "gen_ai.usage.input_tokens": int(result.prompt_tokens),
                "gen_ai.usage.output_tokens": int(result.completion_tokens),
                "gen_ai.usage.cost": float(result.cost),
                "lmc.cost_usd": float(result.cost),
                "lmc.latency_s": round(float(result.latency_s), 6),
                "lmc.cached": bool(result.cached),
            }
        )
        if result.finish_reason:
            self.attr("gen_ai.response.finish_reasons", [str(result.finish_reason)])
        if self.t.content:
            self.attr("gen_ai.output.messages", _messages_json(({"role": "assistant", "content": result.text},)))


def _messages_json(messages: Any) -> str:
    """Messages in the GenAI conventions' shape (role + text parts), as one JSON string attribute."""
    out = [{"role": str(m.get("role", "user")), "parts": [{"type": "text", "content": str(m.get("content", ""))}]} for m in messages]
    text = json.dumps(out, ensure_ascii=False)
    return text if len(text) <= MAX_CONTENT_CHARS else text[:MAX_CONTENT_CHARS] + "…"
