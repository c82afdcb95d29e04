"""The LM client: litellm and direct HTTP backends, disk cache, retries, concurrency, budgets and accounting."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
import math
import os
import random
import socket
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from lmc.budget import ErrorLimit, Ledger, Price, parse_error_limit
from lmc.errors import (ConfigError, LMAuthError, LMError, LMFailure, LMRedirectError, LMUnreachableError,
                        Warnings)

log = logging.getLogger("lmc.lm")

# Bump when the meaning of a cached entry changes (request canonicalisation, stored fields).
CACHE_VERSION = 1

# Providers accepted without importing litellm (its import costs ~3 s); anything else is
# checked against litellm's own provider list.
_KNOWN_PROVIDERS = frozenset({
    "openai", "text-completion-openai", "anthropic", "azure", "azure_text", "ollama", "ollama_chat",
    "gemini", "vertex_ai", "groq", "together_ai", "mistral", "hosted_vllm", "openrouter", "deepseek",
    "bedrock", "cohere", "cohere_chat", "huggingface", "fireworks_ai", "perplexity", "xai", "cerebras",
    "lm_studio", "llamafile", "deepinfra", "anyscale", "replicate", "databricks", "sambanova",
})

# Where a provider's key lives by litellm's conventions; used in messages, never to read more than that one name.
_KEY_ENV = {
    "openai": "OPENAI_API_KEY", "text-completion-openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY",
    "azure": "AZURE_API_KEY", "azure_text": "AZURE_API_KEY", "gemini": "GEMINI_API_KEY", "groq": "GROQ_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY", "mistral": "MISTRAL_API_KEY", "openrouter": "OPENROUTER_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY", "cohere": "COHERE_API_KEY", "cohere_chat": "COHERE_API_KEY",
    "huggingface": "HF_TOKEN", "fireworks_ai": "FIREWORKS_AI_API_KEY", "perplexity": "PERPLEXITYAI_API_KEY",
    "xai": "XAI_API_KEY", "cerebras": "CEREBRAS_API_KEY", "deepinfra": "DEEPINFRA_API_KEY",
    "replicate": "REPLICATE_API_KEY", "sambanova": "SAMBANOVA_API_KEY", "hosted_vllm": "HOSTED_VLLM_API_KEY",
}

# OpenAI-compatible providers that, given an api_base, are served by the direct HTTP path.
_OPENAI_COMPATIBLE = frozenset({"openai", "text-completion-openai", "hosted_vllm"})
_COMPLETION_PREFIXES = ("local/", "text-completion-openai/", "text-completion-codestral/", "azure_text/")
_REQUEST_FIELDS = ("temperature", "max_tokens", "stop")
_DUMMY_KEY = "sk-no-key-required"
# A lone 5xx, connection dropped mid-answer, torn body or empty completion is most often one bad request,
# not a provider asking us to slow down: its backoff starts at a fifth of the base wait (0.1 s by default)
# and doubles from there. Rate limits, timeouts and refused connections (a server down or restarting)
# start from the full base.
_ONE_OFF_KINDS = frozenset({"server", "bad_body", "empty"})
MAX_RETRY_AFTER = 60.0


# ---------------------------------------------------------------- litellm, loaded lazily


_LITELLM_WARM = False  # set after the process's first litellm call


@lru_cache(maxsize=1)
def _litellm() -> Any:
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
    for name in ("callbacks", "success_callback", "failure_callback", "_async_success_callback",
                 "_async_failure_callback", "input_callback", "service_callback"):
        if isinstance(getattr(litellm, name, None), list):
            setattr(litellm, name, [])
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "openai"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return litellm


@lru_cache(maxsize=1)
def _model_table() -> dict:
    """litellm's bundled model/price table, read as JSON without importing litellm."""
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(list(spec.submodule_search_locations)[0]) / "model_prices_and_context_window_backup.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def model_info(model: str) -> dict | None:
    """litellm's table entry for a model string, trying it whole and without its provider prefix."""
    table = _model_table()
    if model in table:
        return table[model]
    _, _, bare = model.partition("/")
    if bare and bare in table:
        entry = table[bare]
        provider = model.split("/", 1)[0]
        if entry.get("litellm_provider") in (provider, None) or provider in ("openai", "text-completion-openai"):
            return entry
    return None


def _provider(model: str) -> str:
    if "/" in model:
        return model.split("/", 1)[0]
    info = model_info(model)
    return (info or {}).get("litellm_provider", "openai")


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class LMSpec:
    """A configured LM: what --lm, an `lm` alias or lmc.yaml resolves to."""

    model: str
    api_base: str | None = None
    api_key_env: str | None = None  # the NAME of the env var holding the key; the key is never stored
    settings: tuple[tuple[str, object], ...] = ()

    @property
    def provider(self) -> str:
        return _provider(self.model)

    @property
    def mode(self) -> str:
        return _mode(self.model)

    @property
    def is_local(self) -> bool:
        return self.model.startswith("local/")

    @property
    def key_env(self) -> str | None:
        """The env var that holds (or would hold) the key, for messages."""
        return self.api_key_env or _KEY_ENV.get(self.provider)

    def setting(self, name: str, default: object = None) -> object:
        return dict(self.settings).get(name, default)

    def to_json(self) -> dict:
        return {"model": self.model, "api_base": self.api_base, "api_key_env": self.api_key_env,
                "settings": {k: v for k, v in self.settings}}

    @classmethod
    def from_json(cls, data: dict) -> "LMSpec":
        settings = data.get("settings") or {}
        return cls(data["model"], data.get("api_base"), data.get("api_key_env"),
                   tuple(sorted((k, _freeze(v)) for k, v in settings.items())))


def _freeze(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


@lru_cache(maxsize=256)
def _mode(model: str) -> str:
    if model.startswith(_COMPLETION_PREFIXES):
        return "completion"
    info = model_info(model)
    if info is not None and info.get("mode") == "completion":
        return "completion"
    return "chat"


def parse_lm(text: str, api_base: str | None = None, *, api_key_env: str | None = None,
             settings: dict | None = None) -> LMSpec:
    """An `--lm` value such as "openai/gpt-4o-mini" or "local/gemma-3-270m" as an LMSpec."""
    model = (text or "").strip()
    if not model or any(c.isspace() for c in model):
        raise ConfigError(f"bad LM '{text}'; expected 'provider/model', e.g. 'openai/gpt-4o-mini' or 'local/gemma-3-270m'")
    if "/" in model:
        provider = model.split("/", 1)[0]
        if not model.split("/", 1)[1]:
            raise ConfigError(f"LM '{model}' names no model after '{provider}/'")
        if provider == "local":
            from lmc.local import LOCAL_MODELS

            if model not in LOCAL_MODELS:
                raise ConfigError(f"unknown local model '{model}'; expected one of: {', '.join(sorted(LOCAL_MODELS))}")
        elif provider not in _KNOWN_PROVIDERS:
            known = _litellm_providers()
            if provider not in known:
                raise ConfigError(f"unknown LM provider '{provider}' in '{model}'; expected one of: {', '.join(sorted(known))}")
    elif model_info(model) is None:
        raise ConfigError(f"LM '{model}' names no provider; write it as 'provider/model', e.g. 'openai/{model}'")
    frozen = tuple(sorted((k, _freeze(v)) for k, v in (settings or {}).items()))
    return LMSpec(model, api_base, api_key_env, frozen)


def _litellm_providers() -> list[str]:
    try:
        from litellm.types.utils import LlmProviders

        return sorted({p.value for p in LlmProviders} | {"local"})
    except Exception:  # noqa: BLE001 - no litellm: only the built-in list can be offered
        return sorted(_KNOWN_PROVIDERS | {"local"})


@dataclass(frozen=True)
class LMRequest:
    """One LM call: chat messages or a completion prompt, plus the settings that change the answer."""

    messages: tuple[dict, ...] | None = None
    prompt: str | None = None
    temperature: float = 0.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    sample: int = 0  # index of a repeated sample, so n samples at temperature > 0 differ in the cache
    json_mode: bool = False
    # The reply must be one of these strings (a literal-union output).  Backends that can
    # constrain decoding (the embedded model, through a grammar) do; others ignore it and the
    # reply is parsed as usual.
    choices: tuple[str, ...] = ()

    def canonical(self, model: str, extra: dict | None = None) -> dict:
        settings = {"temperature": float(self.temperature), "max_tokens": int(self.max_tokens),
                    "stop": list(self.stop), "json_mode": bool(self.json_mode)}
        settings.update(extra or {})
        if self.choices:  # only when set, so existing cache keys stay valid
            settings["choices"] = list(self.choices)
        body: dict = {"v": CACHE_VERSION, "model": model, "settings": settings, "sample": int(self.sample)}
        if self.messages is not None:
            body["messages"] = [dict(m) for m in self.messages]
        if self.prompt is not None:
            body["prompt"] = self.prompt
        return body

    def cache_key(self, model: str, extra: dict | None = None) -> str:
        """sha256 of the canonical request; never includes a key or an api_base."""
        text = json.dumps(self.canonical(model, extra), sort_keys=True, ensure_ascii=False,
                          separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_request(spec: LMSpec, *, messages: list[dict] | tuple[dict, ...] | None = None, prompt: str | None = None,
                 **overrides: object) -> LMRequest:
    """An LMRequest whose temperature/max_tokens/stop default to the spec's settings, then `overrides`."""
    values: dict = {k: v for k, v in spec.settings if k in _REQUEST_FIELDS}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "stop" in values:
        stop = values["stop"]
        values["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
    return LMRequest(messages=tuple(messages) if messages is not None else None, prompt=prompt, **values)


@dataclass
class LMResult:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cached: bool = False
    latency_s: float = 0.0
    finish_reason: str | None = None
    warnings: tuple[str, ...] = ()


@dataclass
class Usage:
    """Call accounting.

    `calls` counts every answered call and `cached_calls` those the cache served; `requests`
    counts every request sent to an LM (first tries, retries and failures; never a cache hit),
    `failed_requests` those that brought back no usable answer, `retries` the requests that
    repeated an earlier one, and `errors` the calls that failed after their retries.
    `requests == live_calls + failed_requests` always holds.  `cost` is what the requests
    cost (a request that timed out or broke off mid-answer counts at its worst case, since
    the provider may have billed it).
    """

    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    retries: int = 0
    errors: int = 0
    requests: int = 0
    failed_requests: int = 0
    by_tag: dict[str, "Usage"] = field(default_factory=dict)

    @property
    def live_calls(self) -> int:
        return self.calls - self.cached_calls

    def _each(self, tag: str) -> list["Usage"]:
        if not tag:
            return [self]
        sub = self.by_tag.get(tag)
        if sub is None:
            sub = self.by_tag[tag] = Usage()
        return [self, sub]

    def add_result(self, tag: str, result: LMResult) -> None:
        for u in self._each(tag):
            u.calls += 1
            if result.cached:
                u.cached_calls += 1
            else:
                u.prompt_tokens += result.prompt_tokens
                u.completion_tokens += result.completion_tokens

    def add_request(self, tag: str, *, failed: bool, cost: float = 0.0) -> None:
        for u in self._each(tag):
            u.requests += 1
            u.failed_requests += int(failed)
            u.cost += cost

    def add_retry(self, tag: str) -> None:
        for u in self._each(tag):
            u.retries += 1

    def add_error(self, tag: str) -> None:
        for u in self._each(tag):
            u.errors += 1

    def to_json(self) -> dict:
        out: dict[str, Any] = {"calls": self.calls, "cached_calls": self.cached_calls, "prompt_tokens": self.prompt_tokens,
               "completion_tokens": self.completion_tokens, "cost": round(self.cost, 8), "retries": self.retries,
               "errors": self.errors, "requests": self.requests, "failed_requests": self.failed_requests}
        if self.by_tag:
            out["by_tag"] = {k: v.to_json() for k, v in sorted(self.by_tag.items())}
        return out


# The Usage of the example being run, for requests made outside `LMClient.complete` (embeddings);
# set by the interpreter around each example, copied into the tasks it starts.
current_meter: contextvars.ContextVar[Usage | None] = contextvars.ContextVar("lmc_current_meter", default=None)


class LMTransientError(LMError):
    """A failure worth retrying: rate limit, 5xx, timeout, connection, bad body, empty completion."""

    def __init__(self, message: str, *, kind: str, model: str | None = None, retry_after: float | None = None):
        super().__init__(message, model=model, retryable=True)
        self.kind = kind
        self.retry_after = retry_after


class Backend(Protocol):
    async def call(self, spec: LMSpec, req: LMRequest, timeout: float) -> LMResult: ...


# ---------------------------------------------------------------- cache


class DiskCache:
    """One JSON file per key, written to a temp file then renamed, so concurrent processes never see half a file."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        try:
            entry = json.loads(raw)
            payload = entry["payload"]
            blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
            if entry.get("v") != CACHE_VERSION or entry.get("sum") != hashlib.sha256(blob).hexdigest():
                raise ValueError("checksum")
            if not isinstance(payload.get("text"), str) or not payload["text"]:
                raise ValueError("empty")
            return payload
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("discarding corrupt cache entry %s", path)
            try:
                path.unlink()
            except OSError:
                pass
            return None

    def put(self, key: str, payload: dict) -> None:
        path = self._path(key)
        try:
            blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
        except ValueError as e:
            log.warning("cannot write cache entry %s: %s", path, e)
            return
        entry = {"v": CACHE_VERSION, "sum": hashlib.sha256(blob).hexdigest(), "payload": payload}
        try:
            from .files import atomic_write_bytes

            atomic_write_bytes(path, json.dumps(entry, sort_keys=True, allow_nan=False).encode(), fsync=False)
        except ValueError as e:  # a NaN in the payload: JSON cannot hold it, so the entry is not kept
            log.warning("cannot write cache entry %s: %s", path, e)
        except OSError as e:  # a full or read-only disk costs a cache write, never the call
            log.warning("cannot write cache entry %s: %s", path, e)


# ---------------------------------------------------------------- secrets


def _resolve_key(spec: LMSpec) -> str | None:
    """The key to pass explicitly, or None to let litellm read its own env conventions."""
    if spec.api_key_env:
        key = os.environ.get(spec.api_key_env)
        if key:
            return key
        if spec.api_base is None:
            raise LMAuthError(f"no API key for {spec.model}; set {spec.api_key_env}", model=spec.model)
    conventional = _KEY_ENV.get(spec.provider)
    if spec.api_base and spec.provider in _OPENAI_COMPATIBLE:
        # Loopback and self-hosted servers take any key; the SDKs refuse to send none.
        return os.environ.get(conventional or "", "") or _DUMMY_KEY
    return None


def _scrub(text: str, secrets: list[str]) -> str:
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


def _secrets(spec: LMSpec, key: str | None) -> list[str]:
    out = [key] if key else []
    for name in (spec.api_key_env, _KEY_ENV.get(spec.provider)):
        if name and os.environ.get(name):
            out.append(os.environ[name])
    return [s for s in out if s != _DUMMY_KEY]


def _where(spec: LMSpec) -> str:
    return spec.api_base or spec.provider


def _one_line(text: object, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _parse_retry_after(value: object) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(str(value).strip())
    except ValueError:
        return None  # an HTTP date: fall back to backoff rather than parse clocks
    return max(0.0, min(seconds, MAX_RETRY_AFTER)) if math.isfinite(seconds) else None


def _classify_status(spec: LMSpec, status: int, message: str, retry_after: float | None = None) -> LMError:
    """The lmc error for an HTTP status with the provider's message (already scrubbed)."""
    model = spec.model
    if status in (401, 403):
        hint = f"check {spec.key_env}" if spec.key_env else "check the API key"
        return LMAuthError(f"authentication failed for {model}; {hint}", model=model)
    if status == 429:
        return LMTransientError(f"rate limited by {_where(spec)} for {model}: {message}", kind="rate_limit",
                                model=model, retry_after=retry_after)
    if status == 408 or status >= 500:
        return LMTransientError(f"{_where(spec)} answered {status} for {model}: {message}", kind="server",
                                model=model, retry_after=retry_after)
    return LMError(f"{model} rejected the request ({status}): {message}", model=model)


# ---------------------------------------------------------------- backends


class LiteLLMBackend:
    """Every provider through litellm; on request (`direct=True`), OpenAI-compatible api_base servers by plain HTTP.

    Measured on 2 cores against the loopback server (bench/bench_lm_overhead.py): litellm's
    call wrapper (logging objects, cost calculators, the OpenAI SDK's request transforms)
    adds 3-5 ms of CPU per call and reaches 30-43% of ideal throughput at 64 in flight, while the
    direct POST adds under 0.1 ms over a bare aiohttp round trip and reaches ~92% of the
    best possible. The direct POST is opt-in (LMC_DIRECT_HTTP=1): by default every call goes through litellm.
    """

    def __init__(self, *, direct: bool = False, pool: int = 100):
        self.direct = direct
        self.pool = pool
        self._sessions: dict[int, Any] = {}

    # -------------------------------------------------------- dispatch

    async def call(self, spec: LMSpec, req: LMRequest, timeout: float) -> LMResult:
        key = _resolve_key(spec)
        secrets = _secrets(spec, key)
        try:
            if self.direct and spec.api_base and spec.provider in _OPENAI_COMPATIBLE:
                return await self._direct(spec, req, timeout, key)
            return await self._litellm(spec, req, timeout, key, secrets)
        except LMError as e:
            if secrets and any(s in e.message for s in secrets):
                e.message = _scrub(e.message, secrets)
                e.args = (e.message,)
            raise

    def _params(self, spec: LMSpec, req: LMRequest) -> dict:
        params: dict = {"temperature": req.temperature, "max_tokens": req.max_tokens}
        if req.stop:
            params["stop"] = list(req.stop)
        for k, v in spec.settings:
            if k not in _REQUEST_FIELDS and k not in ("json_mode",):
                params[k] = list(v) if isinstance(v, tuple) else v
        if req.json_mode and spec.mode == "chat":
            params["response_format"] = {"type": "json_object"}
        return params

    # -------------------------------------------------------- direct HTTP

    def _session(self) -> Any:
        import aiohttp

        loop = asyncio.get_running_loop()
        held = self._sessions.get(id(loop))
        if held is not None and held[0] is loop and not held[1].closed:
            return held[1]
        self._drop_dead_sessions()
        connector = aiohttp.TCPConnector(limit=self.pool, keepalive_timeout=30, ttl_dns_cache=300)
        session = aiohttp.ClientSession(connector=connector, trust_env=False)
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

    async def _direct(self, spec: LMSpec, req: LMRequest, timeout: float, key: str | None) -> LMResult:
        import aiohttp

        chat = spec.mode == "chat"
        assert spec.api_base is not None  # the direct path is taken only with an api_base (see call)
        body = {"model": spec.model.split("/", 1)[1], **self._params(spec, req)}
        if chat:
            body["messages"] = list(req.messages or ())
            url = spec.api_base.rstrip("/") + "/chat/completions"
        else:
            body["prompt"] = req.prompt or ""
            url = spec.api_base.rstrip("/") + "/completions"
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode()
        session = self._session()
        start = time.perf_counter()
        try:
            # Never follow a redirect: it would carry the prompt (and, to the same origin, the key) elsewhere.
            async with session.post(url, data=data, headers=headers, allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = _parse_retry_after(resp.headers.get("Retry-After"))
                location = resp.headers.get("Location", "")
        except asyncio.TimeoutError:
            raise LMTransientError(f"{_where(spec)} timed out after {timeout:g}s for {spec.model}",
                                   kind="timeout", model=spec.model) from None
        except aiohttp.ClientConnectorError as e:
            raise LMTransientError(f"cannot connect to {_where(spec)} for {spec.model}: {_one_line(e.strerror or e)}",
                                   kind="connection", model=spec.model) from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
            raise LMTransientError(f"{_where(spec)} broke the connection for {spec.model}: {_one_line(type(e).__name__)}",
                                   kind="bad_body", model=spec.model) from None
        except aiohttp.ClientError as e:
            raise LMTransientError(f"request to {_where(spec)} failed for {spec.model}: {_one_line(e)}",
                                   kind="connection", model=spec.model) from None
        latency = time.perf_counter() - start
        if 300 <= status < 400:
            raise _redirect_error(spec, status, location)
        if status != 200:
            raise _classify_status(spec, status, _error_message(raw), retry_after)
        try:
            payload = json.loads(raw)
            choice = payload["choices"][0]
            text = choice["message"].get("content") if chat else choice.get("text")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise LMTransientError(f"{_where(spec)} sent an unreadable body for {spec.model}: {_one_line(raw[:120])}",
                                   kind="bad_body", model=spec.model) from None
        usage = payload.get("usage") or {}
        pt, ct = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        return LMResult(text=text or "", prompt_tokens=pt, completion_tokens=ct, cost=_table_cost(spec.model, pt, ct),
                        latency_s=latency, finish_reason=choice.get("finish_reason"))

    # -------------------------------------------------------- litellm

    async def _litellm(self, spec: LMSpec, req: LMRequest, timeout: float, key: str | None,
                       secrets: list[str]) -> LMResult:
        global _LITELLM_WARM
        litellm = _litellm()
        kwargs = {"model": spec.model, "timeout": timeout, "max_retries": 0, "num_retries": 0,
                  **self._params(spec, req)}
        if spec.api_base:
            kwargs["api_base"] = spec.api_base
        if key:
            kwargs["api_key"] = key
        from .netguard import refuse_redirects

        start = time.perf_counter()
        redirects: list = []
        try:
            # litellm's aiohttp transport does not always enforce `timeout`: under load a response 1.5 s late
            # was accepted with timeout=1 (tests/reliability/test_faults.py). The deadline is ours as well,
            # except on the process's first litellm call, whose lazy imports take ~0.5 s of CPU.
            # httpx (under every litellm provider) keeps headers such as x-api-key on a redirect to
            # another host: no redirect is followed at all.
            with refuse_redirects() as redirects:
                async with asyncio.timeout(timeout if _LITELLM_WARM else None):
                    if spec.mode == "chat":
                        resp = await litellm.acompletion(messages=list(req.messages or ()), **kwargs)
                        choice = resp.choices[0]
                        text = choice.message.content
                    else:
                        resp = await litellm.atext_completion(prompt=req.prompt or "", **kwargs)
                        choice = resp.choices[0]
                        text = choice.text
        except LMError:
            raise
        except Exception as e:  # noqa: BLE001 - every litellm failure is mapped to an lmc error below
            if redirects:
                raise _redirect_error(spec, None, redirects[0]) from None
            raise _from_litellm(spec, e, timeout, secrets) from None
        finally:
            _LITELLM_WARM = True
        latency = time.perf_counter() - start
        usage = getattr(resp, "usage", None)
        pt = int(getattr(usage, "prompt_tokens", 0) or 0)
        ct = int(getattr(usage, "completion_tokens", 0) or 0)
        hidden = getattr(resp, "_hidden_params", None) or {}
        cost = hidden.get("response_cost") if isinstance(hidden, dict) else None
        if not isinstance(cost, (int, float)):
            cost = _table_cost(spec.model, pt, ct)
        return LMResult(text=text or "", prompt_tokens=pt, completion_tokens=ct, cost=float(cost or 0.0),
                        latency_s=latency, finish_reason=getattr(choice, "finish_reason", None))

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        for lid, (owner, session) in list(self._sessions.items()):
            if owner is loop:
                await session.close()
                del self._sessions[lid]
        self._drop_dead_sessions()
        if _litellm.cache_info().currsize:
            try:  # litellm keeps its own HTTP clients per loop; close them with ours
                from litellm.llms.custom_httpx.async_client_cleanup import close_litellm_async_clients

                await close_litellm_async_clients()
            except Exception:  # noqa: BLE001 - cleanup is best effort
                pass

    def close(self) -> None:
        for lid, (owner, session) in list(self._sessions.items()):
            if not owner.is_closed() and not owner.is_running():
                owner.run_until_complete(session.close())
                del self._sessions[lid]
        self._drop_dead_sessions()


def _redirect_error(spec: LMSpec, status: int | None, location: str) -> LMRedirectError:
    where = _one_line(location, 120) if location else "another address"
    answered = f"answered {status}, a redirect" if status else "answered with a redirect"
    return LMRedirectError(f"{_where(spec)} {answered} to {where}, for {spec.model}; lmc does not follow redirects, "
                           "so neither your request nor your key goes to another address",
                           model=spec.model, hint="point --api-base at the final URL")


def _error_message(raw: bytes) -> str:
    try:
        err = json.loads(raw)
        msg = err.get("error", err)
        if isinstance(msg, dict):
            msg = msg.get("message", msg)
        return _one_line(msg)
    except (ValueError, AttributeError):
        return _one_line(raw[:200].decode("utf-8", "replace"))


def _table_cost(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    info = model_info(model)
    if not info:
        return 0.0
    try:
        return (prompt_tokens * float(info.get("input_cost_per_token") or 0.0)
                + completion_tokens * float(info.get("output_cost_per_token") or 0.0))
    except (TypeError, ValueError):
        return 0.0


def _causes(e: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen and len(out) < 20:
        seen.add(id(cur))
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def _caused_by_timeout(e: BaseException) -> bool:
    names = {"APITimeoutError", "ReadTimeout", "ConnectTimeout", "TimeoutException", "ServerTimeoutError"}
    return any(type(c).__name__ in names or isinstance(c, TimeoutError) for c in _causes(e)[1:])


def _caused_by_connection_failure(e: BaseException) -> bool:
    """litellm reports a refused connection as a 500 'Connection error.'; the cause chain tells the truth."""
    names = {"ClientConnectorError", "ConnectError", "ClientConnectionError"}
    for c in _causes(e):
        if type(c).__name__ in names or isinstance(c, (ConnectionRefusedError, socket.gaierror)):
            return True
    return False


def _from_litellm(spec: LMSpec, e: Exception, timeout: float, secrets: list[str]) -> LMError:
    """Map a litellm/openai exception to an lmc error, scrubbing any secret from its text."""
    litellm = _litellm()
    message = _scrub(_one_line(getattr(e, "message", None) or str(e) or type(e).__name__), secrets)
    status = getattr(e, "status_code", None)
    headers = None
    response = getattr(e, "response", None)
    if response is not None:
        headers = getattr(response, "headers", None)
    headers = headers or getattr(e, "litellm_response_headers", None) or {}
    try:
        retry_after = _parse_retry_after(headers.get("retry-after") or headers.get("Retry-After"))
    except AttributeError:
        retry_after = None
    if isinstance(e, litellm.Timeout) or isinstance(e, asyncio.TimeoutError) or _caused_by_timeout(e):
        return LMTransientError(f"{_where(spec)} timed out after {timeout:g}s for {spec.model}", kind="timeout",
                                model=spec.model)
    if _caused_by_connection_failure(e):
        return LMTransientError(f"cannot connect to {_where(spec)} for {spec.model}: {message}", kind="connection",
                                model=spec.model)
    if isinstance(e, (litellm.AuthenticationError, litellm.PermissionDeniedError)):
        return _classify_status(spec, 401, message)
    if isinstance(e, litellm.RateLimitError):
        return _classify_status(spec, 429, message, retry_after)
    if isinstance(e, litellm.APIConnectionError):
        lowered = message.lower()
        kind = "connection" if any(w in lowered for w in ("connect", "refused", "resolve", "unreachable")) else "bad_body"
        return LMTransientError(f"cannot reach {_where(spec)} for {spec.model}: {message}", kind=kind, model=spec.model)
    if isinstance(status, int) and (status >= 500 or status == 429):
        # The status decides: litellm may raise BadRequestError for a 503 whose body says "invalid request".
        return _classify_status(spec, status, message, retry_after)
    if isinstance(e, (litellm.BadRequestError, litellm.NotFoundError)):
        return LMError(f"{spec.model} rejected the request: {message}", model=spec.model)
    if isinstance(status, int) and status >= 400:
        return _classify_status(spec, status, message, retry_after)
    if isinstance(e, (litellm.InternalServerError, litellm.ServiceUnavailableError, litellm.APIError)):
        return LMTransientError(f"{_where(spec)} failed for {spec.model}: {message}", kind="server", model=spec.model)
    if isinstance(e, (ValueError, KeyError, TypeError)):
        return LMTransientError(f"{_where(spec)} sent an unreadable body for {spec.model}: {message}",
                                kind="bad_body", model=spec.model)
    return LMError(f"{spec.model} call failed: {message}", model=spec.model)


# ---------------------------------------------------------------- the client


class _RateLimiter:
    """Spaces call starts evenly at `rpm` per minute."""

    def __init__(self, rpm: float):
        self.interval = 60.0 / rpm
        self.next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        slot = max(now, self.next)
        self.next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"{name} must be 0 or more, got {raw}")
    return value


class LMClient:
    """Cached, retried, rate-limited and accounted LM calls; one per process run."""

    def __init__(self, *, cache_dir: str | os.PathLike | None = ".lmc/cache", use_cache: bool = True,
                 concurrency: int = 8, rpm: float | None = None, timeout: float | None = None,
                 max_retries: int | None = None,
                 backend: Backend | None = None, max_calls: int | None = None, max_cost: float | None = None,
                 retry_wait: float | None = None, retry_max_wait: float | None = None,
                 direct_http: bool | None = None, price: Price | None = None,
                 max_lm_errors: ErrorLimit | str | None = None):
        # Unset knobs come from the environment (LMC_TIMEOUT, LMC_MAX_RETRIES, LMC_RETRY_WAIT,
        # LMC_RETRY_MAX_WAIT), then the built-in defaults.
        timeout = _env_number("LMC_TIMEOUT", 60.0) if timeout is None else timeout
        max_retries = int(_env_number("LMC_MAX_RETRIES", 6)) if max_retries is None else max_retries
        retry_wait = _env_number("LMC_RETRY_WAIT", 0.5) if retry_wait is None else retry_wait
        retry_max_wait = _env_number("LMC_RETRY_MAX_WAIT", 30.0) if retry_max_wait is None else retry_max_wait
        self.cache = DiskCache(cache_dir) if (use_cache and cache_dir is not None) else None
        self.concurrency = max(1, int(concurrency))
        self.rpm = rpm
        self.timeout = timeout
        self.max_retries = max(0, int(max_retries))
        # Caps are reserved per request before it is sent (lmc/budget.py).
        self.ledger = Ledger(max_calls, max_cost, price)
        # None: failed calls only fail their examples (`lmc run`); compile and eval set a limit.
        self.error_limit = parse_error_limit(max_lm_errors) if isinstance(max_lm_errors, str) else max_lm_errors
        self.retry_wait = retry_wait
        self.retry_max_wait = retry_max_wait
        self.backend = backend
        if direct_http is None:
            # Every call goes through litellm unless the user opts in to the plain-HTTP path for
            # OpenAI-compatible servers (LMC_DIRECT_HTTP=1): it costs ~0.01 ms per call where
            # litellm costs 3-5 ms, which matters for throughput against a local server.
            direct_http = os.environ.get("LMC_DIRECT_HTTP", "").lower() in ("1", "true", "yes")
        self._remote = LiteLLMBackend(direct=direct_http, pool=max(100, self.concurrency)) if backend is None else None
        self._local: Any = None
        self.usage = Usage()
        self.warnings = Warnings()
        self.last_error: LMError | None = None
        self._fatal: LMError | None = None  # once set (auth refused, unreachable, too many failures) nothing is sent
        self._last_request_error: str | None = None
        self._refused_requests = 0  # requests the LM answered with an error or a broken answer (not cancelled ones)
        self._loop_id: int | None = None
        self._sem: asyncio.Semaphore | None = None
        self._limiter: _RateLimiter | None = None

    # -------------------------------------------------------- helpers

    def _backend_for(self, spec: LMSpec) -> Backend:
        if self.backend is not None:
            return self.backend
        if spec.is_local:
            if self._local is None:
                from lmc.local import local_backend

                self._local = local_backend()
            return self._local
        assert self._remote is not None
        return self._remote

    def _loop_state(self) -> tuple[asyncio.Semaphore, _RateLimiter | None]:
        # A semaphore belongs to one event loop; a client reused across asyncio.run() calls gets fresh ones.
        loop_id = id(asyncio.get_running_loop())
        if self._sem is None or self._loop_id != loop_id:
            self._loop_id = loop_id
            self._sem = asyncio.Semaphore(self.concurrency)
            self._limiter = _RateLimiter(self.rpm) if self.rpm else None
        return self._sem, self._limiter

    def _extra(self, spec: LMSpec) -> dict | None:
        extra = {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.settings
                 if k not in _REQUEST_FIELDS and k != "json_mode"}
        return extra or None

    def _normalise(self, spec: LMSpec, req: LMRequest) -> LMRequest:
        # The prompt builder decides by spec.mode; this only keeps a mismatch from crashing.
        if spec.mode == "chat" and req.messages is None:
            return LMRequest(messages=({"role": "user", "content": req.prompt or ""},), temperature=req.temperature,
                             max_tokens=req.max_tokens, stop=req.stop, sample=req.sample, json_mode=req.json_mode)
        if spec.mode == "completion" and req.prompt is None:
            text = "\n\n".join(str(m.get("content", "")) for m in req.messages or ())
            return LMRequest(prompt=text, temperature=req.temperature, max_tokens=req.max_tokens, stop=req.stop,
                             sample=req.sample, json_mode=False)
        return req

    @property
    def max_calls(self) -> int | None:
        return self.ledger.max_calls

    @property
    def max_cost(self) -> float | None:
        return self.ledger.max_cost

    def check_prices(self, specs) -> None:
        """Refuse now a --max-cost over an LM whose price is unknown (see lmc/budget.py)."""
        self.ledger.check_prices(specs)

    def _failed(self, e: LMError) -> LMError:
        """Note a call that failed after its retries; the error to raise (a run-stopping one once the limit is passed)."""
        if e is self._fatal:
            return e
        self.last_error = e
        if isinstance(e, (LMAuthError, LMUnreachableError, LMFailure)):
            self._fatal = self._fatal or e
            return e
        limit = self.error_limit
        if limit is not None and limit.exceeded(self.usage.live_calls, self.usage.errors):
            self._fatal = LMFailure(self._failure_message(f"over --max-lm-errors {limit.text}"), model=e.model)
            return self._fatal
        return e

    def _failure_message(self, why: str) -> str:
        u = self.usage
        tried = u.live_calls + u.errors
        text = (f"{u.errors} of {tried} LM calls failed ({why}); {u.requests} requests sent, "
                f"{u.failed_requests} failed")
        if self.last_error is not None:
            text += f"; last error: {self.last_error.message}"
        return text

    def check_health(self) -> None:
        """Raise LMFailure when every call that reached an LM failed, or more than the error limit allows.

        Compile and eval call this before writing anything, so a run built on failed calls
        never leaves a result that looks successful; what was answered stays cached.
        """
        if self._fatal is not None:
            raise self._fatal
        u = self.usage
        # Requests cancelled by the run itself (an example's time limit, Ctrl-C) are not the LM failing.
        if u.live_calls == 0 and (u.errors or self._refused_requests):
            why = (f"every LM request failed: {self._refused_requests} sent, none answered" if not u.errors else
                   f"every LM call failed: {u.errors} calls, {u.requests} requests, none answered")
            if self.last_error is not None:
                why += f"; last error: {self.last_error.message}"
            elif self._last_request_error:
                why += f"; last error: {self._last_request_error}"
            raise LMFailure(why)
        limit = self.error_limit
        if limit is not None and limit.exceeded(u.live_calls, u.errors):
            raise LMFailure(self._failure_message(f"over --max-lm-errors {limit.text}"))

    def _wait_for(self, exc: BaseException, attempt: int) -> float:
        after = getattr(exc, "retry_after", None)
        if after is not None:
            return min(float(after), MAX_RETRY_AFTER)
        start = self.retry_wait
        if getattr(exc, "kind", "") in _ONE_OFF_KINDS:
            start = self.retry_wait / 5
        base = min(self.retry_max_wait, start * (2 ** (attempt - 1)))
        return base * (0.5 + random.random() * 0.5)  # jitter keeps concurrent retries from marching in step

    # -------------------------------------------------------- calls

    async def complete(self, spec: LMSpec, req: LMRequest, *, tag: str = "", meter: Usage | None = None) -> LMResult:
        """One call: from the cache, or sent (and retried) within the caps.

        `meter`, when given, receives the same accounting as the client's own usage: the
        interpreter passes one per example, so an example reports every request it caused
        (backtracking repeats and parse repairs included).
        """
        req = self._normalise(spec, req)
        key = req.cache_key(spec.model, self._extra(spec)) if self.cache is not None else ""
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                result = LMResult(text=hit["text"], prompt_tokens=int(hit.get("prompt_tokens", 0)),
                                  completion_tokens=int(hit.get("completion_tokens", 0)), cost=0.0, cached=True,
                                  finish_reason=hit.get("finish_reason"))
                self.usage.add_result(tag, result)
                if meter is not None:
                    meter.add_result("", result)
                return result
        if self._fatal is not None:
            raise self._fatal
        try:
            result = await self._call_with_retries(spec, req, tag, meter)
        except LMError as e:
            if e is not self._fatal:  # not merely stopped because another call found the LM refusing or gone
                self.usage.add_error(tag)
                if meter is not None:
                    meter.add_error("")
            raise self._failed(e) from None
        for w in result.warnings:
            self.warnings.add(w)
        if self.cache is not None and result.text:
            self.cache.put(key, {"text": result.text, "prompt_tokens": result.prompt_tokens,
                                 "completion_tokens": result.completion_tokens, "finish_reason": result.finish_reason,
                                 "model": spec.model})
        self.usage.add_result(tag, result)
        if meter is not None:
            meter.add_result("", result)
        return result

    async def _attempt(self, backend: Backend, spec: LMSpec, req: LMRequest, limiter: _RateLimiter | None,
                       tag: str = "", meter: Usage | None = None, retry: bool = False) -> LMResult:
        if limiter is not None:
            await limiter.wait()
        if self._fatal is not None:  # another call found the LM refusing or gone while this one waited
            raise self._fatal
        hold = self.ledger.reserve(self.usage, spec, req)
        if retry:  # counted once the retry is really sent, so retries == requests - first tries
            self.usage.add_retry(tag)
            if meter is not None:
                meter.add_retry("")
        failed, cost = True, 0.0
        try:
            result = await backend.call(spec, req, self.timeout)
            cost = self.ledger.charge(spec, result, hold)
            result.cost = cost
            if not result.text or not result.text.strip():
                if spec.is_local:  # sampled with a seed fixed per request: asking again gives the same nothing
                    raise LMError(f"{spec.model} returned an empty completion", model=spec.model)
                raise LMTransientError(f"{spec.model} returned an empty completion", kind="empty", model=spec.model)
            failed = False
            return result
        except LMError as e:
            if getattr(e, "kind", "") in ("timeout", "bad_body"):
                cost = hold.cost  # the server may have done (and billed) the work
            self._last_request_error = e.message
            self._refused_requests += 1
            raise
        except BaseException:
            cost = hold.cost  # cancelled in flight: it may have been sent and billed
            raise
        finally:
            self.ledger.release(hold)
            self.usage.add_request(tag, failed=failed, cost=cost)
            if meter is not None:
                meter.add_request("", failed=failed, cost=cost)

    async def _call_with_retries(self, spec: LMSpec, req: LMRequest, tag: str, meter: Usage | None = None) -> LMResult:
        backend = self._backend_for(spec)
        sem, limiter = self._loop_state()
        # First try outside tenacity: most calls succeed, and its per-call set-up is a measurable cost.
        # A call holds its concurrency slot only while a request is in flight, never while it waits to retry.
        try:
            async with sem:
                return await self._attempt(backend, spec, req, limiter, tag, meter)
        except LMError as e:
            if not e.retryable or self.max_retries == 0:
                if e.retryable:
                    raise self._final_error(spec, e, 1) from None
                raise
            first = e
        return await self._retry(backend, spec, req, limiter, tag, first, sem, meter)

    async def _retry(self, backend: Backend, spec: LMSpec, req: LMRequest, limiter: _RateLimiter | None,
                     tag: str, first: LMError, sem: asyncio.Semaphore, meter: Usage | None = None) -> LMResult:
        from tenacity import AsyncRetrying, RetryError, retry_if_exception, stop_after_attempt

        attempts = self.max_retries + 1
        await asyncio.sleep(self._wait_for(first, 1))

        def wait(state) -> float:
            return self._wait_for(state.outcome.exception(), state.attempt_number + 1)

        retrying = AsyncRetrying(stop=stop_after_attempt(attempts - 1), wait=wait,
                                 retry=retry_if_exception(lambda e: isinstance(e, LMError) and e.retryable),
                                 reraise=False)
        try:
            async for attempt in retrying:
                with attempt:
                    async with sem:
                        return await self._attempt(backend, spec, req, limiter, tag, meter, retry=True)
        except RetryError as e:
            raise self._final_error(spec, e.last_attempt.exception(), attempts) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _final_error(self, spec: LMSpec, last: BaseException | None, attempts: int) -> LMError:
        kind = getattr(last, "kind", "")
        text = getattr(last, "message", None) or str(last)
        if kind in ("connection", "timeout"):
            return LMUnreachableError(f"cannot reach {_where(spec)} for {spec.model} after {attempts} attempts: {text}",
                                      model=spec.model)
        if kind == "empty":
            return LMError(f"{spec.model} returned an empty completion {attempts} times", model=spec.model)
        return LMError(f"{spec.model} failed after {attempts} attempts: {text}", model=spec.model)

    @contextlib.contextmanager
    def embedding_request(self, model: str, texts: list[str]):
        """Count one embeddings request against the caps and in the accounting, like any LM request.

        Yields a dict; set its "prompt_tokens" from the provider's usage so the spend is exact
        (otherwise a priced model is charged the request's worst case)."""
        if self._fatal is not None:
            raise self._fatal
        spec = LMSpec(model)
        hold = self.ledger.reserve(self.usage, spec, LMRequest(prompt="\n".join(texts), max_tokens=0))
        meter = current_meter.get()
        box: dict = {"prompt_tokens": None}
        failed, cost = True, hold.cost
        try:
            yield box
            failed = False
            price = self.ledger.price_of(spec)
            if box["prompt_tokens"] is not None and price is not None:
                cost = price.cost(int(box["prompt_tokens"]), 0)
        finally:
            self.ledger.release(hold)
            for u in (self.usage, meter):
                if u is None:
                    continue
                u.add_request("", failed=failed, cost=cost)
                if not failed:
                    u.add_result("", LMResult(text="", prompt_tokens=int(box["prompt_tokens"] or 0)))

    # -------------------------------------------------------- sizes

    def count_tokens(self, spec: LMSpec, text: str) -> int:
        """Exact for the local model (its tokenizer), about len/4 for the rest."""
        if spec.is_local:
            counter = getattr(self._backend_for(spec), "count_tokens", None)
            if counter is not None:
                return int(counter(text))
        return _estimate(text)

    def context_window(self, spec: LMSpec) -> int | None:
        """The model's input window in tokens, or None when litellm's table does not know it."""
        if spec.is_local:
            from lmc.local import LOCAL_N_CTX

            return int(getattr(self._backend_for(spec), "n_ctx", LOCAL_N_CTX))
        info = model_info(spec.model)
        if not info:
            return None
        value = info.get("max_input_tokens") or info.get("max_tokens")
        return int(value) if isinstance(value, (int, float)) else None

    # -------------------------------------------------------- lifecycle

    async def aclose(self) -> None:
        if self._remote is not None:
            await self._remote.aclose()

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()


def _estimate(text: str) -> int:
    return (len(text) + 3) // 4
