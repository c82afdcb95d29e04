"""The two transports are interchangeable: the same body at the server, the same errors, accounting and cache keys.

Every test here sends the same request through lmc's own HTTP transport and through
litellm against one loopback server (tests/lmserver.py) and compares what each side saw.
Which transport an LM gets, and that the default path never imports litellm, are tested
at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmc.errors import ConfigError, LMAuthError, LMError
from lmc.lm import LMClient, LMRequest, LMSpec, parse_lm, transport_for
from lmc.lm.spec import model_table, rewritten_by_litellm
from tests.lmserver import FAULT_KINDS, LoopbackServer

ROOT = Path(__file__).resolve().parent.parent
TRANSPORTS = ("direct", "litellm")
SYSTEM_CHAT = LMRequest(
    messages=({"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2? é"}),
    temperature=0.3,
    max_tokens=7,
    stop=("END",),
    json_mode=True,
)
PROMPT = LMRequest(prompt="Question: 2+2? é\nAnswer:", temperature=0.3, max_tokens=7, stop=("END",))
# Fields litellm may add to an OpenAI body that the direct transport leaves out: none today, for the
# providers the direct transport serves; a field litellm starts adding shows up as a difference below.
LITELLM_ONLY_FIELDS: frozenset[str] = frozenset()


class Recorder(LoopbackServer):
    """A loopback server that keeps each request's path, headers and parsed body."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.seen: list[tuple[str, dict, dict]] = []

    async def _respond(self, method, path, headers, body, writer):
        if method == "POST":
            self.seen.append((path, headers, json.loads(body or b"{}")))
        return await super()._respond(method, path, headers, body, writer)


def run(coro):
    return asyncio.run(coro)


async def _send(transport: str, spec: LMSpec, req: LMRequest, **client_kw):
    client = LMClient(use_cache=False, transport=transport, max_retries=0, **client_kw)
    try:
        return await client.complete(spec, req)
    finally:
        await client.aclose()


def _request_for(spec: LMSpec) -> LMRequest:
    return SYSTEM_CHAT if spec.mode == "chat" else PROMPT


def _normalised(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in LITELLM_ONLY_FIELDS}


# ---------------------------------------------------------------- the same body


@pytest.mark.parametrize("model", ["openai/m", "text-completion-openai/base-m", "hosted_vllm/org/m-7b", "gpt-4o-mini"])
def test_both_transports_send_the_same_body_and_auth(model, monkeypatch):
    monkeypatch.setenv("OPENAI_ORG_ID", "org-lmc-test")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-lmc-test")
    with Recorder() as srv:
        spec = LMSpec(model, api_base=srv.url, settings=(("seed", 3), ("top_p", 0.5)))
        for transport in TRANSPORTS:
            assert run(_send(transport, spec, _request_for(spec))).text.startswith("echo:")
    (path_d, head_d, body_d), (path_l, head_l, body_l) = srv.seen
    assert path_d == path_l == ("/v1/chat/completions" if spec.mode == "chat" else "/v1/completions")
    assert _normalised(body_l) == body_d
    assert body_d["model"] == spec.wire_model and body_d["max_tokens"] == 7 and body_d["seed"] == 3
    if spec.mode == "chat":
        assert body_d["response_format"] == {"type": "json_object"} and body_d["messages"][1]["content"] == "2+2? é"
    for name in ("authorization", "content-type"):
        assert head_d[name] == head_l[name], name
    if spec.provider == "openai":  # OpenAI's SDK sends these from its variables; so does the direct transport
        assert head_d["openai-organization"] == head_l["openai-organization"] == "org-lmc-test"
        assert head_d["openai-project"] == head_l["openai-project"] == "proj-lmc-test"


def test_every_openai_model_lmc_sends_directly_gets_the_body_litellm_would_send():
    """Over litellm's whole table: each OpenAI chat or completion model is either routed to litellm (whose
    request it rewrites per model family) or gets, from the direct transport, exactly litellm's body."""
    table = model_table()
    names = sorted(
        k
        for k, v in table.items()
        if isinstance(v, dict) and v.get("mode") in ("chat", "completion") and v.get("litellm_provider") in ("openai", "text-completion-openai")
    )
    assert len(names) > 40
    direct, rerouted = [], []
    with Recorder() as srv:

        async def go():
            clients = {t: LMClient(use_cache=False, transport=t, max_retries=0) for t in TRANSPORTS}
            for name in names:
                provider = table[name]["litellm_provider"]
                spec = LMSpec(
                    name if name.startswith(provider + "/") else f"{provider}/{name}", api_base=srv.url, settings=(("seed", 3), ("top_p", 0.5))
                )
                if transport_for(spec) == "litellm":
                    rerouted.append(spec.model)
                    continue
                for t in TRANSPORTS:
                    await clients[t].complete(spec, _request_for(spec))
                direct.append(spec.model)
            for c in clients.values():
                await c.aclose()

        run(go())
    bodies = [b for _, _, b in srv.seen]
    assert len(bodies) == 2 * len(direct)
    for model, sent_direct, sent_litellm in zip(direct, bodies[0::2], bodies[1::2]):
        assert _normalised(sent_litellm) == sent_direct, model
    # The rewritten families are the reasoning models and the two that refuse response_format.
    assert {"openai/o3-mini", "openai/gpt-5-mini", "openai/gpt-4"} <= set(rerouted)
    assert {"openai/gpt-4o-mini", "openai/gpt-4.1", "text-completion-openai/gpt-3.5-turbo-instruct"} <= set(direct)


def test_the_raw_table_lookup_agrees_with_the_parsed_table_on_every_key():
    """spec.table_entry finds entries in litellm's table text without parsing it all: same answer, every key."""
    from lmc.lm.spec import table_entry

    table = model_table()
    assert len(table) > 1000
    for key, entry in table.items():
        assert table_entry(key) == (entry if isinstance(entry, dict) else None), key
    for absent in ("openai/test", "no-such-model", "input_cost_per_token", "search_context_size_low"):
        assert table_entry(absent) is None, absent  # field names of nested objects are not models


@pytest.mark.parametrize("layout", ["minified", "nested first"])
def test_the_raw_table_lookup_falls_back_to_parsing_another_layout(monkeypatch, layout):
    from lmc.lm import spec

    table = {"m-1": {"mode": "chat", "input_cost_per_token": 1e-6, "inner": {"m-2": {"mode": "no"}}}, "m-2": {"mode": "completion"}}
    text = json.dumps(table) if layout == "minified" else json.dumps(table, indent=4)
    for f in (spec._table_bytes, spec.model_table, spec._top_level_indent, spec.table_entry):
        f.cache_clear()
    monkeypatch.setattr(spec, "_table_bytes", lambda: text.encode())
    try:
        assert spec.table_entry("m-2") == {"mode": "completion"}  # not the nested "m-2"
        assert spec.table_entry("m-1")["input_cost_per_token"] == 1e-6
        assert spec.table_entry("mode") is None
    finally:
        for f in (spec.model_table, spec._top_level_indent, spec.table_entry):
            f.cache_clear()


# ---------------------------------------------------------------- the same errors

STATUS_CASES = {
    "401": dict(status_for=lambda r: (401, "Incorrect API key provided.")),
    "403": dict(status_for=lambda r: (403, "forbidden")),
    "400": dict(status_for=lambda r: (400, "model 'loop' does not support 'stop'")),
    "404": dict(status_for=lambda r: (404, "The model 'loop' does not exist")),
    "408": dict(status_for=lambda r: (408, "request timeout")),
    "413": dict(status_for=lambda r: (413, "too large")),
    "503 with Retry-After": dict(status_for=lambda r: (503, "busy", {"Retry-After": "7"})),
    "429 with an HTTP-date Retry-After": dict(faults={"429_retry_after": 1.0}, retry_after=4, retry_after_date=True),
    "307 redirect": dict(status_for=lambda r: (307, "moved", {"Location": "http://127.0.0.1:9/v1/chat/completions"})),
}


def _outcome(transport: str, model: str, server_kw: dict) -> tuple:
    """What one request through `transport` raised: class, kind, retryable, Retry-After (whole s), message."""
    with LoopbackServer(**{"timeout_sleep": 1.5, "retry_after": 3, **server_kw}) as srv:
        spec = parse_lm(model, srv.url)
        req = _request_for(spec)
        client = LMClient(use_cache=False, transport=transport, max_retries=0)

        async def go():
            try:
                result = await client._backend_for(spec).call(spec, req, 0.5)
                return ("answered", result.text == "")
            except LMError as e:
                after = getattr(e, "retry_after", None)
                return (
                    type(e).__name__,
                    getattr(e, "kind", None),
                    e.retryable,
                    None if after is None else round(after),
                    str(e).replace(srv.url, "URL"),
                )
            finally:
                await client.aclose()

        return run(go())


@pytest.mark.parametrize("case", [*FAULT_KINDS, *STATUS_CASES])
@pytest.mark.parametrize("model", ["openai/loop", "text-completion-openai/loop"])
def test_a_failure_is_classified_and_worded_the_same_on_both_transports(case, model):
    server_kw = STATUS_CASES.get(case) or {"faults": {case: 1.0}}
    direct, via_litellm = (_outcome(t, model, server_kw) for t in TRANSPORTS)
    if case == "429 with an HTTP-date Retry-After":
        # The date is whole seconds away, read at two moments: the two waits may straddle a second.
        assert direct[1] == "rate_limit" and 3 <= direct[3] <= 5 and 3 <= via_litellm[3] <= 5
        direct, via_litellm = direct[:3] + direct[4:], via_litellm[:3] + via_litellm[4:]
    assert direct == via_litellm
    if case in FAULT_KINDS and case != "empty":
        assert direct[0] == "LMTransientError"


def test_a_422_is_not_retried_on_either_transport():
    """litellm 1.106 returns nothing for a chat request answered 422 (FastAPI servers' validation error): the
    call still fails without a retry, as the direct transport's 'rejected the request (422)' does."""
    server_kw = {"status_for": lambda r: (422, "field required")}
    direct, via_litellm = (_outcome(t, "openai/loop", server_kw) for t in TRANSPORTS)
    assert direct == ("LMError", None, False, None, "openai/loop rejected the request (422): field required")
    assert via_litellm[:4] == ("LMError", None, False, None) and "rejected the request" in via_litellm[4]


@pytest.mark.parametrize("form", ["seconds", "HTTP-date"])
def test_retry_after_is_honoured_in_both_forms(transport, form):
    with LoopbackServer(faults={"429_retry_after": 1.0}, faults_per_body=1, retry_after=1.2, retry_after_date=form == "HTTP-date") as srv:
        client = LMClient(use_cache=False, retry_wait=0.01, retry_max_wait=0.05)
        start = time.perf_counter()
        assert run(client.complete(parse_lm("openai/loop", srv.url), SYSTEM_CHAT)).text
        waited = time.perf_counter() - start
        client.close()
    # seconds: 1.2 s; a date is whole seconds, so 1.2 s from now rounds up to 1-2.2 s away
    assert waited >= (1.15 if form == "seconds" else 0.9) and client.usage.retries == 1
    assert srv.requests == 2


def test_a_missing_openai_key_fails_the_same_before_any_request(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for transport in TRANSPORTS:
        with pytest.raises(LMAuthError, match=r"^no API key for openai/gpt-4o-mini; set OPENAI_API_KEY$"):
            run(_send(transport, parse_lm("openai/gpt-4o-mini"), SYSTEM_CHAT))


def test_openai_base_url_from_the_environment_is_used_by_both(monkeypatch):
    """With no --api-base, both transports send OpenAI models where OPENAI_BASE_URL says, with OPENAI_API_KEY."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-key-0001")
    with Recorder(api_key="sk-env-key-0001") as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        for transport in TRANSPORTS:
            assert run(_send(transport, parse_lm("openai/gpt-4o-mini"), SYSTEM_CHAT)).text.startswith("echo:")
    assert len(srv.seen) == 2 and srv.seen[0][2] == srv.seen[1][2]


# ---------------------------------------------------------------- the same accounting and cache


def test_usage_and_cost_are_booked_the_same(monkeypatch):
    with LoopbackServer() as srv:
        spec = parse_lm("openai/gpt-4o-mini", srv.url)  # priced in litellm's table
        usage = {}
        for transport in TRANSPORTS:
            client = LMClient(use_cache=False, transport=transport)
            res = run(client.complete(spec, SYSTEM_CHAT, tag="p"))
            usage[transport] = (res.prompt_tokens, res.completion_tokens, res.cost, client.usage.to_json())
            client.close()
    assert usage["direct"] == usage["litellm"]
    assert usage["direct"][2] > 0 and usage["direct"][3]["by_tag"]["p"]["requests"] == 1


@pytest.mark.parametrize("first,second", [("direct", "litellm"), ("litellm", "direct")])
def test_an_answer_cached_by_one_transport_is_reused_by_the_other(tmp_path, first, second):
    with LoopbackServer() as srv:
        spec = parse_lm("openai/m", srv.url)
        a = LMClient(cache_dir=tmp_path, transport=first)
        made = run(a.complete(spec, SYSTEM_CHAT))
        a.close()
        b = LMClient(cache_dir=tmp_path, transport=second)
        again = run(b.complete(spec, SYSTEM_CHAT))
        b.close()
        assert srv.requests == 1
    assert not made.cached and again.cached and again.text == made.text
    assert b.usage.requests == 0 and b.usage.cached_calls == 1


# ---------------------------------------------------------------- which transport


@pytest.mark.parametrize(
    "model,api_base,expected",
    [
        ("openai/gpt-4o-mini", None, "direct"),
        ("openai/my-llama", "http://127.0.0.1:8000/v1", "direct"),
        ("text-completion-openai/base", "http://127.0.0.1:8000/v1", "direct"),
        ("hosted_vllm/Qwen/Qwen2.5-7B", "http://127.0.0.1:8000/v1", "direct"),
        ("gpt-4o-mini", None, "direct"),
        ("openai/o3-mini", None, "litellm"),
        ("openai/gpt-5-mini", None, "litellm"),
        ("openai/gpt-5.9-future", "http://127.0.0.1:8000/v1", "litellm"),  # newer than the table: by its name
        ("openai/gpt-4", None, "litellm"),
        ("anthropic/claude-3-5-haiku-latest", None, "litellm"),
        ("ollama/llama3", "http://127.0.0.1:11434", "litellm"),
        ("azure/my-deployment", "https://x.openai.azure.com", "litellm"),
        ("bedrock/anthropic.claude-3-haiku", None, "litellm"),
    ],
)
def test_each_lm_gets_the_transport_of_its_protocol(model, api_base, expected):
    spec = parse_lm(model, api_base)
    assert transport_for(spec) == expected
    assert transport_for(spec, "litellm") == "litellm"
    if expected == "direct":
        assert transport_for(spec, "direct") == "direct"
    else:
        with pytest.raises(ConfigError, match=rf"--transport direct cannot send requests for {model}"):
            transport_for(spec, "direct")


def test_reasoning_models_are_recognised_by_table_and_name():
    assert rewritten_by_litellm("openai/o1") and rewritten_by_litellm("openai/o4-mini-2025-04-16")
    assert rewritten_by_litellm("openai/ft:o4-mini-2025-04-16:acme::x")
    assert not rewritten_by_litellm("openai/gpt-4o") and not rewritten_by_litellm("openai/gpt-4-turbo")
    assert not rewritten_by_litellm("openai/ollama-7b") and not rewritten_by_litellm("hosted_vllm/o3-mini")


def test_the_transport_setting_comes_from_flag_environment_or_config(monkeypatch):
    from lmc.config import resolve

    class Config:
        settings = {"transport": "litellm"}
        path = "lmc.yaml"

    monkeypatch.delenv("LMC_TRANSPORT", raising=False)
    assert resolve({}, None).transport is None
    assert resolve({}, Config()).transport == "litellm"
    assert resolve({}, Config(), {"LMC_TRANSPORT": "direct"}).transport == "direct"
    assert resolve({"transport": "litellm"}, None, {"LMC_TRANSPORT": "direct"}).transport == "litellm"
    with pytest.raises(ConfigError, match=r"\$LMC_TRANSPORT: 'httpx' is not a valid transport; expected direct or litellm"):
        resolve({}, None, {"LMC_TRANSPORT": "httpx"})
    monkeypatch.setenv("LMC_TRANSPORT", "litellm")
    assert LMClient(use_cache=False).transport == "litellm"
    monkeypatch.setenv("LMC_TRANSPORT", "carrier-pigeon")
    with pytest.raises(ConfigError, match=r"\$LMC_TRANSPORT: unknown transport 'carrier-pigeon'"):
        LMClient(use_cache=False)


# ---------------------------------------------------------------- nothing heavy on the request path

PROGRAM = """
signature QA = "question -> answer"
module qa = Predict(QA)
program main(question: str) -> (answer: str) { return qa(question=question) }
"""


def _run_cli_importtime(tmp_path, url: str, *extra: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    (tmp_path / "qa.lmp").write_text(PROGRAM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMC_")}
    env.update(PYTHONPATH=str(ROOT), OPENAI_API_KEY="sk-x")
    proc = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "lmc",
            "run",
            "qa.lmp",
            "-i",
            "question=hi",
            "--lm",
            "openai/test",
            "--api-base",
            url,
            "--no-cache",
            *extra,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    modules = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return proc, modules


def test_lmc_run_against_an_openai_server_never_imports_litellm(tmp_path):
    with LoopbackServer(lambda req: "<answer>4</answer>") as srv:
        proc, modules = _run_cli_importtime(tmp_path, srv.url)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(proc.stdout)["answer"] == "4"
        assert "aiohttp" in modules and not {m for m in modules if m.split(".")[0] in ("litellm", "openai")}
        # The same run through litellm does import it: the check above can see it.
        proc, modules = _run_cli_importtime(tmp_path, srv.url, "--transport", "litellm")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "litellm" in modules


# ---------------------------------------------------------------- from the command line


@pytest.mark.parametrize("source", ["default", "flag", "env", "yaml", "flag over env"])
def test_the_cli_sends_through_the_transport_it_was_told(source, tmp_path, monkeypatch, capsys):
    """Which client sent a request shows in its User-Agent: lmc's own, or OpenAI's SDK under litellm."""
    from lmc.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LMC_TRANSPORT", raising=False)
    monkeypatch.delenv("LMC_LM", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    (tmp_path / "qa.lmp").write_text(PROGRAM)
    flag: list[str] = []
    if source in ("flag", "flag over env"):
        flag = ["--transport", "litellm"]
    if source == "env":
        monkeypatch.setenv("LMC_TRANSPORT", "litellm")
    if source == "flag over env":
        monkeypatch.setenv("LMC_TRANSPORT", "direct")
    if source == "yaml":
        (tmp_path / "lmc.yaml").write_text("transport: litellm\n")
    with Recorder(lambda req: "<answer>4</answer>") as srv:
        code = main(["run", "qa.lmp", "-i", "question=2+2?", "--lm", "openai/test", "--api-base", srv.url, "--no-cache", *flag])
        out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(out.out)["answer"] == "4"
    ((_, headers, _),) = srv.seen
    expected = "lmc/" if source == "default" else "AsyncOpenAI/"
    assert headers["user-agent"].startswith(expected), headers["user-agent"]


def test_a_bad_transport_is_a_one_line_usage_error(tmp_path, monkeypatch, capsys):
    from lmc.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LMC_TRANSPORT", raising=False)
    (tmp_path / "qa.lmp").write_text(PROGRAM)
    code = main(["run", "qa.lmp", "-i", "question=hi", "--lm", "openai/test", "--api-base", "http://127.0.0.1:9/v1", "--transport", "curl"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert err == "error: --transport: 'curl' is not a valid transport; expected direct or litellm"


def test_the_artifact_is_the_same_whichever_transport_compiled_it(tmp_path, monkeypatch, capsys):
    """The transport changes nothing in what is sent or answered, so a compile records none: same bytes."""
    from lmc.cli import main
    from tests.reliability.helpers import SENTIMENT, labeled_reviews, sentiment_responder, write_jsonl

    monkeypatch.delenv("LMC_TRANSPORT", raising=False)
    monkeypatch.delenv("LMC_LM", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    write_jsonl(tmp_path / "train.jsonl", labeled_reviews(8))
    write_jsonl(tmp_path / "dev.jsonl", labeled_reviews(6, start=50))
    monkeypatch.chdir(tmp_path)
    with LoopbackServer(sentiment_responder) as srv:
        for transport in TRANSPORTS:
            code = main(
                [
                    "compile",
                    str(SENTIMENT),
                    "--train",
                    "train.jsonl",
                    "--dev",
                    "dev.jsonl",
                    "-o",
                    f"{transport}.lmc.json",
                    "--lm",
                    "openai/test",
                    "--api-base",
                    srv.url,
                    "--cache-dir",
                    f"cache-{transport}",
                    "--optimizer",
                    "bootstrap",
                    "--transport",
                    transport,
                ]
            )
            assert code == 0, capsys.readouterr().err
    direct, via_litellm = ((tmp_path / f"{t}.lmc.json").read_bytes() for t in TRANSPORTS)
    assert direct == via_litellm and b"transport" not in direct


class Proxy(LoopbackServer):
    """A forward proxy for plain HTTP: it records each absolute-form request line and answers it itself."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.targets: list[str] = []

    async def _respond(self, method, path, headers, body, writer):
        self.targets.append(path)
        if path.startswith("http://"):
            path = "/" + path.split("/", 3)[3]
        return await super()._respond(method, path, headers, body, writer)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_both_transports_honour_the_proxy_variables(tmp_path, transport):
    """HTTP_PROXY sends the request through the proxy, NO_PROXY exempts a host: as httpx (under litellm) does."""
    (tmp_path / "qa.lmp").write_text(PROGRAM)
    with Proxy(lambda req: "<answer>via proxy</answer>") as proxy, LoopbackServer(lambda req: "<answer>direct</answer>") as target:
        answers = []
        for no_proxy in ("", "127.0.0.1"):
            env = {k: v for k, v in os.environ.items() if not k.startswith("LMC_") and "proxy" not in k.lower()}
            env.update(
                PYTHONPATH=str(ROOT), OPENAI_API_KEY="sk-x", LMC_TRANSPORT=transport, HTTP_PROXY=f"http://127.0.0.1:{proxy.port}", NO_PROXY=no_proxy
            )
            proc = subprocess.run(
                [sys.executable, "-m", "lmc", "run", "qa.lmp", "-i", "question=hi", "--lm", "openai/test", "--api-base", target.url, "--no-cache"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode == 0, proc.stderr[-2000:]
            answers.append(json.loads(proc.stdout)["answer"])
        assert answers == ["via proxy", "direct"]
        assert proxy.targets == [target.url + "/chat/completions"] and target.requests == 1
