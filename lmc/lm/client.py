"""The LM client: cache, retries with backoff, concurrency, rate limit, hard caps and accounting over any transport."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from dataclasses import dataclass, replace
from typing import Any, Protocol

from lmc.budget import ErrorLimit, Ledger, Price, parse_error_limit
from lmc.errors import LMAuthError, LMError, LMFailure, LMUnreachableError, Warnings
from lmc.lm.cache import DiskCache
from lmc.lm.call import LMRequest, LMResult, extra_settings, fit_mode
from lmc.lm.dialect import Endpoints, label_logprob
from lmc.lm.failures import MAX_RETRY_AFTER, ONE_OFF_KINDS, empty_error, settled, where
from lmc.lm.http_transport import HTTPTransport
from lmc.lm.litellm_transport import LiteLLMTransport
from lmc.lm.local import local_backend
from lmc.lm.spec import LOCAL_N_CTX, LMSpec, check_transport, env_number, model_info, table_price, transport_for
from lmc.lm.usage import PROBE_TAG, Usage, current_meter
from lmc.telemetry import NO_TELEMETRY


class Backend(Protocol):
    """What the client sends requests through: a transport, the embedded model, or a test's fake."""

    async def call(self, spec: LMSpec, req: LMRequest, timeout: float) -> LMResult: ...


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


@dataclass(frozen=True)
class _Send:
    """The requests of one call: where they go, the slots and rate they wait for, the key their answer is cached
    under ("" for a probe) and the accounts they enter (the client's usage under the call's tag, and the
    caller's meter when given)."""

    backend: Backend
    spec: LMSpec
    req: LMRequest
    sem: asyncio.Semaphore
    limiter: _RateLimiter | None
    key: str
    books: tuple[tuple[Usage, str], ...]

    @property
    def probe(self) -> bool:
        return any(tag == PROBE_TAG for _, tag in self.books)


class LMClient:
    """Cached, retried, rate-limited and accounted LM calls; one per process run."""

    def __init__(
        self,
        *,
        cache_dir: str | os.PathLike | None = ".lmc/cache",
        use_cache: bool = True,
        concurrency: int = 8,
        rpm: float | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        backend: Backend | None = None,
        max_calls: int | None = None,
        max_cost: float | None = None,
        retry_wait: float | None = None,
        retry_max_wait: float | None = None,
        transport: str | None = None,
        price: Price | None = None,
        max_lm_errors: ErrorLimit | str | None = None,
        constraints: str | None = None,
    ):
        # Unset knobs come from the environment (LMC_TIMEOUT, LMC_MAX_RETRIES, LMC_RETRY_WAIT,
        # LMC_RETRY_MAX_WAIT), then the built-in defaults.
        timeout = env_number("LMC_TIMEOUT", 60.0) if timeout is None else timeout
        max_retries = int(env_number("LMC_MAX_RETRIES", 6, whole=True)) if max_retries is None else max_retries
        retry_wait = env_number("LMC_RETRY_WAIT", 0.5) if retry_wait is None else retry_wait
        retry_max_wait = env_number("LMC_RETRY_MAX_WAIT", 30.0) if retry_max_wait is None else retry_max_wait
        self.cache = DiskCache(cache_dir) if (use_cache and cache_dir is not None) else None
        self.concurrency = max(1, int(concurrency))
        self.rpm = rpm
        self.timeout = timeout
        self.max_retries = max(0, int(max_retries))
        # Caps are reserved per request before it is sent (lmc/budget.py).
        self.ledger = Ledger(max_calls, max_cost, price, table_price)
        # None: failed calls only fail their examples (`lmc run`); compile and eval set a limit.
        self.error_limit = parse_error_limit(max_lm_errors) if isinstance(max_lm_errors, str) else max_lm_errors
        self.retry_wait = retry_wait
        self.retry_max_wait = retry_max_wait
        self.backend = backend  # when given (tests, embedders), every call goes to it
        # None: each LM gets the transport that speaks its protocol (lmc/lm/spec.py, transport_for).
        if transport is None and os.environ.get("LMC_TRANSPORT", "").strip():
            transport = check_transport(os.environ["LMC_TRANSPORT"], "$LMC_TRANSPORT")
        self.transport = check_transport(transport)
        self._direct = HTTPTransport(pool=max(100, self.concurrency))
        self._litellm = LiteLLMTransport()
        self._local: Any = None
        self.usage = Usage()
        self._asked: set[str] = set()  # cache keys asked so far, kept when the ledger counts cached answers
        self.warnings = Warnings()
        self.last_error: LMError | None = None
        self._fatal: LMError | None = None  # once set (auth refused, unreachable, too many failures) nothing is sent
        self._last_request_error: str | None = None
        self._refused_requests = 0  # requests the LM answered with an error or a broken answer (not cancelled ones)
        self._loop_id: int | None = None
        self._sem: asyncio.Semaphore | None = None
        self._limiter: _RateLimiter | None = None
        # What each OpenAI-compatible endpoint understands (constraint dialect, log-probabilities), probed once.
        self.endpoints = Endpoints(self._probe_send, self.cache, constraints, replay=lambda n: self.ledger.replay(self.usage, n))
        # OpenTelemetry spans of every call, when the run exports them (lmc/telemetry.py); off by default.
        self.telemetry: Any = NO_TELEMETRY

    # -------------------------------------------------------- helpers

    def _backend_for(self, spec: LMSpec) -> Backend:
        if self.backend is not None:
            return self.backend
        if spec.is_local:
            if self._local is None:
                self._local = local_backend()
            return self._local
        return self._direct if transport_for(spec, self.transport) == "direct" else self._litellm

    def check_transports(self, specs) -> None:
        """Refuse now (ConfigError) an LM the chosen --transport cannot serve, before any call."""
        if self.backend is None:
            for spec in specs:
                if not spec.is_local:
                    transport_for(spec, self.transport)

    def _loop_state(self) -> tuple[asyncio.Semaphore, _RateLimiter | None]:
        # A semaphore belongs to one event loop; a client reused across asyncio.run() calls gets fresh ones.
        loop_id = id(asyncio.get_running_loop())
        if self._sem is None or self._loop_id != loop_id:
            self._loop_id = loop_id
            self._sem = asyncio.Semaphore(self.concurrency)
            self._limiter = _RateLimiter(self.rpm) if self.rpm else None
        return self._sem, self._limiter

    def _books(self, tag: str, meter: Usage | None) -> tuple[tuple[Usage, str], ...]:
        """The accounts a call enters: the client's usage under its tag, and the caller's meter (an example's) when given."""
        return ((self.usage, tag),) if meter is None else ((self.usage, tag), (meter, ""))

    def _send(self, spec: LMSpec, req: LMRequest, key: str, books: tuple[tuple[Usage, str], ...]) -> _Send:
        sem, limiter = self._loop_state()
        return _Send(self._backend_for(spec), spec, req, sem, limiter, key, books)

    @property
    def max_calls(self) -> int | None:
        return self.ledger.max_calls

    def calls_left(self) -> int | None:
        """What --max-calls still allows (None: no cap), counting requests in flight and, in compile, cached answers."""
        return self.ledger.calls_left(self.usage)

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
        text = f"{u.errors} of {tried} LM calls failed ({why}); {u.requests} requests sent, {u.failed_requests} failed"
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
            why = (
                f"every LM request failed: {self._refused_requests} sent, none answered"
                if not u.errors
                else f"every LM call failed: {u.errors} calls, {u.requests} requests, none answered"
            )
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
        if getattr(exc, "kind", "") in ONE_OFF_KINDS:
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
        req = fit_mode(spec, req)
        with self.telemetry.lm_call(spec, req) as span:
            result = await self._complete(spec, req, tag, meter)
            span.lm_result(result)
            return result

    async def _complete(self, spec: LMSpec, req: LMRequest, tag: str, meter: Usage | None) -> LMResult:
        if (req.choices or req.shape) and self.on_server(spec) and not req.wire:
            # A server decodes under the constraint only in a dialect it speaks, and scores labels only
            # when it echoes log-probabilities; the embedded model and test backends do both themselves.
            endpoint = await self.endpoints.of(spec)
            if req.rank:
                # Each label costs a whole echoed prompt on a server: worth it only where no constraint would
                # hold the reply to a label, or when the program asks for scores (score_labels=true).
                score = endpoint.logprobs and (endpoint.dialect == "none" or req.rank_on_server)
                ranked = await self._rank_remote(spec, req, tag, meter) if score else None
                if ranked is not None:
                    return ranked
                if not endpoint.logprobs:
                    self.warnings.add(f"{spec.model} returns no log-probabilities: labels decoded, not scored")
                elif endpoint.dialect != "none":
                    self.warnings.add(
                        f"{spec.model}: labels decoded under the server's {endpoint.dialect} constraint, not scored "
                        "(score_labels=true scores each label, one echoed request of the whole prompt per label)"
                    )
                req = replace(req, rank=False)
            if endpoint.dialect != "none":
                req = replace(req, wire=endpoint.dialect)
        key = req.cache_key(spec.model, extra_settings(spec)) if self.cache is not None else ""
        cached = self._cached(key, tag, meter)
        if cached is not None:
            return cached
        if self._fatal is not None:
            raise self._fatal
        books = self._books(tag, meter)
        try:
            return await self._call_with_retries(self._send(spec, req, key, books))
        except LMError as e:
            if e is not self._fatal:  # not merely stopped because another call found the LM refusing or gone
                for usage, t in books:
                    usage.add_error(t)
            raise self._failed(e) from None

    def _cached(self, key: str, tag: str, meter: Usage | None) -> LMResult | None:
        if self.cache is None:
            return None
        hit = self.cache.get(key)
        if self.ledger.count_cached and key not in self._asked:
            # The first ask of a key in this compile is what a cold cache sends; a repeat is a hit either way.
            if hit is not None:
                self.ledger.replay(self.usage)
            self._asked.add(key)
        if hit is None:
            return None
        result = _from_cache(hit)
        for usage, t in self._books(tag, meter):
            usage.add_result(t, result)
        return result

    def on_server(self, spec: LMSpec) -> bool:
        """Whether calls to `spec` go to a server (whose constraint dialect and log-probabilities lmc probes)."""
        return self.backend is None and not spec.is_local

    async def _rank_remote(self, spec: LMSpec, req: LMRequest, tag: str, meter: Usage | None) -> LMResult | None:
        """Score each label on a server: the prompt plus the label, echoed with log-probabilities (one request
        per label, each cached and counted); None when a reply holds no scores for the label's tokens."""
        prompt = req.prompt or ""
        scores, results = [], []
        for label in req.choices:
            text = f"{prompt} {label}"
            result = await self.complete(spec, LMRequest(prompt=text, max_tokens=1, echo=True), tag=tag, meter=meter)
            got = label_logprob(result, len(prompt), len(text))
            if got is None:
                return None
            scores.append((label, got[0], got[1]))
            results.append(result)
        best = max(scores, key=lambda s: s[1])[0]
        return LMResult(
            text=best,
            prompt_tokens=sum(r.prompt_tokens for r in results),
            completion_tokens=0,
            cost=sum(r.cost for r in results),
            cached=all(r.cached for r in results),
            latency_s=sum(r.latency_s for r in results),
            finish_reason="stop",
            label_scores=tuple(scores),
        )

    async def _probe_send(self, spec: LMSpec, req: LMRequest) -> LMResult | None:
        """One probe request, counted, capped, retried and traced like any; None when the endpoint refused it
        (or failed it every time: what it does not answer, it is taken not to take)."""
        with self.telemetry.lm_call(spec, req) as span:
            span.set(**{"lmc.probe": True})
            try:
                result = await self._call_with_retries(self._send(spec, req, "", ((self.usage, PROBE_TAG),)))
            except LMUnreachableError as e:
                raise self._failed(e) from None  # as for any call: the calls waiting behind it fail at once
            except (LMAuthError, LMFailure):
                raise
            except LMError as e:
                span.fail(e)
                return None
            span.lm_result(result)
            return result

    async def _attempt(self, send: _Send, retry: bool = False) -> LMResult:
        """One request, sent in a concurrency slot within the caps; an answer is counted and cached before the slot
        is freed, so the requests a crash can repeat are never more than the slots (-j)."""
        async with send.sem:
            if send.limiter is not None:
                await send.limiter.wait()
            if self._fatal is not None:  # another call found the LM refusing or gone while this one waited
                raise self._fatal
            spec, req = send.spec, send.req
            hold = self.ledger.reserve(self.usage, spec, req)
            if retry:  # counted once the retry is really sent, so retries == requests - first tries
                for usage, tag in send.books:
                    usage.add_retry(tag)
            failed, cost = True, 0.0
            try:
                result = await send.backend.call(spec, req, self.timeout)
                cost = self.ledger.charge(spec, result, hold)
                result.cost = cost
                if not result.text.strip() and not settled(spec, req):  # settled: the model's answer, asked again it repeats
                    raise empty_error(spec)
                failed = False
            except LMError as e:
                if getattr(e, "kind", "") in ("timeout", "bad_body"):
                    cost = hold.cost  # the server may have done (and billed) the work
                self._last_request_error = e.message
                # A refused probe says what the endpoint does not take, not that it fails: a warm run whose only
                # request was one is not "every request failed".
                self._refused_requests += int(not send.probe)
                raise
            except BaseException:
                cost = hold.cost  # cancelled in flight: it may have been sent and billed
                raise
            finally:
                self.ledger.release(hold)
                for usage, tag in send.books:
                    usage.add_request(tag, failed=failed, cost=cost)
            for w in result.warnings:
                self.warnings.add(w)
            # Counted before the cache write is awaited: a call cancelled during the write was still answered.
            for usage, tag in send.books:
                usage.add_result(tag, result)
            if self.cache is not None and send.key:  # a probe (no key) is remembered by its endpoint record instead
                await self.cache.aput(send.key, _cache_entry(spec, result))
            return result

    async def _call_with_retries(self, send: _Send) -> LMResult:
        # First try outside tenacity: most calls succeed, and its per-call set-up is a measurable cost.
        # A call holds its concurrency slot only while a request is in flight, never while it waits to retry.
        try:
            return await self._attempt(send)
        except LMError as e:
            if not e.retryable or self.max_retries == 0:
                if e.retryable:
                    raise self._final_error(send.spec, e, 1) from None
                raise
            first = e
        return await self._retry(send, first)

    async def _retry(self, send: _Send, first: LMError) -> LMResult:
        from tenacity import AsyncRetrying, RetryError, retry_if_exception, stop_after_attempt

        attempts = self.max_retries + 1
        await asyncio.sleep(self._wait_for(first, 1))

        def wait(state) -> float:
            return self._wait_for(state.outcome.exception(), state.attempt_number + 1)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts - 1),
            wait=wait,
            retry=retry_if_exception(lambda e: isinstance(e, LMError) and e.retryable),
            reraise=False,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(send, retry=True)
        except RetryError as e:
            raise self._final_error(send.spec, e.last_attempt.exception(), attempts) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _final_error(self, spec: LMSpec, last: BaseException | None, attempts: int) -> LMError:
        kind = getattr(last, "kind", "")
        text = getattr(last, "message", None) or str(last)
        if kind in ("connection", "timeout"):
            return LMUnreachableError(f"cannot reach {where(spec)} for {spec.model} after {attempts} attempts: {text}", model=spec.model)
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
            return int(getattr(self._backend_for(spec), "n_ctx", LOCAL_N_CTX))
        info = model_info(spec.model)
        if not info:
            return None
        value = info.get("max_input_tokens") or info.get("max_tokens")
        return int(value) if isinstance(value, (int, float)) else None

    # -------------------------------------------------------- lifecycle

    async def aclose(self) -> None:
        await self._direct.aclose()
        await self._litellm.aclose()
        if self.cache is not None:
            self.cache.close()
        self.telemetry.flush()

    def close(self) -> None:
        self._direct.close()
        self._litellm.close()
        if self.cache is not None:
            self.cache.close()
        self.telemetry.flush()


def _cache_entry(spec: LMSpec, result: LMResult) -> dict:
    """What the cache keeps of an answer (`_from_cache` reads it back)."""
    entry: dict[str, Any] = {
        "text": result.text,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "finish_reason": result.finish_reason,
        "model": spec.model,
    }
    if result.label_scores:
        entry["scores"] = [list(s) for s in result.label_scores]
    if result.token_logprobs:
        entry["logprobs"] = [list(t) for t in result.token_logprobs]
    return entry


def _from_cache(hit: dict) -> LMResult:
    return LMResult(
        text=hit["text"],
        prompt_tokens=int(hit.get("prompt_tokens", 0)),
        completion_tokens=int(hit.get("completion_tokens", 0)),
        cost=0.0,
        cached=True,
        finish_reason=hit.get("finish_reason"),
        label_scores=tuple((str(lb), float(lp), int(n)) for lb, lp, n in hit.get("scores", ())),
        token_logprobs=tuple((int(o), lp) for o, lp in hit.get("logprobs", ())),
    )


def _estimate(text: str) -> int:
    return (len(text) + 3) // 4
