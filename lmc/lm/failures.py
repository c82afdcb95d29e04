"""How a failed LM request is classified, the same on every transport: kind, retryability, wait and message.

| kind         | raised as                     | retried | backoff starts at     |
|--------------|-------------------------------|---------|-----------------------|
| (401, 403)   | LMAuthError                   | no      |                       |
| rate_limit   | LMTransientError (429)        | yes     | Retry-After, or base  |
| server       | LMTransientError (5xx, 408)   | yes     | Retry-After, or base/5 |
| timeout      | LMTransientError              | yes     | base                  |
| connection   | LMTransientError (refused)    | yes     | base                  |
| bad_body     | LMTransientError (torn, dropped, not JSON) | yes | base/5         |
| empty        | LMTransientError (no text)    | yes     | base/5                |
| redirect     | LMRedirectError               | no      |                       |
| other 4xx    | LMError                       | no      |                       |

A transport maps what its HTTP client raised onto these functions; the client
(`client.py`) decides retries and waits from the kind alone.
"""

from __future__ import annotations

import email.utils
import errno
import json
import math
import socket
import time

from lmc.errors import LMAuthError, LMError, LMRedirectError
from lmc.lm.spec import LMSpec

MAX_RETRY_AFTER = 60.0
# A lone 5xx, connection dropped mid-answer, torn body or empty completion is most often one bad request,
# not a provider asking us to slow down: its backoff starts at a fifth of the base wait.  So does a timeout:
# the request already waited the whole client timeout, a longer pause than any first backoff (and at the end
# of a batch the backoff after a timeout was what the last examples waited for).
ONE_OFF_KINDS = frozenset({"server", "bad_body", "empty", "timeout"})


class LMTransientError(LMError):
    """A failure worth retrying: rate limit, 5xx, timeout, connection, bad body, empty completion."""

    def __init__(self, message: str, *, kind: str, model: str | None = None, retry_after: float | None = None):
        super().__init__(message, model=model, retryable=True)
        self.kind = kind
        self.retry_after = retry_after


def where(spec: LMSpec) -> str:
    return spec.api_base or spec.provider


def one_line(text: object, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_retry_after(value: object, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 §10.2.3), capped at 60."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:  # an HTTP-date is always GMT; a zone-less one is not one
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, min(seconds, MAX_RETRY_AFTER))


def body_message(raw: bytes | bytearray | str) -> str:
    """The provider's error message from an error response body (OpenAI's `{"error": {"message": …}}` or text)."""
    try:
        return error_message(json.loads(raw))
    except (ValueError, TypeError):
        text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
        return one_line(text[:200])


def error_message(err: object) -> str:
    """The message of a parsed error body: `{"error": {"message": …}}`, `{"message": …}` or anything else as text."""
    if isinstance(err, dict):
        err = err.get("error", err)
    if isinstance(err, dict):
        err = err.get("message", err)
    return one_line(err)


def status_error(spec: LMSpec, status: int, message: str, retry_after: float | None = None) -> LMError:
    """The lmc error for an HTTP status with the provider's message (already scrubbed)."""
    model = spec.model
    message = f": {message}" if message else ""
    if status in (401, 403):
        hint = f"check {spec.key_env}" if spec.key_env else "check the API key"
        return LMAuthError(f"authentication failed for {model}; {hint}", model=model)
    if status == 429:
        return LMTransientError(f"rate limited by {where(spec)} for {model}{message}", kind="rate_limit", model=model, retry_after=retry_after)
    if status == 408 or status >= 500:
        return LMTransientError(f"{where(spec)} answered {status} for {model}{message}", kind="server", model=model, retry_after=retry_after)
    return LMError(f"{model} rejected the request ({status}){message}", model=model)


def timeout_error(spec: LMSpec, timeout: float) -> LMTransientError:
    return LMTransientError(f"{where(spec)} timed out after {timeout:g}s for {spec.model}", kind="timeout", model=spec.model)


def connect_error(spec: LMSpec, exc: BaseException) -> LMTransientError:
    return LMTransientError(f"cannot connect to {where(spec)} for {spec.model}: {connect_reason(exc)}", kind="connection", model=spec.model)


def broken_error(spec: LMSpec) -> LMTransientError:
    """The connection closed before the whole answer arrived (dropped, or a body shorter than announced)."""
    return LMTransientError(
        f"{where(spec)} closed the connection before the answer was complete, for {spec.model}", kind="bad_body", model=spec.model
    )


def unreadable_error(spec: LMSpec, raw: bytes | str) -> LMTransientError:
    """A 200 whose body is not an OpenAI answer (an HTML error page, torn JSON, no choices)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
    return LMTransientError(f"{where(spec)} sent an unreadable answer for {spec.model}: {one_line(text, 120)}", kind="bad_body", model=spec.model)


def empty_error(spec: LMSpec) -> LMError:
    if spec.is_local:  # sampled with a seed fixed per request: asking again gives the same nothing
        return LMError(f"{spec.model} returned an empty completion", model=spec.model)
    return LMTransientError(f"{spec.model} returned an empty completion", kind="empty", model=spec.model)


def redirect_error(spec: LMSpec, status: int | None, location: str) -> LMRedirectError:
    target = one_line(location, 120) if location else "another address"
    answered = f"answered {status}, a redirect" if status else "answered with a redirect"
    return LMRedirectError(
        f"{where(spec)} {answered} to {target}, for {spec.model}; lmc does not follow redirects, "
        "so neither your request nor your key goes to another address",
        model=spec.model,
        hint="point --api-base at the final URL",
    )


def causes(e: BaseException | None) -> list[BaseException]:
    """The exception and its chain of causes and contexts, each once."""
    out: list[BaseException] = []
    seen: set[int] = set()
    while e is not None and id(e) not in seen and len(out) < 20:
        seen.add(id(e))
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def connect_reason(exc: BaseException) -> str:
    """Why a connection could not be made, in the same words whichever HTTP client failed."""
    for c in causes(exc):
        if isinstance(c, socket.gaierror):
            return "the host name does not resolve"
        if isinstance(c, ConnectionRefusedError) or getattr(c, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        os_error = getattr(c, "os_error", None)  # aiohttp keeps the socket's error here
        if isinstance(os_error, OSError) and os_error is not c:
            return connect_reason(os_error)
    for c in causes(exc):
        if isinstance(c, OSError) and c.errno:
            return (c.strerror or errno.errorcode.get(c.errno, str(c.errno))).lower()
    return one_line(type(exc).__name__)
