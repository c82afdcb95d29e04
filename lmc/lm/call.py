"""One LM call as data: the request (and its cache key and OpenAI body fields) and the result, shared by every transport."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

from lmc.lm.constraint import wire_fields
from lmc.lm.spec import LMSpec

# Bump when the meaning of a cached entry changes (request canonicalisation, stored fields).
CACHE_VERSION = 1
REQUEST_FIELDS = ("temperature", "max_tokens", "stop")
OPENAI_MAX_STOPS = 4


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
    # The reply's shape when it holds typed fields (see lmc/lm/constraint.py): ((label, kind, options), ...)
    # for a completion reply, the first field's label already in the prompt.  Backends that can
    # constrain decoding do; the reply is parsed either way.
    shape: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    # Choose one of `choices` by the log-probability of each whole label after the prompt (rank
    # classification) instead of generating; the result carries every label's score.
    rank: bool = False
    # Score labels on a server even when it can decode under a constraint.  Each label then costs one echoed
    # request of the whole prompt, so by default a server that speaks a constraint dialect decodes under it
    # instead (llama-cpp-python's server spends ~0.4 s of CPU per prompt token sorting its vocabulary when it
    # echoes log-probabilities).  Routing only: the label requests are cached one by one, so not in the key.
    rank_on_server: bool = False
    # How the constraint travels to a server (`constraint.DIALECTS`: "llama.cpp", "vllm", "ollama"); empty
    # when it does not.  Part of the cache key: an answer decoded under the constraint is another answer.
    wire: str = ""
    # Return the prompt's own tokens with their log-probabilities (scoring a label on a server).
    echo: bool = False
    # A chat reply's JSON schema (canonical JSON text), sent as OpenAI's response_format json_schema.
    schema: str = ""

    def canonical(self, model: str, extra: dict | None = None) -> dict:
        settings = {
            "temperature": float(self.temperature),
            "max_tokens": int(self.max_tokens),
            "stop": list(self.stop),
            "json_mode": bool(self.json_mode),
        }
        settings.update(extra or {})
        if self.choices:  # only when set, so existing cache keys stay valid
            settings["choices"] = list(self.choices)
        if self.shape:
            settings["shape"] = [[label, kind, list(options)] for label, kind, options in self.shape]
        if self.rank:
            settings["rank"] = True
        if self.wire:
            settings["wire"] = self.wire
        if self.echo:
            settings["echo"] = True
        if self.schema:
            settings["schema"] = self.schema
        body: dict = {"v": CACHE_VERSION, "model": model, "settings": settings, "sample": int(self.sample)}
        if self.messages is not None:
            body["messages"] = [dict(m) for m in self.messages]
        if self.prompt is not None:
            body["prompt"] = self.prompt
        return body

    def cache_key(self, model: str, extra: dict | None = None) -> str:
        """sha256 of the canonical request; never includes a key, an api_base or the transport."""
        text = json.dumps(self.canonical(model, extra), sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
    # A ranked request's scores: (label, summed log-probability of its tokens, token count), in `choices` order.
    label_scores: tuple[tuple[str, float, int], ...] = ()
    # An echoed request's tokens: (character offset in the text, log-probability), the first token's None.
    token_logprobs: tuple[tuple[int, float | None], ...] = ()


def make_request(spec: LMSpec, *, messages: list[dict] | tuple[dict, ...] | None = None, prompt: str | None = None, **overrides: object) -> LMRequest:
    """An LMRequest whose temperature/max_tokens/stop default to the spec's settings, then `overrides`."""
    values: dict = {k: v for k, v in spec.settings if k in REQUEST_FIELDS}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "stop" in values:
        stop = values["stop"]
        values["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
    return LMRequest(messages=tuple(messages) if messages is not None else None, prompt=prompt, **values)


def extra_settings(spec: LMSpec) -> dict | None:
    """The spec's settings beyond temperature/max_tokens/stop (top_p, seed, …): they reach the body and the cache key."""
    extra = {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.settings if k not in REQUEST_FIELDS and k != "json_mode"}
    return extra or None


def fit_mode(spec: LMSpec, req: LMRequest) -> LMRequest:
    """The request in the shape the model takes (messages for chat, a prompt for completion models).

    The prompt builder already decides by `spec.mode`; this only keeps a mismatch from crashing."""
    if spec.mode == "chat" and req.messages is None:
        return replace(req, messages=({"role": "user", "content": req.prompt or ""},), prompt=None, choices=(), shape=(), rank=False)
    if spec.mode == "completion" and req.prompt is None:
        text = "\n\n".join(str(m.get("content", "")) for m in req.messages or ())
        return replace(req, prompt=text, messages=None, json_mode=False, choices=(), shape=(), rank=False, schema="")
    return req


def openai_fields(spec: LMSpec, req: LMRequest) -> dict:
    """The OpenAI body fields of a request, besides model and messages/prompt; both transports send exactly these."""
    fields: dict = {"temperature": req.temperature, "max_tokens": req.max_tokens}
    if req.stop:
        # api.openai.com takes at most 4 stop strings; the prompt lists the most useful first and the
        # reply parser cuts at the rest (prompts.cut_run_on).  Self-hosted servers take them all.
        cap = OPENAI_MAX_STOPS if spec.provider in ("openai", "text-completion-openai") and not spec.api_base else None
        fields["stop"] = list(req.stop)[:cap]
    fields.update(extra_settings(spec) or {})
    if req.schema and spec.mode == "chat":
        fields["response_format"] = {"type": "json_schema", "json_schema": {"name": "reply", "schema": json.loads(req.schema)}}
    elif req.json_mode and spec.mode == "chat":
        fields["response_format"] = {"type": "json_object"}
    if req.wire:
        fields.update(wire_fields(req.wire, req.choices, req.shape))
    if req.echo:
        fields.update(echo=True, logprobs=1)
    return fields


def echoed_logprobs(choice: dict) -> tuple[tuple[int, float | None], ...]:
    """(character offset, log-probability) of each token of an echoed completion choice; () when the server sent none."""
    lp = choice.get("logprobs") or {}
    offsets, values = lp.get("text_offset"), lp.get("token_logprobs")
    if not isinstance(offsets, list) or not isinstance(values, list) or len(offsets) != len(values):
        return ()
    return tuple((int(o), None if v is None else float(v)) for o, v in zip(offsets, values))


def unwrap(req: LMRequest, text: str) -> str:
    """The answer inside a reply the constraint's dialect wrapped: Ollama's `format` makes a label a JSON string."""
    if req.wire == "ollama" and text.strip().startswith('"'):
        try:
            value = json.loads(text)
        except ValueError:
            return text
        return value if isinstance(value, str) else text
    return text
