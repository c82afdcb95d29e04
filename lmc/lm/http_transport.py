"""lmc's own transport for the OpenAI chat and completions protocol: one pooled aiohttp session per event loop.

Measured on 2 cores against the loopback server (bench/bench_lm_overhead.py), a call costs
~0.2 ms of CPU over a bare aiohttp round trip, where litellm's wrapper (logging objects,
parameter mapping, cost calculation, the OpenAI SDK's request transforms) costs 3-5 ms; at 64
calls in flight that is the difference between ~90% and ~30% of the ideal throughput.  It
sends the body litellm would send for the same request (tests/test_transports.py compares
them at the server) and classifies failures with `failures.py`, as the litellm transport does.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

from lmc.errors import LMError
from lmc.lm.call import LMRequest, LMResult, echoed_logprobs, openai_fields, unwrap
from lmc.lm.endpoint import base_url, openai_headers, resolve_key, scrub, secrets_of
from lmc.lm.failures import (
    body_message,
    broken_error,
    connect_error,
    parse_retry_after,
    redirect_error,
    status_error,
    timeout_error,
    unreadable_error,
)
from lmc.lm.spec import LMSpec, table_cost

_USER_AGENT = "lmc/0.1 (aiohttp)"


class HTTPTransport:
    """Sends OpenAI-protocol requests with aiohttp; never follows a redirect, never keeps cookies."""

    def __init__(self, pool: int = 100):
        self.pool = pool
        self._sessions: dict[int, tuple[asyncio.AbstractEventLoop, Any]] = {}
        self._timeouts: dict[float, Any] = {}
        self._proxies: dict[str, str | None] = {}

    # -------------------------------------------------------- sessions

    def _session(self) -> Any:
        loop = asyncio.get_running_loop()
        held = self._sessions.get(id(loop))
        if held is not None and held[0] is loop and not held[1].closed:
            return held[1]
        import aiohttp

        self._drop_dead_sessions()
        connector = aiohttp.TCPConnector(limit=self.pool, keepalive_timeout=30, ttl_dns_cache=300)
        # trust_env=False: proxies are read once per host below, and no ~/.netrc lookup runs per request.
        session = aiohttp.ClientSession(connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent",))
        self._sessions[id(loop)] = (loop, session)
        return session

    def _drop_dead_sessions(self) -> None:
        # A session outlives the asyncio.run() that made it; its sockets go with the closed loop.
        for lid, (loop, session) in list(self._sessions.items()):
            if loop.is_closed():
                if session.connector is not None:
                    waiter = session.connector.close()  # closes now; the awaitable only waits, which a dead loop cannot
                    if asyncio.iscoroutine(waiter):
                        waiter.close()
                del self._sessions[lid]

    def _timeout(self, seconds: float) -> Any:
        held = self._timeouts.get(seconds)
        if held is None:
            import aiohttp

            held = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return held

    def _proxy(self, url: str) -> str | None:
        """The proxy the environment names for this URL (HTTPS_PROXY, NO_PROXY, ...), as httpx would use; once per base."""
        if url not in self._proxies:
            scheme, _, rest = url.partition("://")
            host = rest.split("/", 1)[0]
            proxies = urllib.request.getproxies_environment()
            bypass = bool(urllib.request.proxy_bypass(host)) if proxies else True
            self._proxies[url] = None if bypass else proxies.get(scheme.lower())
        return self._proxies[url]

    # -------------------------------------------------------- one call

    async def call(self, spec: LMSpec, req: LMRequest, timeout: float) -> LMResult:
        key = resolve_key(spec)
        try:
            return await self._post(spec, req, timeout, key)
        except LMError as e:
            secrets = secrets_of(spec, key)
            if secrets and any(s in e.message for s in secrets):
                e.message = scrub(e.message, secrets)
                e.args = (e.message,)
            raise

    async def _post(self, spec: LMSpec, req: LMRequest, timeout: float, key: str | None) -> LMResult:
        import aiohttp

        chat = spec.mode == "chat"
        base = base_url(spec)
        body = {"model": spec.wire_model, **openai_fields(spec, req)}
        if chat:
            body["messages"] = list(req.messages or ())
            url = base + "/chat/completions"
        else:
            body["prompt"] = req.prompt or ""
            url = base + "/completions"
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": _USER_AGENT, **openai_headers(spec, key)}
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        session = self._session()
        start = time.perf_counter()
        try:
            # Never follow a redirect: it would carry the prompt (and, to the same origin, the key) elsewhere.
            async with session.post(
                url, data=data, headers=headers, allow_redirects=False, timeout=self._timeout(timeout), proxy=self._proxy(base)
            ) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                location = resp.headers.get("Location", "")
        except asyncio.TimeoutError:
            raise timeout_error(spec, timeout) from None
        except aiohttp.ClientConnectorError as e:
            raise connect_error(spec, e) from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            raise broken_error(spec) from None
        except aiohttp.ClientError as e:
            raise connect_error(spec, e) from None
        latency = time.perf_counter() - start
        if 300 <= status < 400:
            raise redirect_error(spec, status, location)
        if status != 200:
            raise status_error(spec, status, body_message(raw), parse_retry_after(retry_after))
        try:
            payload = json.loads(raw)
            choice = payload["choices"][0]
            text = choice["message"].get("content") if chat else choice.get("text")
            usage = payload.get("usage") or {}
            pt, ct = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            logprobs = echoed_logprobs(choice) if req.echo else ()
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise unreadable_error(spec, raw[:120]) from None
        return LMResult(
            text=unwrap(req, text or ""),
            prompt_tokens=pt,
            completion_tokens=ct,
            cost=table_cost(spec.model, pt, ct),
            latency_s=latency,
            finish_reason=choice.get("finish_reason"),
            token_logprobs=logprobs,
        )

    # -------------------------------------------------------- lifecycle

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        for lid, (owner, session) in list(self._sessions.items()):
            if owner is loop:
                await session.close()
                del self._sessions[lid]
        self._drop_dead_sessions()

    def close(self) -> None:
        for lid, (owner, session) in list(self._sessions.items()):
            if not owner.is_closed() and not owner.is_running():
                owner.run_until_complete(session.close())
                del self._sessions[lid]
        self._drop_dead_sessions()
