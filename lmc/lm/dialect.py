"""What an LM endpoint understands: which constraint dialect, echoed log-probabilities, a chat reply's JSON schema.

Found once per endpoint (model and api_base) by cheap probes through the client, so they count
against --max-calls and are retried like any request (one that never gets an answer counts as
refused), and remembered in the LM cache, so a warm rerun sends none.  A completion endpoint gets

* a log-probability probe: the prompt "lmc probe: one two" sent with `echo` and `logprobs`, one
  token generated; the endpoint can score labels when the reply lists the prompt's tokens with theirs
  (lmc does so only where no dialect below holds, or under `score_labels=true`: see client.py);
* dialect probes: the same tiny prompt constrained to one odd word, in each dialect in turn
  (llama.cpp's `grammar`, vLLM's `guided_choice`, Ollama's `format`); the first whose reply is
  exactly that word is the endpoint's.  A server that refuses a field, or ignores it, fails its probe.

A chat endpoint gets one probe: the same words as a user message, with a `response_format` JSON
schema whose only valid reply is `{"answer": "zqxv"}`; a reply that is exactly that object makes
the endpoint's dialect `openai`, and its typed replies are then held to their schema
(`holds_schema`).  A server that refuses the field, ignores it, or answers anything else: `none`.

lmc.yaml's `constraints` (or $LMC_CONSTRAINTS) names the dialect instead: `llama.cpp`, `vllm`,
`ollama`, or `none` to send no constraint; `auto` (the default) probes.  `openai` sends chat models
a JSON schema of the reply without probing, and completion models no constraint; any other named
dialect sends chat models none.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from lmc.lm.call import LMRequest, LMResult
from lmc.lm.constraint import DIALECTS
from lmc.lm.spec import LMSpec

PROBE_PROMPT = "lmc probe: one two"
PROBE_WORD = "zqxv"
SETTINGS = ("auto", "none") + DIALECTS + ("openai",)
# The one document a chat endpoint that holds its reply to a JSON schema can answer the probe with: {"answer": "zqxv"}.
PROBE_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": [PROBE_WORD]}},
    "required": ["answer"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Endpoint:
    dialect: str  # one of DIALECTS, or "none"
    logprobs: bool  # answers `echo` with the prompt's token log-probabilities

    def describe(self) -> str:
        how = "no constraint" if self.dialect == "none" else f"constraints as {self.dialect}"
        return how + (", labels scored by log-probability" if self.logprobs else ", no log-probabilities")


Send = Callable[[LMSpec, LMRequest], Awaitable["LMResult | None"]]


class Endpoints:
    """Probes and remembers endpoints; `send` makes one counted request, None when the endpoint refused it."""

    def __init__(self, send: Send, cache: Any, setting: str | None = None, replay: Callable[[int], None] = lambda requests: None):
        self.send = send
        self.cache = cache
        self.replay = replay  # counts a remembered record's probe requests against the caps that count cached answers
        self.setting = setting or "auto"
        self._known: dict[tuple[str, str], Endpoint] = {}
        # One probe per endpoint even when many examples reach it at once: the first probes, the others wait.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def _key(self, spec: LMSpec) -> str:
        # Where the model is served decides what it understands: the api_base names the endpoint here, and
        # only this record's key (never an answer's) holds it.
        text = json.dumps(["lmc-endpoint/1", spec.model, spec.api_base or "", self.setting])
        return hashlib.sha256(text.encode()).hexdigest()

    async def of(self, spec: LMSpec) -> Endpoint:
        ident = (spec.model, spec.api_base or "")
        known = self._known.get(ident)
        if known is not None:
            return known
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a lock belongs to one event loop; a client reused across asyncio.run() gets fresh ones
            self._loop, self._locks = loop, {}
        async with self._locks.setdefault(ident, asyncio.Lock()):
            known = self._known.get(ident)
            return known if known is not None else await self._find(spec, ident)

    async def _find(self, spec: LMSpec, ident: tuple[str, str]) -> Endpoint:
        known: Endpoint | None = None
        key = self._key(spec)
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is not None:
            try:
                data = json.loads(hit["text"])
                known = Endpoint(str(data["dialect"]), bool(data["logprobs"]))
                probes = int(data.get("requests", 0))
                if probes < 0:  # an edited record must not lower what --max-calls counts
                    raise ValueError("requests")
            except (ValueError, KeyError, TypeError, AttributeError):
                known = None  # probed again, as when there is no record
            else:
                self.replay(probes)
        if known is None:
            sent = 0

            async def send(spec: LMSpec, req: LMRequest) -> "LMResult | None":
                nonlocal sent
                sent += 1
                return await self.send(spec, req)

            known = await self._probe(spec, send)
            if self.cache is not None:
                await self.cache.aput(
                    key,
                    {
                        "text": json.dumps({"dialect": known.dialect, "logprobs": known.logprobs, "requests": sent}),
                        "model": spec.model,
                        "prompt_tokens": 0,
                        "completion_tokens": 0,
                    },
                )
        self._known[ident] = known
        return known

    async def holds_schema(self, spec: LMSpec, on_server: bool) -> bool:
        """Whether a chat reply from `spec` is held to its JSON schema: `openai` named, or (`auto`) a server's probe passed."""
        if spec.mode != "chat" or self.setting not in ("openai", "auto"):
            return False
        return self.setting == "openai" or (on_server and (await self.of(spec)).dialect == "openai")

    async def _probe(self, spec: LMSpec, send: Send) -> Endpoint:
        if spec.mode == "chat":  # no echo of a chat prompt, and the constraint a chat endpoint may take is a JSON schema
            req = LMRequest(
                messages=({"role": "user", "content": PROBE_PROMPT},),
                max_tokens=24,
                schema=json.dumps(PROBE_SCHEMA, sort_keys=True, separators=(",", ":")),
            )
            got = await send(spec, req)
            return Endpoint("openai" if got is not None and probe_answered(got.text) else "none", False)
        echoed = await send(spec, LMRequest(prompt=PROBE_PROMPT, max_tokens=1, echo=True))
        logprobs = echoed is not None and covers(echoed, len(PROBE_PROMPT))
        if self.setting != "auto":
            return Endpoint(self.setting, logprobs)
        for dialect in DIALECTS:
            req = LMRequest(prompt=PROBE_PROMPT, max_tokens=8, choices=(PROBE_WORD,), wire=dialect)
            got = await send(spec, req)
            if got is not None and got.text.strip() == PROBE_WORD:
                return Endpoint(dialect, logprobs)
        return Endpoint("none", logprobs)


def probe_answered(text: str) -> bool:
    """Whether a chat probe's reply is exactly the one object its schema allows."""
    try:
        return json.loads(text) == {"answer": PROBE_WORD}
    except ValueError:
        return False


def covers(result: LMResult, prompt_chars: int) -> bool:
    """Whether an echoed reply scored the prompt's tokens (every one after the first has a log-probability)."""
    tokens = [(o, lp) for o, lp in result.token_logprobs if o < prompt_chars]
    return len(tokens) >= 2 and all(lp is not None for _, lp in tokens[1:])


def label_logprob(result: LMResult, prompt_chars: int, end_chars: int) -> tuple[float, int] | None:
    """The summed log-probability and count of the echoed tokens from the prompt's end to the label's end."""
    tokens = [lp for o, lp in result.token_logprobs if prompt_chars <= o < end_chars]
    if not tokens or any(lp is None for lp in tokens):
        return None
    return float(sum(lp for lp in tokens if lp is not None)), len(tokens)
