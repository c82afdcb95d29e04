"""Caps on one run's LM use: prices, worst-case reservations before each request, and the LM error limit.

`--max-calls` counts every request sent (first tries, retries, failures) and `--max-cost`
every dollar a request may cost.  Both are *reserved* before a request leaves, so however
many requests are in flight the server never sees more than the cap allows: a request
whose worst case does not fit what is left is not sent.  The worst case of a request is
an upper bound of its prompt tokens plus its `max_tokens`, at the model's price; once the
answer arrives the reservation is settled with the real usage.

A price comes from litellm's table (read as JSON, see `lm.spec.table_price`, which the LM
client hands its ledger, so this module knows nothing of LMs), from the user
(`--price-per-mtok-in/--price-per-mtok-out` or `lmc.yaml`), or is zero for the embedded
model.  A `--max-cost` over a model with no known price is refused before any call:
counting it as free would make the cap a lie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .errors import BudgetExceeded, ConfigError

# Chat templates add a few tokens per message and per request; bounds, not estimates.
PER_MESSAGE_OVERHEAD = 8
PER_REQUEST_OVERHEAD = 16
DEFAULT_LM_ERRORS = "20%"
# The share of failed calls is judged only once this many calls reached the LM, so two
# unlucky calls out of three do not end a long run.
MIN_CALLS_FOR_SHARE = 10
PRICE_FLAGS = "--price-per-mtok-in and --price-per-mtok-out"


@dataclass(frozen=True)
class Price:
    """USD per prompt token and per completion token, and where the figure comes from."""

    input: float
    output: float
    source: str

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.input + completion_tokens * self.output

    @property
    def free(self) -> bool:
        return self.input == 0 and self.output == 0


EMBEDDED = Price(0.0, 0.0, "the embedded model")
GIVEN = "the price you gave"


def user_price(per_mtok_in: float | None, per_mtok_out: float | None, where: str = PRICE_FLAGS) -> Price | None:
    """The price a user gave in USD per million tokens (both halves, or neither)."""
    if per_mtok_in is None and per_mtok_out is None:
        return None
    if per_mtok_in is None or per_mtok_out is None:
        raise ConfigError(f"give both {where} (USD per million prompt and completion tokens; 0 for a free server)")
    for value in (per_mtok_in, per_mtok_out):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{where}: a price must be a number of 0 or more (USD per million tokens), got {value!r}")
    return Price(per_mtok_in / 1e6, per_mtok_out / 1e6, GIVEN)


def settings_price(st: Any) -> Price | None:
    """The user's price for LMs litellm does not price, from the resolved settings (flag, environment, lmc.yaml)."""
    sources = getattr(st, "sources", {}) or {}
    where = PRICE_FLAGS
    origin = {str(s) for s in (sources.get("price_per_mtok_in"), sources.get("price_per_mtok_out")) if s not in (None, "default")}
    if origin and not origin & {"--price-per-mtok-in", "--price-per-mtok-out"}:
        where = "price_per_mtok_in and price_per_mtok_out (" + ", ".join(sorted(origin)) + ")"
    return user_price(st.price_per_mtok_in, st.price_per_mtok_out, where)


def prompt_tokens_bound(req: Any) -> int:
    """An upper bound of a request's prompt tokens: byte-level tokenizers never make more tokens than bytes."""
    if req.prompt is not None:
        return len(req.prompt.encode("utf-8")) + PER_REQUEST_OVERHEAD
    total = PER_REQUEST_OVERHEAD
    for m in req.messages or ():
        total += len(str(m.get("content", "")).encode("utf-8")) + PER_MESSAGE_OVERHEAD
    return total


@dataclass
class Hold:
    """One request's reservation: it counts against the caps until settled."""

    cost: float = 0.0
    settled: bool = False


class Ledger:
    """The caps of one LM client: reserves before a request is sent, settles when it ends.

    Committed figures live in the client's `Usage` (requests, cost); the ledger adds what
    requests in flight have reserved, so a check sees committed + in flight + this request.
    """

    def __init__(
        self,
        max_calls: int | None = None,
        max_cost: float | None = None,
        price: Price | None = None,
        listed_price: Callable[[str], Price | None] = lambda model: None,
    ):
        if max_calls is not None and max_calls < 0:
            raise ConfigError(f"--max-calls must be 0 or more, got {max_calls}")
        if max_cost is not None and (not math.isfinite(max_cost) or max_cost < 0):
            raise ConfigError(f"--max-cost must be a number of 0 or more (USD), got {max_cost:g}")
        self.max_calls = max_calls
        self.max_cost = max_cost
        self.user_price = price
        self.listed_price = listed_price  # a model's price in litellm's table, when it lists one
        self.held_requests = 0
        self.held_cost = 0.0
        # compile sets this: the first ask of an answer the cache holds then counts against --max-calls as the
        # request a cold cache sends, so a budget-limited search stops at the same point, cold or warm.
        self.count_cached = False
        self.replayed = 0

    def price_of(self, spec: Any) -> Price | None:
        if spec.is_local:
            return EMBEDDED
        return self.listed_price(spec.model) or self.user_price

    def check_prices(self, specs: Iterable[Any]) -> None:
        """Refuse a --max-cost over a model whose price is unknown, before any call is made."""
        if self.max_cost is None:
            return
        for spec in specs:
            if self.price_of(spec) is None:
                where = f" at {spec.api_base}" if spec.api_base else ""
                raise ConfigError(
                    f"--max-cost needs the price of {spec.model}{where}, which litellm's price table does not list; "
                    f"give it with {PRICE_FLAGS} (USD per million tokens, 0 for a free server) "
                    "or price_per_mtok_in/price_per_mtok_out in lmc.yaml"
                )

    def worst_cost(self, spec: Any, req: Any) -> float:
        price = self.price_of(spec)
        if price is None or price.free:
            return 0.0
        return price.cost(prompt_tokens_bound(req), int(req.max_tokens))

    def reserve(self, usage: Any, spec: Any, req: Any) -> Hold:
        """Count this request against the caps or raise BudgetExceeded; nothing is sent on a refusal."""
        # The messages name the cap only: they land in artifact notes, which must not depend on timing.
        if self.calls_left(usage) == 0:
            raise BudgetExceeded(f"LM call budget spent (--max-calls {self.max_calls})")
        if self.max_cost is not None and self.price_of(spec) is None:
            self.check_prices([spec])
        worst = self.worst_cost(spec, req)
        if self.max_cost is not None and usage.cost + self.held_cost + worst > self.max_cost * (1 + 1e-9):
            raise BudgetExceeded(f"LM cost budget spent: the next request's worst case does not fit what is left of --max-cost ${self.max_cost:g}")
        self.held_requests += 1
        self.held_cost += worst
        return Hold(worst)

    def replay(self, usage: Any, requests: int = 1) -> None:
        """Count what the cache served in place of `requests` requests, when `count_cached`; raise
        BudgetExceeded as `reserve` would."""
        if not self.count_cached:
            return
        left = self.calls_left(usage)
        if left is not None and requests > left:
            raise BudgetExceeded(f"LM call budget spent (--max-calls {self.max_calls})")
        self.replayed += requests

    def calls_left(self, usage: Any) -> int | None:
        """What --max-calls still allows (None: no cap): committed requests, those in flight and, when
        `count_cached`, the cached answers counted in their place."""
        if self.max_calls is None:
            return None
        return max(0, self.max_calls - usage.requests - self.held_requests - self.replayed)

    def release(self, hold: Hold) -> None:
        if not hold.settled:
            hold.settled = True
            self.held_requests -= 1
            self.held_cost = max(0.0, self.held_cost - hold.cost)

    def charge(self, spec: Any, result: Any, hold: Hold) -> float:
        """The cost to book for an answered request: the backend's figure, the user's price, or the worst case
        when a priced server reports no token usage at all (what it billed is then unknown)."""
        price = self.price_of(spec)
        if price is None or price.free:
            return float(result.cost or 0.0)
        if not result.prompt_tokens and not result.completion_tokens:
            return max(float(result.cost or 0.0), hold.cost)
        if price.source == GIVEN or not result.cost:
            return price.cost(result.prompt_tokens, result.completion_tokens)
        return float(result.cost)


# ---------------------------------------------------------------- the LM error limit


@dataclass(frozen=True)
class ErrorLimit:
    """How many LM calls may fail (after their retries) before a compile or eval stops: a count or a share."""

    text: str
    count: int | None = None
    share: float | None = None

    def exceeded(self, answered: int, failed: int) -> bool:
        if self.count is not None:
            return failed > self.count
        total = answered + failed
        return total >= MIN_CALLS_FOR_SHARE and failed > (self.share or 0.0) * total


def parse_error_limit(text: str | float | int) -> ErrorLimit:
    """`20%` or `0.2` (a share of the calls), or `5` (a count); `0` makes any failed call fatal."""
    raw = str(text).strip()
    bad = ConfigError(f"--max-lm-errors: expected a share such as 20% or 0.2, or a count such as 5; got {raw!r}")
    try:
        if raw.endswith("%"):
            share = float(raw[:-1]) / 100
        elif raw.isdigit():
            return ErrorLimit(raw, count=int(raw))
        else:
            share = float(raw)
            if share >= 1:
                raise bad
    except ValueError:
        raise bad from None
    if not math.isfinite(share) or not 0 <= share <= 1:
        raise bad
    return ErrorLimit(raw, share=share)
