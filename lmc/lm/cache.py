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

    `aput` serialises the entry on the event loop and leaves only the file's system calls to one writer
    thread: creating a file costs ~1 ms of system calls on a busy ext4 disk (measured in
    bench/bench_reliability.py), which, on the event loop, stalled every request in flight for that long per
    answer.  The Python work (two JSON encodings, a hash) stays on the loop because a thread running Python
    holds the GIL for up to the switch interval each time the loop returns from a socket call: with four
    writer threads doing it, a `socket.close` in the loop took 1.6 ms instead of 0.3 (cProfile of `lmc run`,
    N=8000, 10% faults).  The caller still awaits the write, so an answer is on disk before
    `LMClient.complete` returns it, as before.
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
        """`put` with its system calls off the event loop."""
        path = self._path(key)
        data = self._encode(path, payload)
        if data is None:
            return
        if self._writer is None:
            self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmc-cache")
        await asyncio.get_running_loop().run_in_executor(self._writer, self._write, path, data)

    def close(self) -> None:
        """Wait for the writes in flight; the cache stays usable (a later write starts a new pool)."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def put(self, key: str, payload: dict) -> None:
        path = self._path(key)
        data = self._encode(path, payload)
        if data is not None:
            self._write(path, data)

    @staticmethod
    def _encode(path: Path, payload: dict) -> bytes | None:
        """The file's bytes, or None (with a warning) for a payload JSON cannot hold, such as a NaN."""
        try:
            blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
        except ValueError as e:
            log.warning("cannot write cache entry %s: %s", path, e)
            return None
        # {"payload": ..., "sum": ..., "v": ...} around the payload's bytes, not a second encoding of it.
        tail = f',"sum":"{hashlib.sha256(blob).hexdigest()}","v":{json.dumps(CACHE_VERSION)}}}'
        return b'{"payload":' + blob + tail.encode()

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        try:
            atomic_write_bytes(path, data, fsync=False)
        except OSError as e:  # a full or read-only disk costs a cache write, never the call
            log.warning("cannot write cache entry %s: %s", path, e)
