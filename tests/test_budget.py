"""Caps and failure limits of the LM client (lmc/budget.py): reservations, prices, settlement, the error limit."""

from __future__ import annotations

import asyncio

import pytest

from lmc.budget import EMBEDDED, Ledger, Price, parse_error_limit, prompt_tokens_bound, user_price
from lmc.errors import BudgetExceeded, ConfigError, LMAuthError, LMError, LMFailure
from lmc.lm import LMClient, LMRequest, LMResult, LMTransientError, Usage, parse_lm
from lmc.lm.spec import table_price
from tests.fakelm import FakeLM, request_text

SPEC = parse_lm("openai/test", "http://127.0.0.1:9/v1")


def run(coro):
    return asyncio.run(coro)


def ask(i: int, max_tokens: int = 10) -> LMRequest:
    return LMRequest(messages=({"role": "user", "content": f"question {i}"},), max_tokens=max_tokens)


# ---------------------------------------------------------------- prices


def test_prices_come_from_litellms_table_the_user_or_the_embedded_model():
    gpt = table_price("openai/gpt-4o-mini")
    assert gpt is not None and gpt.input > 0 and gpt.output > gpt.input
    assert table_price("openai/test") is None and table_price("hosted_vllm/my-model") is None
    ledger = Ledger(max_cost=1.0, listed_price=table_price)
    assert ledger.price_of(parse_lm("local/gemma-3-270m")) is EMBEDDED
    assert ledger.price_of(SPEC) is None
    assert ledger.price_of(parse_lm("openai/gpt-4o-mini")) == gpt
    assert Ledger(max_cost=1.0).price_of(parse_lm("openai/gpt-4o-mini")) is None  # the ledger knows no table itself
    given = Ledger(max_cost=1.0, price=user_price(0.5, 1.5), listed_price=table_price)
    assert given.price_of(SPEC) == Price(0.5e-6, 1.5e-6, "the price you gave")
    # A listed model keeps its listed price: a user price only fills in what the table lacks.
    assert given.price_of(parse_lm("openai/gpt-4o-mini")) == gpt


def test_max_cost_over_an_unpriced_model_is_refused_up_front_and_at_send_time():
    ledger = Ledger(max_cost=1.0, listed_price=table_price)
    ledger.check_prices([parse_lm("local/gemma-3-270m"), parse_lm("openai/gpt-4o-mini")])
    with pytest.raises(ConfigError, match=r"--max-cost needs the price of openai/test at http://127.0.0.1:9/v1"):
        ledger.check_prices([SPEC])
    Ledger(max_calls=3).check_prices([SPEC])  # no cost cap, no price needed
    client = LMClient(use_cache=False, backend=FakeLM("x"), max_cost=1.0)
    with pytest.raises(ConfigError, match="--price-per-mtok-in"):
        run(client.complete(SPEC, ask(0)))
    assert client.backend.calls == [] and client.usage.requests == 0


def test_a_user_price_needs_both_halves_and_sane_numbers():
    assert user_price(None, None) is None
    assert user_price(0, 0).free
    for a, b in ((1.0, None), (None, 2.0)):
        with pytest.raises(ConfigError, match="give both"):
            user_price(a, b)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="a number of 0 or more"):
            user_price(bad, 1.0)


def test_the_prompt_bound_is_never_below_the_bytes_sent():
    req = LMRequest(messages=({"role": "system", "content": "é" * 10}, {"role": "user", "content": "hi"}))
    assert prompt_tokens_bound(req) >= 20 + 2
    assert prompt_tokens_bound(LMRequest(prompt="日本語")) >= 9


# ---------------------------------------------------------------- reservations


def test_max_calls_counts_failures_and_retries_and_holds_under_concurrency():
    def flaky(spec, req):
        n = int(request_text(req).split()[-1])
        return LMTransientError("503", kind="server", model=spec.model) if n % 3 == 0 else "ok"

    fake = FakeLM(flaky, latency=0.01)
    client = LMClient(use_cache=False, backend=fake, max_calls=17, concurrency=16, retry_wait=0.001, retry_max_wait=0.002, max_retries=2)

    async def go():
        return await asyncio.gather(*(client.complete(SPEC, ask(i)) for i in range(30)), return_exceptions=True)

    out = run(go())
    u = client.usage
    assert len(fake.calls) == u.requests <= 17
    assert u.requests == u.live_calls + u.failed_requests
    assert u.retries == len(fake.calls) - len({c.text for c in fake.calls})  # every send after a call's first
    assert u.failed_requests == sum(1 for c in fake.calls if int(c.text.split()[-1]) % 3 == 0)
    assert any(isinstance(o, BudgetExceeded) for o in out)


def test_worst_case_cost_is_reserved_and_settled_with_the_real_usage():
    # 1 USD per token: the worst case of a request is its prompt bound plus max_tokens dollars.
    price = user_price(1e6, 1e6)
    fake = FakeLM("ok", latency=0.02, tokens_per_char=0.25)
    probe = Ledger(price=price)
    worst = probe.worst_cost(SPEC, ask(1, max_tokens=10))
    client = LMClient(use_cache=False, backend=fake, max_cost=worst * 2.5, price=price, concurrency=8)

    async def go():
        return await asyncio.gather(*(client.complete(SPEC, ask(i, max_tokens=10)) for i in range(8)), return_exceptions=True)

    out = run(go())
    answered = [o for o in out if isinstance(o, LMResult)]
    assert len(answered) == 2  # only two worst cases fit at once, though each costs far less
    assert client.usage.cost == pytest.approx(sum(o.cost for o in answered))
    assert all(o.cost == o.prompt_tokens + o.completion_tokens for o in answered)
    assert client.ledger.held_cost == 0 and client.ledger.held_requests == 0
    assert client.usage.cost <= worst * 2.5


def test_a_timed_out_request_is_charged_its_worst_case():
    price = user_price(1e6, 1e6)
    fake = FakeLM(lambda s, r: LMTransientError("timed out", kind="timeout", model=s.model))
    client = LMClient(use_cache=False, backend=fake, price=price, max_retries=0)
    with pytest.raises(LMError):
        run(client.complete(SPEC, ask(1)))
    assert client.usage.cost == Ledger(price=price).worst_cost(SPEC, ask(1))
    assert client.usage.failed_requests == client.usage.requests == 1 and client.usage.errors == 1


def test_a_priced_server_that_reports_no_usage_is_charged_the_worst_case():
    class NoUsage(FakeLM):
        async def call(self, spec, req, timeout):
            res = await super().call(spec, req, timeout)
            res.prompt_tokens = res.completion_tokens = 0
            return res

    price = user_price(1e6, 1e6)
    client = LMClient(use_cache=False, backend=NoUsage("ok"), price=price)
    res = run(client.complete(SPEC, ask(1)))
    assert res.cost == Ledger(price=price).worst_cost(SPEC, ask(1)) > 0


def test_a_per_example_meter_sees_every_request_of_its_calls():
    seen = {"n": 0}

    def once(spec, req):
        seen["n"] += 1
        return LMTransientError("429", kind="rate_limit", model=spec.model) if seen["n"] == 1 else "ok"

    client = LMClient(use_cache=False, backend=FakeLM(once), retry_wait=0.001, retry_max_wait=0.001)
    meter = Usage()
    run(client.complete(SPEC, ask(1), meter=meter))
    run(client.complete(SPEC, ask(2), meter=meter))
    assert (meter.calls, meter.requests, meter.retries, meter.failed_requests) == (2, 3, 1, 1)
    assert meter.to_json() == {k: v for k, v in client.usage.to_json().items() if k != "by_tag"}


# ---------------------------------------------------------------- the LM error limit


@pytest.mark.parametrize("text, count, share", [("20%", None, 0.2), ("0.05", None, 0.05), ("100%", None, 1.0), ("0", 0, None), ("7", 7, None)])
def test_error_limits_parse(text, count, share):
    limit = parse_error_limit(text)
    assert (limit.count, limit.share) == (count, share)


@pytest.mark.parametrize("text", ["", "x", "-1", "1.5", "120%", "nan", "-5%"])
def test_bad_error_limits_are_refused(text):
    with pytest.raises(ConfigError, match="--max-lm-errors"):
        parse_error_limit(text)


def test_the_share_is_judged_once_enough_calls_were_made():
    limit = parse_error_limit("20%")
    assert not limit.exceeded(answered=1, failed=2)  # too few calls to judge
    assert limit.exceeded(answered=7, failed=3)
    assert not limit.exceeded(answered=80, failed=20)
    assert parse_error_limit("2").exceeded(answered=1000, failed=3)


def test_passing_the_limit_stops_every_later_send():
    def half(spec, req):
        n = int(request_text(req).split()[-1])
        return LMError("400 bad", model=spec.model) if n % 2 else "ok"

    fake = FakeLM(half)
    client = LMClient(use_cache=False, backend=fake, max_lm_errors="20%")

    async def go():
        out = []
        for i in range(40):
            try:
                out.append(await client.complete(SPEC, ask(i)))
            except LMError as e:
                out.append(e)
        return out

    out = run(go())
    first = next(i for i, o in enumerate(out) if isinstance(o, LMFailure))
    assert first >= 9  # judged only from the tenth call on
    assert "over --max-lm-errors 20%" in str(out[first]) and "last error: 400 bad" in str(out[first])
    assert all(isinstance(o, LMFailure) for o in out[first:])
    assert len(fake.calls) == first + 1  # nothing is sent once the limit is passed


def test_an_auth_failure_stops_the_other_calls_from_sending():
    fake = FakeLM(lambda s, r: LMAuthError("authentication failed for openai/test", model=s.model), latency=0.01)
    client = LMClient(use_cache=False, backend=fake, concurrency=2)

    async def go():
        return await asyncio.gather(*(client.complete(SPEC, ask(i)) for i in range(10)), return_exceptions=True)

    out = run(go())
    assert all(isinstance(o, LMAuthError) for o in out)
    assert len(fake.calls) == 2 == client.usage.requests  # the two in flight; the eight waiting never went
    assert client.usage.errors == 2


def test_health_every_call_failed_versus_some():
    client = LMClient(use_cache=False, backend=FakeLM(lambda s, r: LMError("nope", model=s.model)))
    client.check_health()  # nothing happened yet
    with pytest.raises(LMError):
        run(client.complete(SPEC, ask(1)))
    with pytest.raises(LMFailure, match=r"every LM call failed: 1 calls, 1 requests, none answered; last error: nope"):
        client.check_health()
    ok = LMClient(use_cache=False, backend=FakeLM("fine"), max_lm_errors="50%")
    run(ok.complete(SPEC, ask(1)))
    ok.check_health()
