"""A scripted in-process LM backend for unit tests: canned or computed replies, every request recorded, no network."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from lmc.lm import LMRequest, LMResult, LMSpec


def request_text(req: LMRequest) -> str:
    """The prompt, or the last message's content, of a request."""
    if req.prompt is not None:
        return req.prompt
    if req.messages:
        return str(req.messages[-1].get("content", ""))
    return ""


def full_text(req: LMRequest) -> str:
    if req.prompt is not None:
        return req.prompt
    return "\n".join(str(m.get("content", "")) for m in req.messages or ())


@dataclass
class Call:
    spec: LMSpec
    req: LMRequest

    @property
    def text(self) -> str:
        return full_text(self.req)


class FakeLM:
    """A Backend whose replies come from `script`.

    - a callable `(spec, req) -> str` (or an Exception instance to raise);
    - a list: replies in call order (the last one repeats once the list runs out);
    - a dict: the first key found as a substring of the prompt / messages gives the reply;
      key "" (or `default=`) answers anything else;
    - a str: always that reply.
    """

    def __init__(
        self,
        script: Callable[[LMSpec, LMRequest], str] | Sequence[str] | Mapping[str, str] | str = "ok",
        *,
        default: str | None = None,
        latency: float = 0.0,
        tokens_per_char: float = 0.25,
        cost_per_token: float = 0.0,
        logprobs: Callable[[LMSpec, LMRequest], Mapping[str, tuple[float, int]]] | None = None,
    ):
        self.script = script
        self.default = default
        self.latency = latency
        self.tokens_per_char = tokens_per_char
        self.cost_per_token = cost_per_token
        # Scripted log-probabilities for ranked requests: (spec, req) -> {label: (summed logprob, tokens)}.
        self.logprobs = logprobs
        self.calls: list[Call] = []
        self._next = 0

    @property
    def requests(self) -> list[LMRequest]:
        return [c.req for c in self.calls]

    @property
    def prompts(self) -> list[str]:
        return [c.text for c in self.calls]

    def reply(self, spec: LMSpec, req: LMRequest) -> str | BaseException:
        script = self.script
        if callable(script):
            return script(spec, req)
        if isinstance(script, str):
            return script
        if isinstance(script, Mapping):
            text = full_text(req)
            for key, value in script.items():
                if key and key in text:
                    return value
            if "" in script:
                return script[""]
            if self.default is not None:
                return self.default
            raise AssertionError(f"FakeLM has no scripted reply for: {text[-200:]!r}")
        replies = list(script)
        if not replies:
            raise AssertionError("FakeLM was given an empty list of replies")
        reply = replies[min(self._next, len(replies) - 1)]
        self._next += 1
        return reply

    async def call(self, spec: LMSpec, req: LMRequest, timeout: float) -> LMResult:
        self.calls.append(Call(spec, req))
        if self.latency:
            await asyncio.sleep(self.latency)
        if req.rank and self.logprobs is not None:
            table = self.logprobs(spec, req)
            scores = tuple((c, float(table[c][0]), int(table[c][1])) for c in req.choices)
            best = max(scores, key=lambda s: s[1])[0]
            return LMResult(
                text=best,
                prompt_tokens=int(len(full_text(req)) * self.tokens_per_char),
                completion_tokens=0,
                finish_reason="stop",
                label_scores=scores,
            )
        reply = self.reply(spec, req)
        if isinstance(reply, BaseException):
            raise reply
        pt = int(len(full_text(req)) * self.tokens_per_char)
        ct = int(len(reply) * self.tokens_per_char)
        return LMResult(text=reply, prompt_tokens=pt, completion_tokens=ct, cost=(pt + ct) * self.cost_per_token, finish_reason="stop")
