"""Where an LM request goes and which key it carries, read from the environment at call time and never stored.

The key is looked up under the one name the user gave (`api_key_env`) or the provider's
conventional variable (OPENAI_API_KEY, ...); it goes only to the URL the user chose
(`--api-base`, lmc.yaml, the provider's default or its conventional *_BASE variable).
Every message that could echo it is scrubbed (`scrub`).
"""

from __future__ import annotations

import os

from lmc.errors import ConfigError, LMAuthError
from lmc.lm.spec import KEY_ENV, OPENAI_PROTOCOL, LMSpec

# Loopback and self-hosted OpenAI-compatible servers take any key; OpenAI's SDK refuses to send none.
DUMMY_KEY = "sk-no-key-required"

# The base URL variables litellm (and OpenAI's SDK) read when no api_base is given, in their order.
_BASE_ENV = {
    "openai": ("OPENAI_BASE_URL", "OPENAI_API_BASE"),
    "text-completion-openai": ("OPENAI_BASE_URL", "OPENAI_API_BASE"),
    "hosted_vllm": ("HOSTED_VLLM_API_BASE",),
}
_DEFAULT_BASE = {"openai": "https://api.openai.com/v1", "text-completion-openai": "https://api.openai.com/v1"}


def base_url(spec: LMSpec) -> str:
    """The URL an OpenAI-protocol request goes to (without the /chat/completions part)."""
    if spec.api_base:
        return spec.api_base.rstrip("/")
    for name in _BASE_ENV.get(spec.provider, ()):
        if os.environ.get(name, "").strip():
            return os.environ[name].strip().rstrip("/")
    default = _DEFAULT_BASE.get(spec.provider)
    if default is None:
        raise ConfigError(f"{spec.model} needs the URL of its server; pass --api-base, e.g. http://localhost:8000/v1")
    return default


def resolve_key(spec: LMSpec) -> str | None:
    """The key to send, or None to let litellm read its provider's own conventions (AWS, Vertex, ...)."""
    if spec.api_key_env:
        key = os.environ.get(spec.api_key_env)
        if key:
            return key
        if spec.api_base is None:
            raise LMAuthError(f"no API key for {spec.model}; set {spec.api_key_env}", model=spec.model)
    if spec.provider not in OPENAI_PROTOCOL:
        return None
    conventional = KEY_ENV.get(spec.provider, "")
    key = os.environ.get(conventional, "") if conventional else ""
    if key:
        return key
    if spec.api_base or spec.provider == "hosted_vllm":
        return DUMMY_KEY
    raise LMAuthError(f"no API key for {spec.model}; set {conventional}", model=spec.model)


def openai_headers(spec: LMSpec, key: str | None) -> dict[str, str]:
    """Authorization, plus the organization and project headers OpenAI's SDK sends when their variables are set."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if spec.provider in ("openai", "text-completion-openai"):
        org = os.environ.get("OPENAI_ORGANIZATION") or os.environ.get("OPENAI_ORG_ID")
        if org:
            headers["OpenAI-Organization"] = org
        project = os.environ.get("OPENAI_PROJECT_ID")
        if project:
            headers["OpenAI-Project"] = project
    return headers


def secrets_of(spec: LMSpec, key: str | None) -> list[str]:
    """Every secret a message about this LM could echo: the key sent and the variables it may come from."""
    out = [key] if key else []
    for name in (spec.api_key_env, KEY_ENV.get(spec.provider)):
        if name and os.environ.get(name):
            out.append(os.environ[name])
    return [s for s in out if s != DUMMY_KEY]


def scrub(text: str, secrets: list[str]) -> str:
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text
