"""LM calls: what an LM is (`spec`), one call as data (`call`, `usage`), the disk cache (`cache`), failure
classification (`failures`), where a request goes (`endpoint`), the transports (`http_transport` for the OpenAI
protocol, `litellm_transport` for every other provider, `local` for the embedded model) and the client that caches,
retries, caps and accounts calls over them (`client`).

The names below are the package's API.  They load on first use (a lazy facade), so a module that needs only
`lmc.lm.spec` — `lmc/budget.py`, which the client itself imports — does not load the client with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_API = {
    "DiskCache": "cache",
    "CACHE_VERSION": "call",
    "LMRequest": "call",
    "LMResult": "call",
    "make_request": "call",
    "Backend": "client",
    "LMClient": "client",
    "LMTransientError": "failures",
    "LMSpec": "spec",
    "model_info": "spec",
    "parse_lm": "spec",
    "transport_for": "spec",
    "Usage": "usage",
    "current_meter": "usage",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'lmc.lm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lmc.lm.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


if TYPE_CHECKING:
    from lmc.lm.cache import DiskCache as DiskCache
    from lmc.lm.call import CACHE_VERSION as CACHE_VERSION
    from lmc.lm.call import LMRequest as LMRequest
    from lmc.lm.call import LMResult as LMResult
    from lmc.lm.call import make_request as make_request
    from lmc.lm.client import Backend as Backend
    from lmc.lm.client import LMClient as LMClient
    from lmc.lm.failures import LMTransientError as LMTransientError
    from lmc.lm.spec import LMSpec as LMSpec
    from lmc.lm.spec import model_info as model_info
    from lmc.lm.spec import parse_lm as parse_lm
    from lmc.lm.spec import transport_for as transport_for
    from lmc.lm.usage import Usage as Usage
    from lmc.lm.usage import current_meter as current_meter
