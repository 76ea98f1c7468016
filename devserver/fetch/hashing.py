"""sha256 computed on a second core while the caller keeps reading and writing.

hashlib releases the GIL for large updates, and so do socket reads, file writes and zlib, so
a worker thread hashing 1 MiB chunks overlaps with the download (or the extraction) instead
of adding to it: on a 200 MB archive that is a few hundred milliseconds. The queue is bounded,
so a slow hash makes the producer wait rather than buffer the archive in memory.
"""

from __future__ import annotations

import hashlib
import queue
import threading

_DEPTH = 8  # chunks in flight: at most ~8 MiB of memory


class BackgroundSha256:
    """``update`` hands bytes to a worker thread; ``hexdigest`` waits for it and finishes."""

    def __init__(self) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_DEPTH)
        self._hash = hashlib.sha256()
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()
        self._digest = ""

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._hash.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._queue.put(bytes(chunk))

    def hexdigest(self) -> str:
        if not self._digest:
            self._queue.put(None)
            self._thread.join()
            self._digest = self._hash.hexdigest()
        return self._digest

    def close(self) -> None:
        """Stop the worker without a result (the download failed or restarts)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
