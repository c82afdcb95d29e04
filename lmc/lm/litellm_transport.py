"""The litellm transport: every provider litellm speaks, its failures mapped onto `failures.py` like the direct transport's.

litellm is imported on the first call through it (~3 s of imports), never for an LM the
direct transport serves (see spec.transport_for).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from functools import lru_cache
from typing import Any

from lmc.errors import LMError
from lmc.lm.call import LMRequest, LMResult, openai_fields, unwrap
from lmc.lm.constraint import WIRE_KEYS
from lmc.lm.endpoint import resolve_key, scrub, secrets_of
from lmc.lm.failures import (
    LMTransientError,
    body_message,
    broken_error,
    causes,
    connect_error,
    error_message,
    one_line,
    parse_retry_after,
    redirect_error,
    status_error,
    timeout_error,
    unreadable_error,
    where,
)
from lmc.lm.spec import LMSpec, table_cost
from lmc.netguard import RedirectRefused, refuse_redirects

_WARM = False  # set after the process's first litellm call
# "litellm.RateLimitError: RateLimitError: OpenAIException - " before a provider's message.
_LITELLM_PREFIX = re.compile(r"^litellm\.\w+:\s*(\w+:\s*)?\w*Exception\s*-\s*")


@lru_cache(maxsize=1)
def load_litellm() -> Any:
    """Import litellm once, with its telemetry, callbacks, logging and network price fetch off."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    import warnings

    # Its pydantic models warn about ReadOnly TypedDict items on first use: noise to a user.
    warnings.filterwarnings("ignore", message=".*ReadOnly.*", category=UserWarning)
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.set_verbose = False
    # No callback is registered, so nothing is logged; redaction would only deep-copy every request (~0.6 ms/call).
    litellm.turn_off_message_logging = False
    litellm.disable_token_counter = True
    litellm.disable_streaming_logging = True
    litellm.disable_end_user_cost_tracking = True
    litellm.disable_add_user_agent_to_request_tags = True
    litellm.drop_params = True  # e.g. response_format on a provider that lacks it: drop, don't fail
    litellm.num_retries = 0  # retries are ours
    # Its aiohttp transport is kept (the default): httpx's connection pool scans every pooled connection per
    # request, which at 64 in flight cost more CPU than the rest of the call (bench/bench_lm_overhead.py).
    for name in (
        "callbacks",
        "success_callback",
        "failure_callback",
        "_async_success_callback",
        "_async_failure_callback",
        "input_callback",
        "service_callback",
    ):
        if isinstance(getattr(litellm, name, None), list):
            setattr(litellm, name, [])
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "openai"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return litellm


class LiteLLMTransport:
    """Every provider through litellm.acompletion / atext_completion, with lmc's deadline and no redirects."""

    async def call(self, spec: LMSpec, req: LMRequest, timeout: float) -> LMResult:
        key = resolve_key(spec)
        secrets = secrets_of(spec, key)
        try:
            return await self._send(spec, req, timeout, key, secrets)
        except LMError as e:
            if secrets and any(s in e.message for s in secrets):
                e.message = scrub(e.message, secrets)
                e.args = (e.message,)
            raise

    async def _send(self, spec: LMSpec, req: LMRequest, timeout: float, key: str | None, secrets: list[str]) -> LMResult:
        global _WARM
        litellm = load_litellm()
        kwargs = {"model": spec.model, "timeout": timeout, "max_retries": 0, "num_retries": 0, **openai_fields(spec, req)}
        # A constraint's fields are not OpenAI parameters: litellm passes them on only inside extra_body.
        extra = {k: kwargs.pop(k) for k in WIRE_KEYS if k in kwargs}
        if extra:
            kwargs["extra_body"] = extra
        if spec.api_base:
            kwargs["api_base"] = spec.api_base
        if key:
            kwargs["api_key"] = key
        start = asyncio.get_running_loop().time()
        refused: list = []
        try:
            # litellm's aiohttp transport does not always enforce `timeout`: under load a response 1.5 s late
            # was accepted with timeout=1 (tests/reliability/test_faults.py). The deadline is ours as well,
            # except on the process's first litellm call, whose lazy imports take ~0.5 s of CPU.
            # httpx (under every litellm provider) keeps headers such as x-api-key on a redirect to
            # another host: no redirect is followed at all.
            with refuse_redirects() as refused:
                async with asyncio.timeout(timeout if _WARM else None):
                    if spec.mode == "chat":
                        resp = await litellm.acompletion(messages=list(req.messages or ()), **kwargs)
                    else:
                        resp = await litellm.atext_completion(prompt=req.prompt or "", **kwargs)
        except LMError:
            raise
        except Exception as e:  # noqa: BLE001 - every litellm failure is mapped to an lmc error below
            if refused:
                guard = next((c for c in causes(e) if isinstance(c, RedirectRefused)), None)
                raise redirect_error(spec, guard.status if guard else None, refused[0]) from None
            raise classify(spec, e, timeout, secrets) from None
        finally:
            _WARM = True
        latency = asyncio.get_running_loop().time() - start
        if resp is None:  # litellm 1.106 returns nothing when a server answers a chat request with 422
            raise LMError(f"{spec.model} rejected the request: litellm returned no answer (a 422 from {where(spec)} does that)", model=spec.model)
        try:
            choice = resp.choices[0]
            text = choice.message.content if spec.mode == "chat" else choice.text
        except (AttributeError, IndexError, TypeError):
            raise unreadable_error(spec, one_line(repr(resp), 120)) from None
        usage = getattr(resp, "usage", None)
        pt = int(getattr(usage, "prompt_tokens", 0) or 0)
        ct = int(getattr(usage, "completion_tokens", 0) or 0)
        return LMResult(
            text=unwrap(req, text or ""),
            prompt_tokens=pt,
            completion_tokens=ct,
            cost=_cost(spec, resp, pt, ct),
            latency_s=latency,
            finish_reason=getattr(choice, "finish_reason", None),
        )

    async def aclose(self) -> None:
        if load_litellm.cache_info().currsize:
            try:  # litellm keeps its own HTTP clients per loop; close them with ours
                from litellm.llms.custom_httpx.async_client_cleanup import close_litellm_async_clients

                await close_litellm_async_clients()
            except Exception:  # noqa: BLE001 - cleanup is best effort
                pass

    def close(self) -> None:
        pass


def _cost(spec: LMSpec, resp: Any, prompt_tokens: int, completion_tokens: int) -> float:
    """The table's price, as the direct transport books it; litellm's own figure only for models the table lacks."""
    cost = table_cost(spec.model, prompt_tokens, completion_tokens)
    if cost:
        return cost
    hidden = getattr(resp, "_hidden_params", None) or {}
    theirs = hidden.get("response_cost") if isinstance(hidden, dict) else None
    return float(theirs) if isinstance(theirs, (int, float)) else 0.0


# ---------------------------------------------------------------- failures


def _response_of(e: BaseException) -> Any:
    try:
        return getattr(e, "response", None)
    except Exception:  # noqa: BLE001 - openai's exceptions raise on .response when there was none
        return None


def _header(e: BaseException, name: str) -> str | None:
    response = _response_of(e)
    headers = getattr(response, "headers", None) or getattr(e, "litellm_response_headers", None) or {}
    try:
        return headers.get(name.lower()) or headers.get(name)
    except AttributeError:
        return None


def _provider_message(e: BaseException, secrets: list[str]) -> str:
    """The provider's own error message, as the direct transport reads it from the body; scrubbed."""
    for c in causes(e):
        body = getattr(c, "body", None)  # OpenAI's SDK keeps the parsed error body here
        if isinstance(body, dict):
            return scrub(error_message(body), secrets)
    for c in causes(e):
        response = _response_of(c)
        try:
            content = getattr(response, "content", None) if response is not None else None
        except Exception:  # noqa: BLE001 - httpx raises on a streamed body that was not read
            content = None
        if isinstance(content, (bytes, bytearray)) and content:
            return scrub(body_message(content), secrets)
    text = getattr(e, "message", None) or str(e) or type(e).__name__
    return scrub(one_line(_LITELLM_PREFIX.sub("", str(text))), secrets)


def _is(e: BaseException, names: set[str]) -> bool:
    return any(type(c).__name__ in names for c in causes(e))


def classify(spec: LMSpec, e: Exception, timeout: float, secrets: list[str]) -> LMError:
    """Map a litellm/openai/httpx exception to the lmc error the direct transport raises for the same failure."""
    litellm = load_litellm()
    if isinstance(e, (litellm.Timeout, asyncio.TimeoutError)) or any(
        isinstance(c, TimeoutError) or type(c).__name__ in _TIMEOUTS for c in causes(e)[1:]
    ):
        return timeout_error(spec, timeout)
    if _is(e, _CONNECT_FAILURES) or any(isinstance(c, ConnectionRefusedError) for c in causes(e)):
        return connect_error(spec, e)
    if _is(e, _BROKEN):
        return broken_error(spec)
    undecoded = next((c for c in causes(e) if isinstance(c, json.JSONDecodeError)), None)
    if undecoded is not None:  # litellm calls a 200 with an HTML body a 500; the body is what failed
        return unreadable_error(spec, scrub(str(undecoded.doc)[:120], secrets))
    status = getattr(e, "status_code", None)
    response = _response_of(e)
    if isinstance(status, int) and 400 <= status < 600 and response is not None and getattr(response, "status_code", None) == status:
        # A real HTTP answer: classified by its status alone, as the direct transport does (litellm may
        # call a 503 whose body says "invalid request" a BadRequestError).
        return status_error(spec, status, _provider_message(e, secrets), parse_retry_after(_header(e, "Retry-After")))
    if isinstance(e, (litellm.AuthenticationError, litellm.PermissionDeniedError)):
        return status_error(spec, 401, "")
    if isinstance(e, litellm.RateLimitError):
        return status_error(spec, 429, _provider_message(e, secrets), parse_retry_after(_header(e, "Retry-After")))
    if _is(e, _UNREADABLE) or isinstance(e, (ValueError, KeyError, TypeError)):
        return unreadable_error(spec, _provider_message(e, secrets))
    if isinstance(e, litellm.APIConnectionError):
        return LMTransientError(f"cannot reach {where(spec)} for {spec.model}: {_provider_message(e, secrets)}", kind="connection", model=spec.model)
    if isinstance(status, int) and status >= 400:
        return status_error(spec, status, _provider_message(e, secrets), parse_retry_after(_header(e, "Retry-After")))
    if isinstance(e, (litellm.InternalServerError, litellm.ServiceUnavailableError, litellm.APIError)):
        return LMTransientError(f"{where(spec)} failed for {spec.model}: {_provider_message(e, secrets)}", kind="server", model=spec.model)
    return LMError(f"{spec.model} call failed: {_provider_message(e, secrets)}", model=spec.model)


_TIMEOUTS = {"APITimeoutError", "ReadTimeout", "ConnectTimeout", "TimeoutException", "ServerTimeoutError", "WriteTimeout", "PoolTimeout"}
_CONNECT_FAILURES = {"ClientConnectorError", "ClientConnectorDNSError", "ConnectError"}
_BROKEN = {
    "ServerDisconnectedError",
    "ClientPayloadError",
    "RemoteProtocolError",
    "ReadError",
    "ContentLengthError",
    "TransferEncodingError",
    "IncompleteRead",
}
_UNREADABLE = {"JSONDecodeError", "APIResponseValidationError", "ValidationError"}
