"""The disk cache of LM answers: one checksummed JSON file per request key, shared safely between processes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from lmc.files import atomic_write_bytes
from lmc.lm.call import CACHE_VERSION

log = logging.getLogger("lmc.lm")


class DiskCache:
    """One JSON file per key, written to a temp file then renamed, so concurrent processes never see half a file."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        try:
            entry = json.loads(raw)
            payload = entry["payload"]
            blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
            if entry.get("v") != CACHE_VERSION or entry.get("sum") != hashlib.sha256(blob).hexdigest():
                raise ValueError("checksum")
            if not isinstance(payload.get("text"), str) or not payload["text"]:
                raise ValueError("empty")
            return payload
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("discarding corrupt cache entry %s", path)
            try:
                path.unlink()
            except OSError:
                pass
            return None

    def put(self, key: str, payload: dict) -> None:
        path = self._path(key)
        try:
            blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
        except ValueError as e:
            log.warning("cannot write cache entry %s: %s", path, e)
            return
        entry = {"v": CACHE_VERSION, "sum": hashlib.sha256(blob).hexdigest(), "payload": payload}
        try:
            atomic_write_bytes(path, json.dumps(entry, sort_keys=True, allow_nan=False).encode(), fsync=False)
        except ValueError as e:  # a NaN in the payload: JSON cannot hold it, so the entry is not kept
            log.warning("cannot write cache entry %s: %s", path, e)
        except OSError as e:  # a full or read-only disk costs a cache write, never the call
            log.warning("cannot write cache entry %s: %s", path, e)
