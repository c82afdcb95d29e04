"""Shards of an evaluation: which 1-based part of N an example belongs to, stable across machines."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from lmc.errors import ConfigError

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Which 1-based part of N a report covers."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(spec: str) -> tuple[int, int]:
    """`"2/4"` -> `(2, 4)`; 1-based.  A malformed or out-of-range spec is a one-line `ConfigError`.

    >>> parse_shard("2/4")
    (2, 4)
    """
    m = _SHARD_RE.match(spec or "")
    if not m:
        raise ConfigError(f"bad shard '{spec}'; expected i/N such as 1/4")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ConfigError(f"shard '{spec}' is out of range; expected i/N with 1 <= i <= N, such as 1/{max(count, 1)}")
    return index, count


def shard_of(example_id: str, count: int) -> int:
    """The 1-based shard an id belongs to: sha256 of its UTF-8 text, so stable across runs, machines and Python versions.

    >>> [shard_of(i, 3) for i in ("ex-1", "ex-2", "ex-3", "ex-4")]
    [1, 1, 3, 2]
    """
    digest = hashlib.sha256(example_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def in_shard(example_id: str, index: int, count: int) -> bool:
    return shard_of(example_id, count) == index
