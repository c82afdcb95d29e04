"""The disk cache of LM answers: one checksummed JSON file per request key, shared safely between processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import os
from pathlib import Path

from lmc.files import atomic_write_bytes
from lmc.lm.call import CACHE_VERSION

log = logging.getLogger("lmc.lm")


class DiskCache:
    """One JSON file per key, written to a temp file then renamed, so concurrent processes never see half a file.

    `aput` writes on a small thread pool: creating a file costs ~1 ms of system calls on a busy ext4
    disk (measured in bench/bench_reliability.py), which, on the event loop, stalled every request in
    flight for that long per answer.  The caller still awaits the write, so an answer is on disk
    before `LMClient.complete` returns it, as before.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._writer: concurrent.futures.ThreadPoolExecutor | None = None

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
            if not isinstance(payload.get("text"), str):  # may be empty: a settled request's empty answer is cached
                raise ValueError("text")
            return payload
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("discarding corrupt cache entry %s", path)
            try:
                path.unlink()
            except OSError:
                pass
            return None

    async def aput(self, key: str, payload: dict) -> None:
        """`put` off the event loop."""
        if self._writer is None:
            self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="lmc-cache")
        await asyncio.get_running_loop().run_in_executor(self._writer, self.put, key, payload)

    def close(self) -> None:
        """Wait for the writes in flight; the cache stays usable (a later write starts a new pool)."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

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
