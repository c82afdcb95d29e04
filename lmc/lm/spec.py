"""What an LM is: the spec a `--lm` value names, litellm's model table (read as JSON), and which transport serves it.

Two transports send requests (see README, "Which transport a model gets"):

- **direct**, lmc's own HTTP client (`http_transport.py`), for the providers whose wire
  protocol *is* OpenAI's chat or completions API: `openai/…`, `text-completion-openai/…`
  and `hosted_vllm/…`, at any `--api-base` (vLLM, llama.cpp, Ollama's /v1, SGLang, TGI, a
  proxy) or at OpenAI itself;
- **litellm** (`litellm_transport.py`) for every other provider, whose protocol litellm
  translates (Anthropic, Bedrock, Vertex, Gemini, Azure's auth, …), and for the OpenAI models
  whose request litellm rewrites per model family (reasoning models take
  `max_completion_tokens` and refuse sampling settings; `gpt-4` refuses `response_format`):
  those rules change with each model release, and one copy of them is enough.

The choice never changes a request's body, its cache key or its answer, so the artifact does
not record it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lmc.budget import Price
from lmc.errors import ConfigError

LOCAL_MODELS = ("local/gemma-3-270m",)
LOCAL_N_CTX = 4096  # gemma-3-270m was trained at 32k; 4096 costs ~50 MB more KV cache than 2048 and fits most prompts

# Providers accepted without importing litellm (its import costs ~3 s); anything else is
# checked against litellm's own provider list.
KNOWN_PROVIDERS = frozenset(
    {
        "openai",
        "text-completion-openai",
        "anthropic",
        "azure",
        "azure_text",
        "ollama",
        "ollama_chat",
        "gemini",
        "vertex_ai",
        "groq",
        "together_ai",
        "mistral",
        "hosted_vllm",
        "openrouter",
        "deepseek",
        "bedrock",
        "cohere",
        "cohere_chat",
        "huggingface",
        "fireworks_ai",
        "perplexity",
        "xai",
        "cerebras",
        "lm_studio",
        "llamafile",
        "deepinfra",
        "anyscale",
        "replicate",
        "databricks",
        "sambanova",
    }
)

# Where a provider's key lives by litellm's conventions; used in messages and by the direct
# transport, never to read more than that one name.
KEY_ENV = {
    "openai": "OPENAI_API_KEY",
    "text-completion-openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "azure": "AZURE_API_KEY",
    "azure_text": "AZURE_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "groq": "GROQ_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "cohere": "COHERE_API_KEY",
    "cohere_chat": "COHERE_API_KEY",
    "huggingface": "HF_TOKEN",
    "fireworks_ai": "FIREWORKS_AI_API_KEY",
    "perplexity": "PERPLEXITYAI_API_KEY",
    "xai": "XAI_API_KEY",
    "cerebras": "CEREBRAS_API_KEY",
    "deepinfra": "DEEPINFRA_API_KEY",
    "replicate": "REPLICATE_API_KEY",
    "sambanova": "SAMBANOVA_API_KEY",
    "hosted_vllm": "HOSTED_VLLM_API_KEY",
}

# Providers whose requests are OpenAI's chat/completions body as it stands.
OPENAI_PROTOCOL = frozenset({"openai", "text-completion-openai", "hosted_vllm"})
_COMPLETION_PREFIXES = ("local/", "text-completion-openai/", "text-completion-codestral/", "azure_text/")

TRANSPORTS = ("direct", "litellm")

# OpenAI model names whose request litellm rewrites: the o-series and gpt-5 onwards (reasoning models),
# and the two chat models that refuse response_format.  Matched on the name so a model newer than the
# table is covered too; a false match costs only speed (the request goes through litellm).
_REWRITTEN = re.compile(r"(^|[:/])o\d|gpt-([5-9]|\d\d)|^gpt-4$|^gpt-3\.5-turbo-16k$")


# ---------------------------------------------------------------- litellm's model table


@lru_cache(maxsize=1)
def _table_bytes() -> bytes:
    """The raw text of litellm's bundled model/price table (3 MB), found without importing litellm."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return b""
    path = Path(list(spec.submodule_search_locations)[0]) / "model_prices_and_context_window_backup.json"
    try:
        return path.read_bytes()
    except OSError:
        return b""


@lru_cache(maxsize=1)
def model_table() -> dict:
    """litellm's whole model/price table as a dict (~20 ms to parse; lookups use `table_entry`)."""
    try:
        table = json.loads(_table_bytes() or b"{}")
    except ValueError:
        return {}
    return table if isinstance(table, dict) else {}


@lru_cache(maxsize=1)
def _top_level_indent() -> int | None:
    """How far the table's pretty-printed top-level keys are indented; None when its layout is another."""
    layout = _TABLE_LAYOUT.match(_table_bytes())
    return len(layout.group(1)) if layout else None


@lru_cache(maxsize=512)
def table_entry(key: str) -> dict | None:
    """The table's entry for one exact key, found in the raw text instead of parsing all of it.

    `lmc run` of one input needs two or three entries, and parsing the whole table cost ~20 ms of a
    ~350 ms cold start.  A top-level key is a line `"key": {` indented no deeper than the first key
    (nested ones are deeper); the last such line wins, as in json.loads.  Any other layout, or a key
    that is not plain ASCII, is looked up in the parsed table instead (tests/test_transports.py
    checks the two agree on every key).
    """
    data = _table_bytes()
    indent = _top_level_indent()
    if indent is None or not key.isascii():
        entry = model_table().get(key)
        return entry if isinstance(entry, dict) else None
    needle = (json.dumps(key) + ": {").encode()
    end = len(data)
    while (at := data.rfind(needle, 0, end)) >= 0:
        lead = data[data.rfind(b"\n", 0, at) + 1 : at]
        if len(lead) <= indent and not lead.strip(b" \t"):
            start = at + len(needle) - 1
            try:
                entry, _ = _DECODER.raw_decode(data[start : start + 65536].decode("utf-8", "replace"))
            except ValueError:  # an entry longer than the window, or torn text: ask the parser
                entry = model_table().get(key)
            return entry if isinstance(entry, dict) else None
        end = at
    return None


_TABLE_LAYOUT = re.compile(rb"\{[ \t]*\r?\n([ \t]*)\"")
_DECODER = json.JSONDecoder()


def model_info(model: str) -> dict | None:
    """litellm's table entry for a model string, trying it whole and without its provider prefix."""
    entry = table_entry(model)
    if isinstance(entry, dict):
        return entry
    provider, _, bare = model.partition("/")
    entry = table_entry(bare) if bare else None
    if isinstance(entry, dict):
        if entry.get("litellm_provider") in (provider, None) or provider in ("openai", "text-completion-openai"):
            return entry
    return None


def table_cost(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """What litellm's table says `model` charges for this usage (0 when it lists no price)."""
    info = model_info(model)
    if not info:
        return 0.0
    try:
        return prompt_tokens * float(info.get("input_cost_per_token") or 0.0) + completion_tokens * float(info.get("output_cost_per_token") or 0.0)
    except (TypeError, ValueError):
        return 0.0


def table_price(model: str) -> Price | None:
    """litellm's price for `model`, when its table lists one (the budget's `Ledger` reserves by it)."""
    info = model_info(model)
    if not info or ("input_cost_per_token" not in info and "output_cost_per_token" not in info):
        return None
    try:
        return Price(float(info.get("input_cost_per_token") or 0.0), float(info.get("output_cost_per_token") or 0.0), "litellm's price table")
    except (TypeError, ValueError):
        return None


def provider_of(model: str) -> str:
    if "/" in model:
        return model.split("/", 1)[0]
    info = model_info(model)
    return (info or {}).get("litellm_provider", "openai")


@lru_cache(maxsize=256)
def mode_of(model: str) -> str:
    """ "completion" for base models (a prompt string), "chat" for the rest (messages)."""
    if model.startswith(_COMPLETION_PREFIXES):
        return "completion"
    info = model_info(model)
    if info is not None and info.get("mode") == "completion":
        return "completion"
    return "chat"


# ---------------------------------------------------------------- the spec


@dataclass(frozen=True)
class LMSpec:
    """A configured LM: what --lm, an `lm` alias or lmc.yaml resolves to."""

    model: str
    api_base: str | None = None
    api_key_env: str | None = None  # the NAME of the env var holding the key; the key is never stored
    settings: tuple[tuple[str, object], ...] = ()

    @property
    def provider(self) -> str:
        return provider_of(self.model)

    @property
    def mode(self) -> str:
        return mode_of(self.model)

    @property
    def is_local(self) -> bool:
        return self.model.startswith("local/")

    @property
    def key_env(self) -> str | None:
        """The env var that holds (or would hold) the key, for messages."""
        return self.api_key_env or KEY_ENV.get(self.provider)

    @property
    def wire_model(self) -> str:
        """The model name the server is asked for: the spec's model without its provider prefix."""
        return self.model.split("/", 1)[1] if "/" in self.model else self.model

    def setting(self, name: str, default: object = None) -> object:
        return dict(self.settings).get(name, default)

    def to_json(self) -> dict:
        return {"model": self.model, "api_base": self.api_base, "api_key_env": self.api_key_env, "settings": {k: v for k, v in self.settings}}

    @classmethod
    def from_json(cls, data: dict) -> "LMSpec":
        settings = data.get("settings") or {}
        return cls(data["model"], data.get("api_base"), data.get("api_key_env"), tuple(sorted((k, _freeze(v)) for k, v in settings.items())))


def _freeze(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def parse_lm(text: str, api_base: str | None = None, *, api_key_env: str | None = None, settings: dict | None = None) -> LMSpec:
    """An `--lm` value such as "openai/gpt-4o-mini" or "local/gemma-3-270m" as an LMSpec."""
    model = (text or "").strip()
    if not model or any(c.isspace() for c in model):
        raise ConfigError(f"bad LM '{text}'; expected 'provider/model', e.g. 'openai/gpt-4o-mini' or 'local/gemma-3-270m'")
    if "/" in model:
        provider = model.split("/", 1)[0]
        if not model.split("/", 1)[1]:
            raise ConfigError(f"LM '{model}' names no model after '{provider}/'")
        if provider == "local":
            if model not in LOCAL_MODELS:
                raise ConfigError(f"unknown local model '{model}'; expected one of: {', '.join(sorted(LOCAL_MODELS))}")
        elif provider not in KNOWN_PROVIDERS:
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
    except Exception:  # noqa: BLE001 - no litellm: only the built-in list can be offered
        return sorted(KNOWN_PROVIDERS | {"local"})
    return sorted({p.value for p in LlmProviders} | {"local"})


# ---------------------------------------------------------------- knobs from the environment


def env_number(name: str, default: float, *, whole: bool = False) -> float:
    """A number of 0 or more from the environment variable `name`, or `default` when it is unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {'whole number' if whole else 'number'}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be 0 or more, got {raw}")
    return value


# ---------------------------------------------------------------- which transport


@lru_cache(maxsize=256)
def rewritten_by_litellm(model: str) -> bool:
    """True for an OpenAI model whose request litellm changes per model family (see the module docstring)."""
    if provider_of(model) != "openai":
        return False
    info = model_info(model) or {}
    return bool(info.get("supports_reasoning")) or _REWRITTEN.search(model.split("/", 1)[-1]) is not None


def speaks_openai(spec: LMSpec) -> bool:
    """Whether lmc's own transport sends exactly the request litellm would for this LM."""
    return spec.provider in OPENAI_PROTOCOL and not rewritten_by_litellm(spec.model)


def check_transport(value: object, where: str = "--transport") -> str | None:
    """A transport preference as given by the user (None: by protocol), or ConfigError."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text not in TRANSPORTS:
        raise ConfigError(f"{where}: unknown transport {value!r}; expected one of: {', '.join(TRANSPORTS)}")
    return text


def transport_for(spec: LMSpec, preference: str | None = None) -> str:
    """ "direct" or "litellm" for a remote LM: by protocol unless the user chose; ConfigError for an impossible choice."""
    if preference == "litellm":
        return "litellm"
    if speaks_openai(spec):
        return "direct"
    if preference == "direct":
        why = (
            "litellm rewrites its requests per model family (max_completion_tokens, unsupported settings)"
            if spec.provider in OPENAI_PROTOCOL
            else f"{spec.provider} does not speak the OpenAI protocol as it stands"
        )
        raise ConfigError(
            f"--transport direct cannot send requests for {spec.model}: {why}",
            hint="leave --transport unset (each LM then gets the transport that serves it) or pass --transport litellm",
        )
    return "litellm"
