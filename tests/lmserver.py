"""A loopback OpenAI-compatible HTTP server with latency and fault injection, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import threading
import time
from collections import Counter
from typing import Callable

FAULT_KINDS = (
    "429",  # rate limited, no Retry-After
    "429_retry_after",  # rate limited with `Retry-After: <retry_after>` (seconds, or an HTTP-date: retry_after_date)
    "500",
    "502",
    "503",
    "timeout",  # sleep past the client's timeout, then answer
    "drop",  # close the connection without answering
    "truncated",  # a 200 whose body stops half way (Content-Length promises more)
    "non_json",  # a 200 whose body is HTML
    "empty",  # a 200 with an empty completion
)

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def body_hash(request: dict) -> str:
    """Hash of the parts of a request that decide its answer (what a cache would key on)."""
    keep = {k: request.get(k) for k in ("model", "messages", "prompt", "input", "temperature", "max_tokens", "stop", "n")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def default_responder(request: dict) -> str:
    """A deterministic reply derived from the last message or the prompt."""
    if request.get("messages"):
        text = str(request["messages"][-1].get("content", ""))
    else:
        prompt = request.get("prompt", "")
        text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
    return "echo: " + text[-200:]


def _tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


class LoopbackServer:
    """An asyncio HTTP/1.1 keep-alive server on 127.0.0.1, run in a background thread.

    `faults` maps a kind from FAULT_KINDS to the probability it hits a request. Whether a
    request is faulted depends only on (seed, body hash, how often that body was seen), so
    runs are reproducible whatever the arrival order. `max_faults` caps the total number of
    faults and `faults_per_body` the number per distinct request (1 = fail once, then succeed).
    """

    def __init__(
        self,
        responder: Callable[[dict], str] | None = None,
        *,
        latency: float = 0.0,
        faults: dict[str, float] | None = None,
        seed: int = 0,
        api_key: str | None = None,
        retry_after: float = 1,
        timeout_sleep: float = 5.0,
        max_faults: int | None = None,
        faults_per_body: int | None = None,
        model_ids: tuple[str, ...] = ("loopback",),
        status_for: Callable[[dict], tuple | None] | None = None,
        retry_after_date: bool = False,
        dialect: str | None = None,
        strict: bool = False,
        logprob: Callable[[str, str], float] | None = None,
    ):
        unknown = set(faults or {}) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; expected some of {FAULT_KINDS}")
        self.responder = responder or default_responder
        self.latency = latency
        self.faults = dict(faults or {})
        self.seed = seed
        self.api_key = api_key
        self.retry_after = retry_after
        self.timeout_sleep = timeout_sleep
        self.max_faults = max_faults
        self.faults_per_body = faults_per_body
        self.model_ids = model_ids
        # optional hook: request -> (status, message) or (status, message, headers) to force an error answer
        self.status_for = status_for
        self.retry_after_date = retry_after_date
        # Constrained decoding as one server kind does it: "llama.cpp" honours `grammar`, "vllm" `guided_choice` /
        # `guided_regex`, "ollama" `format`, "openai" a chat `response_format` json_schema; another dialect's field
        # is ignored, or refused (400) when `strict`.
        self.dialect = dialect
        self.strict = strict
        # Echoed log-probabilities: logprob(text before the token, token) for each whitespace-led token; without
        # it `echo` is ignored, as llama.cpp's server does.
        self.logprob = logprob
        self.constraints_seen: list[dict] = []
        self.requests = 0
        self.timeline: dict = {}  # requests per quarter second (monotonic clock), for benchmarks' diagnostics
        self.by_path: Counter = Counter()
        self.by_body: Counter = Counter()
        self.faults_injected: Counter = Counter()
        self.connections = 0
        self.max_open = 0
        self._open = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "LoopbackServer":
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def boot() -> None:
                self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=512)
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()

            loop.run_until_complete(boot())
            loop.run_forever()
            # Close what is still open so the thread ends without warnings.
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name="lmserver", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("loopback server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset_counters(self) -> None:
        with self._lock:
            self.requests = 0
            self.timeline.clear()
            self.by_path.clear()
            self.by_body.clear()
            self.faults_injected.clear()

    def stats(self) -> dict:
        with self._lock:
            # cpu_s: CPU seconds of the whole process, the server's own when it runs in one (ServerProcess)
            return {
                "requests": self.requests,
                "by_path": dict(self.by_path),
                "duplicates": self.duplicates(),
                "faults_injected": dict(self.faults_injected),
                "connections": self.connections,
                "max_open": self.max_open,
                "cpu_s": time.process_time(),
                "timeline": sorted(self.timeline.items()),
            }

    def duplicates(self) -> int:
        """How many requests repeated a body already seen (retries included)."""
        return sum(n - 1 for n in self.by_body.values() if n > 1)

    # ------------------------------------------------------------ HTTP

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
            self._open += 1
            self.max_open = max(self.max_open, self._open)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    method, target, _version = line.decode("latin-1").split(" ", 2)
                except ValueError:
                    break
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                keep = await self._respond(method, target.split("?")[0], headers, body, writer)
                if not keep or headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            with self._lock:
                self._open -= 1
            try:
                writer.close()
            except Exception:
                pass

    def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: bytes,
        extra: dict | None = None,
        content_type: str = "application/json",
        declared_length: int | None = None,
    ) -> None:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
            f"Content-Type: {content_type}",
            f"Content-Length: {declared_length if declared_length is not None else len(payload)}",
            "Connection: keep-alive",
        ]
        for k, v in (extra or {}).items():
            head.append(f"{k}: {v}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)

    def _error(self, writer, status: int, message: str, kind: str, extra: dict | None = None) -> None:
        payload = json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()
        self._send(writer, status, payload, extra)

    def _retry_after_value(self) -> str:
        if self.retry_after_date:  # whole seconds only: the wait is retry_after rounded up to the next second
            import email.utils

            return email.utils.formatdate(math.ceil(time.time() + self.retry_after), usegmt=True)
        return f"{self.retry_after:g}"

    def _pick_fault(self, bhash: str, nth: int) -> str | None:
        if not self.faults:
            return None
        if self.max_faults is not None and sum(self.faults_injected.values()) >= self.max_faults:
            return None
        if self.faults_per_body is not None and nth > self.faults_per_body:
            return None
        rng = random.Random(f"{self.seed}:{bhash}:{nth}")
        draw = rng.random()
        acc = 0.0
        for kind in FAULT_KINDS:
            acc += self.faults.get(kind, 0.0)
            if draw < acc:
                return kind
        return None

    async def _respond(self, method: str, path: str, headers: dict, body: bytes, writer) -> bool:  # noqa: C901 - one branch per route and fault kind
        if method == "GET" and path == "/v1/_stats":  # counters, for a server running in another process
            self._send(writer, 200, json.dumps(self.stats()).encode())
            await writer.drain()
            return True
        with self._lock:
            self.requests += 1
            bucket = int(time.monotonic() * 4)
            self.timeline[bucket] = self.timeline.get(bucket, 0) + 1
            self.by_path[path] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.api_key is not None and path != "/v1/models":
            if headers.get("authorization", "") != f"Bearer {self.api_key}":
                self._error(writer, 401, "Incorrect API key provided.", "invalid_request_error")
                await writer.drain()
                return True
        if method == "GET" and path == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "lmserver"} for m in self.model_ids]
            self._send(writer, 200, json.dumps({"object": "list", "data": data}).encode())
            await writer.drain()
            return True
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
            self._error(writer, 404, f"no route for {method} {path}", "not_found")
            await writer.drain()
            return True
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            self._error(writer, 400, "body is not JSON", "invalid_request_error")
            await writer.drain()
            return True
        return await self._answer(path, request, writer)

    async def _answer(self, path: str, request: dict, writer) -> bool:
        """A parsed completion or embeddings request: forced status, injected fault, or the answer."""
        bhash = body_hash(request)
        with self._lock:
            self.by_body[bhash] += 1
            nth = self.by_body[bhash]
            fault = self._pick_fault(bhash, nth)
            if fault:
                self.faults_injected[fault] += 1
        if self.status_for is not None:
            forced = self.status_for(request)
            if forced is not None:
                self._error(writer, forced[0], forced[1], "invalid_request_error", *forced[2:])
                await writer.drain()
                return True
        if fault in ("429", "429_retry_after"):
            extra = {"Retry-After": self._retry_after_value()} if fault == "429_retry_after" else None
            self._error(writer, 429, "Rate limit reached, slow down.", "rate_limit_error", extra)
            await writer.drain()
            return True
        if fault in ("500", "502", "503"):
            self._error(writer, int(fault), "The server had an error.", "server_error")
            await writer.drain()
            return True
        if fault == "timeout":
            await asyncio.sleep(self.timeout_sleep)
        if fault == "drop":
            writer.transport.abort()
            return False
        refused = self._refuses(request)
        if refused:
            self._error(writer, 400, f"Unrecognized request argument supplied: {refused}", "invalid_request_error")
            await writer.drain()
            return True
        if path == "/v1/embeddings":
            payload = self._embeddings(request)
        else:
            # lmc's endpoint probes (lmc/lm/dialect.py) are answered as a model would, without the responder, which
            # is written for a program's prompts; the constraint, when this server honours it, still decides.
            reply = PROBE_REPLY if _is_probe(request) else self.responder(request)
            text = "" if fault == "empty" else self._constrained(request, reply)
            payload = self._completion(path, request, text)
        data = json.dumps(payload).encode()
        if fault == "truncated":
            self._send(writer, 200, data[: len(data) // 2], declared_length=len(data))
            await writer.drain()
            writer.transport.abort()
            return False
        if fault == "non_json":
            self._send(writer, 200, b"<html><body>502 upstream hiccup</body></html>", content_type="application/json")
            await writer.drain()
            return True
        self._send(writer, 200, data)
        await writer.drain()
        return True

    _FIELDS = {"llama.cpp": ("grammar",), "vllm": ("guided_choice", "guided_regex"), "ollama": ("format",), "openai": ()}

    def _refuses(self, request: dict) -> str | None:
        mine = self._FIELDS.get(self.dialect or "", ())
        for fields in self._FIELDS.values():
            for f in fields:
                if f in request and f not in mine and self.strict:
                    return f
        schema = (request.get("response_format") or {}).get("type") == "json_schema"
        if schema and self.dialect != "openai" and self.strict:  # as gpt-4 or an older vLLM answers it
            return "response_format"
        if "echo" in request and self.logprob is None and self.strict:
            return "echo"
        return None

    def _constrained(self, request: dict, text: str) -> str:
        """The reply as a server honouring its own dialect's constraint would give it (the responder's when it fits)."""
        options: list[str] = []
        fmt = request.get("response_format") or {}
        if self.dialect == "openai" and fmt.get("type") == "json_schema":
            schema = fmt["json_schema"]["schema"]
            self.constraints_seen.append({"response_format": fmt})
            return json.dumps(_fit_schema(schema, text))
        if self.dialect == "llama.cpp" and "grammar" in request:
            self.constraints_seen.append({"grammar": request["grammar"]})
            if "[^" not in request["grammar"]:  # a choice of strings; a grammar with free text is left as answered
                options = [json.loads(f'"{m}"') for m in re.findall(r'"((?:[^"\\]|\\.)*)"', request["grammar"])]
                options = [o for o in options if o.strip()]
        elif self.dialect == "vllm" and ("guided_choice" in request or "guided_regex" in request):
            self.constraints_seen.append({k: request[k] for k in ("guided_choice", "guided_regex") if k in request})
            options = list(request.get("guided_choice") or [])
        elif self.dialect == "ollama" and "format" in request:
            self.constraints_seen.append({"format": request["format"]})
            enum = (request["format"] or {}).get("enum") or []
            pick = text.strip() if text.strip() in enum else (enum[0] if enum else text)
            return json.dumps(pick)
        if options:
            return text if text.strip() in options else options[0]
        return text  # a regex (or free-text grammar) the reply does not fit: this test server cannot generate to it

    def _echo(self, prompt: str, text: str) -> dict:
        """OpenAI-style logprobs of an echoed prompt plus its completion: whitespace-led tokens, the first unscored."""
        full = prompt + text
        tokens, offsets, values = [], [], []
        for i, m in enumerate(re.finditer(r"\s*\S+|\s+$", full)):
            tokens.append(m.group(0))
            offsets.append(m.start())
            values.append(None if i == 0 else (self.logprob or (lambda before, tok: -1.0))(full[: m.start()], m.group(0)))
        return {"tokens": tokens, "text_offset": offsets, "token_logprobs": values, "top_logprobs": None}

    def _completion(self, path: str, request: dict, text: str) -> dict:
        if path == "/v1/chat/completions":
            prompt_text = "".join(str(m.get("content", "")) for m in request.get("messages") or [])
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            obj = "chat.completion"
        else:
            prompt = request.get("prompt", "")
            prompt_text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
            echo = bool(request.get("echo")) and self.logprob is not None
            if echo:
                text = prompt_text + text
            choice = {
                "index": 0,
                "text": text,
                "finish_reason": "stop",
                "logprobs": self._echo(prompt_text, text[len(prompt_text) :]) if echo else None,
            }
            obj = "text_completion"
        pt, ct = _tokens(prompt_text), _tokens(text)
        return {
            "id": "cmpl-" + body_hash(request),
            "object": obj,
            "created": int(time.time()),
            "model": request.get("model", "loopback"),
            "choices": [choice],
            "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
        }

    def _embeddings(self, request: dict) -> dict:
        inputs = request.get("input", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        data = []
        for i, text in enumerate(inputs):
            digest = hashlib.sha256(str(text).encode()).digest()
            vec = [(b - 127.5) / 127.5 for b in digest[:16]]
            data.append({"object": "embedding", "index": i, "embedding": vec})
        tokens = sum(_tokens(str(t)) for t in inputs)
        return {"object": "list", "data": data, "model": request.get("model", "loopback"), "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


PROBE_REPLY = " three four"


def _is_probe(request: dict) -> bool:
    from lmc.lm.dialect import PROBE_PROMPT

    messages = request.get("messages") or []
    return request.get("prompt") == PROBE_PROMPT or (len(messages) == 1 and messages[0].get("content") == PROBE_PROMPT)


def _fit_schema(schema: dict, text: str) -> dict:
    """An object that fits a reply schema: the responder's JSON where it fits, else each property's first value."""
    try:
        given = json.loads(text)
    except ValueError:
        given = {}
    given = given if isinstance(given, dict) else {}
    out = {}
    for name, prop in schema.get("properties", {}).items():
        value = given.get(name)
        if "enum" in prop:
            out[name] = value if value in prop["enum"] else prop["enum"][0]
        else:
            kind = prop.get("type")
            fallback = {"string": "x", "boolean": True, "integer": 0, "number": 0.0, "array": []}.get(kind)
            ok = {"string": str, "boolean": bool, "integer": int, "number": (int, float), "array": list}.get(kind)
            out[name] = value if ok is not None and isinstance(value, ok) else fallback
    return out


class ServerProcess:
    """A LoopbackServer in a child process, so a benchmark's client and server do not share one GIL.

    `with ServerProcess(latency=0.1) as srv: srv.url; srv.stats()["requests"]`
    """

    def __init__(self, *, latency: float = 0.0, seconds: float = 600.0, argv: list[str] | None = None):
        """`argv` (after the Python executable) starts another server script that prints its URL first."""
        self.argv = argv or ["-m", "tests.lmserver", "--latency", str(latency), "--seconds", str(seconds)]
        self.proc = None
        self.url = ""

    def __enter__(self) -> "ServerProcess":
        import subprocess
        import sys

        root = str(__import__("pathlib").Path(__file__).resolve().parent.parent)
        self.proc = subprocess.Popen([sys.executable, *self.argv], cwd=root, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.proc.kill()
            raise RuntimeError("loopback server process did not start")
        return self

    def stats(self) -> dict:
        import urllib.request

        with urllib.request.urlopen(self.url + "/_stats", timeout=5) as resp:
            return json.loads(resp.read())

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except Exception:  # noqa: BLE001
                self.proc.kill()
            self.proc.stdout.close()


def _main() -> None:
    """Run a server in the foreground until killed or `--seconds` pass (it always stops by itself)."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--seconds", type=float, default=600.0)
    args = ap.parse_args()
    with LoopbackServer(latency=args.latency) as srv:
        print(srv.url, flush=True)
        time.sleep(args.seconds)


if __name__ == "__main__":
    _main()
