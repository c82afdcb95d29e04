"""Where an API key may be sent: the loopback rule for servers an artifact names, and no redirects for LM calls.

The user's key goes to the server the *user* chose (`--api-base`, lmc.yaml, the
provider's default).  An artifact is a file from someone else: the servers it names
are used only when they are this machine (`is_loopback`), its LM settings may not
re-route requests (`check_artifact_lm`), and no LM request follows a redirect
(`refuse_redirects`), since a redirect would carry the request, and with some
providers the key header, to whatever host the server names.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import re
from typing import Any, Iterator

from .errors import ConfigError

# ---------------------------------------------------------------- the loopback rule

# Only what every URL parser involved (urllib, yarl for aiohttp, httpx) reads the same way is judged;
# anything else (backslashes, whitespace, control or non-ASCII characters, a second '@') is simply
# not loopback.  `http://evil\@127.0.0.1/` is host 127.0.0.1 to urllib and httpx but evil to a
# WHATWG parser: refusing such text costs nothing, guessing wrong would send the key away.
_URL = re.compile(
    r"(?P<scheme>(?i:https?))://"
    r"(?:[A-Za-z0-9._~!$&'()*+,;=:%-]*@)?"  # userinfo: ignored, but it may not hide a second host
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<rest>[/?#][\x21-\x7e]*)?"
)
_LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")


def is_loopback(url: object) -> bool:
    """True when `url` is http(s) to 127.0.0.0/8, ::1 (also as ::ffff:127.x) or exactly `localhost`.

    Host names are never matched as text: `127.0.0.1.evil.example.com` and `localhost.evil`
    are remote.  Spellings that only some resolvers read as 127.0.0.1 (`2130706433`,
    `0177.0.0.1`, `0x7f.1`, `127.1`) and `localhost.` are not loopback here: refusing them
    only means the user passes `--api-base` to use them.
    """
    if not isinstance(url, str) or not url.isascii():
        return False
    m = _URL.fullmatch(url)
    if m is None or "\\" in url:
        return False
    if m.group("port") is not None and int(m.group("port")) > 65535:
        return False
    host = m.group("host")
    if host.lower() == "localhost":
        return True
    if host.startswith("["):
        try:
            addr6 = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        mapped = addr6.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1 on a dual-stack socket
        return addr6.is_loopback or (mapped is not None and mapped in _LOOPBACK_V4)
    try:
        # Strict dotted decimal: ipaddress refuses octal, hex, short and integer forms.
        return ipaddress.IPv4Address(host) in _LOOPBACK_V4
    except ValueError:
        return False


# ---------------------------------------------------------------- what an artifact may set

# Settings that choose where a request goes, or what credentials or headers it carries.  litellm
# reads e.g. `base_url` as a synonym of api_base, so an allow-list of names would be the only
# complete answer; this pattern refuses every name that could plausibly route or authenticate.
_ROUTING = re.compile(
    r"base|url|uri|endpoint|host|proxy|header|key|token_url|secret|password|credential|auth|"
    r"provider|region|project|location|deployment|account|organization|cert|verify|ssl|"
    r"callback|logger|logging|webhook",
    re.IGNORECASE,
)
_SAFE = {"max_tokens", "max_completion_tokens", "logit_bias"}


def check_artifact_lm(model: object, settings: dict, where: str) -> None:
    """An artifact's LM (top level or alias) may set sampling, never routing: ConfigError otherwise."""
    if isinstance(model, str) and ("://" in model or model.lower().startswith(("http:", "https:"))):
        raise ConfigError(
            f"{where} names the model {model[:80]!r}, which holds a URL; an artifact may not choose where requests go",
            hint="pass --lm to choose the model yourself",
        )
    for name in settings:
        if isinstance(name, str) and name not in _SAFE and _ROUTING.search(name):
            raise ConfigError(
                f"{where} sets '{name[:60]}', which could send requests or your key elsewhere; an artifact may only set sampling parameters",
                hint="pass --lm (and --api-base) to choose the LM yourself",
            )


# ---------------------------------------------------------------- redirects

_IN_LM_CALL: contextvars.ContextVar[list | None] = contextvars.ContextVar("lmc_lm_call", default=None)
_installed = False


class RedirectRefused(Exception):
    """Raised inside httpx when an LM request is answered with a redirect (mapped to LMRedirectError)."""

    def __init__(self, status: int, location: str):
        super().__init__(f"redirect ({status}) to {location!r} refused")
        self.status = status
        self.location = location


def _install_httpx_guard() -> None:
    """Make httpx refuse to build a redirected request while an lmc LM call is in flight.

    litellm sends through httpx clients it makes itself (also over its aiohttp transport, which
    lets httpx do the redirecting), and httpx keeps every header but Authorization on a
    cross-origin redirect — Anthropic's `x-api-key` went to the second host in a test.  Wrapping
    the one method every redirect passes through covers every provider; other httpx users in the
    process are untouched (the guard acts only inside `refuse_redirects`).
    """
    global _installed
    if _installed:
        return
    import httpx

    for cls in (httpx.Client, httpx.AsyncClient):
        original = cls._build_redirect_request

        def guarded(self: Any, request: Any, response: Any, _original: Any = original) -> Any:
            seen = _IN_LM_CALL.get()
            if seen is not None:
                seen.append(response.headers.get("location", ""))
                raise RedirectRefused(response.status_code, response.headers.get("location", ""))
            return _original(self, request, response)

        cls._build_redirect_request = guarded  # type: ignore[method-assign]
    _installed = True


@contextlib.contextmanager
def refuse_redirects() -> Iterator[list]:
    """Within this block httpx follows no redirect; the list collects the Location of each one refused."""
    _install_httpx_guard()
    seen: list = []
    token = _IN_LM_CALL.set(seen)
    try:
        yield seen
    finally:
        _IN_LM_CALL.reset(token)
