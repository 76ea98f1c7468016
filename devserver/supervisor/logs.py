"""The supervisor's log writer: timestamped lines, size-based rotation, resilient to write errors.

Why a buffer: the tee (tee.py) must keep up with a server that logs hundreds of thousands
of lines a second, and hands over blocks of timestamped lines, which are appended to an
in-memory buffer of whole lines. The buffer goes to the file (one unbuffered ``write`` per
drain) whenever a read found the pipe drained, when it passes 256 KiB, and at the latest
50 ms after its oldest byte arrived (a flusher thread covers a pipe that stays silent after
a full read), so a reader sees a line within 100 ms without paying a flush per line.

Rotation scheme, and why it is safe on Windows (where a file another process holds open
cannot be renamed or deleted):

1. Only the writer keeps ``<flavor>.log`` open for long, and it closes its handle before a
   rotation. Our own readers (``tail``, ``tail -f``, ``start``'s echo) open, read and close
   on every poll, so they hold the file for milliseconds, never across a rotation attempt
   for long; they recognise a rotated or truncated file by content (see tail.py).
2. Rotation renames ``.N-1 -> .N`` ... ``.log -> .1`` (the oldest is replaced, so the total
   stays within about ``(backups + 1) * max_bytes``). A rename the OS refuses
   (``PermissionError``: on Windows, some program such as an editor or ``Get-Content -Wait``
   holds that file open without delete sharing) falls back to copy-then-truncate for that
   step, which renames nothing: the held file keeps its identity and just becomes empty.
3. If even that fails, the lines are dropped and counted (bounded disk beats a growing file),
   rotation is retried after a second, and a marker with the count is written once writing
   works again. The same holds for any write error (disk full, permission).

Lines are never split across files or torn: rotation happens only at a line boundary, and a
write that fails half-way is cut back to the last whole line.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

Opener = Callable[[Path], IO[bytes]]
FLUSH_INTERVAL = 0.05  # seconds a line may wait in the buffer (readers poll every 50 ms)
BUFFER_BYTES = 256 * 1024
ROTATE_RETRY = 1.0  # seconds between rotation attempts after one failed
DELETED_CHECK = 1.0  # seconds between checks that the log was not deleted under us


class _Partial(Exception):
    """A block was written up to byte ``done`` (a line boundary), then ``error`` struck."""

    def __init__(self, done: int, error: OSError) -> None:
        super().__init__(str(error))
        self.done, self.error = done, error


def _open_append(path: Path) -> IO[bytes]:
    # Unbuffered: the writer keeps its own buffer of whole lines, so it knows exactly what
    # reached the file when a write fails.
    return open(path, "ab", buffering=0)


class _Stamp:
    """``[YYYY-MM-DD HH:MM:SS] `` in local time, formatted once per second."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.second = -1
        self.text = ""

    def __call__(self) -> str:
        now = int(self.clock())
        if now != self.second:
            self.second = now
            self.text = time.strftime("[%Y-%m-%d %H:%M:%S] ", time.localtime(now))
        return self.text


class RotatingWriter:
    """Append-only log that rolls to ``.1 .. .N`` at ``max_bytes``; never raises on I/O.

    A failing write must not stop the tee from draining the server's pipe, or the server
    would block on a full pipe. Lines that could not be written are counted, and a marker
    with the count is written as soon as writing works again. Thread-safe: the tee and the
    flusher thread share it.
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        backups: int,
        opener: Opener = _open_append,
        rename: Callable[[Path, Path], None] = os.replace,
        stamp: Callable[[], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        handle: IO[bytes] | None = None,
    ) -> None:
        """``handle``: the log already opened for appending (by the supervisor's bootstrap,
        before ``start`` returned), used as the first file: a project folder moved right
        after the start is then not recreated at the old place by the first open."""
        self.path = path
        self.max_bytes = max(1, max_bytes)
        self.backups = backups
        self.opener = opener
        self.rename = rename
        self.stamp = stamp or _Stamp()
        self.clock = clock
        self.dropped = 0
        self.last_error: OSError | None = None
        self.lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._size = 0
        self._buffer = bytearray()
        self._dirty_since: float | None = None
        self._rotate_after = 0.0
        self._check_at = 0.0
        self._opened = handle is not None
        if handle is not None:
            self._file = handle
            self._size = handle.seek(0, os.SEEK_END)
        self.moved = False  # the log's folder disappeared while the file was open

    # -- buffering -------------------------------------------------------------------------
    def write(self, block: bytes, lines: int = 0) -> None:
        """Queue whole lines (``block`` ends with a newline); written at the next flush."""
        with self.lock:
            if not self._buffer:
                self._dirty_since = self.clock()
            self._buffer += block
            if len(self._buffer) >= BUFFER_BYTES:
                self._drain()

    def marker(self, text: str) -> None:
        """A line of our own (start/exit markers), timestamped like the server's lines.

        Written at once, even during the back-off after a failure: markers are few, and an
        exit marker lost to a back-off that outlived the fault would hide how the run ended.
        """
        self.write(f"{self.stamp()}[devserver] {text}\n".encode())
        with self.lock:
            self._rotate_after = 0.0
            self._drain()

    def flush(self) -> None:
        with self.lock:
            self._drain()

    def flush_if_due(self, interval: float = FLUSH_INTERVAL) -> bool:
        """Flush when the oldest buffered byte waited ``interval``; True if it flushed."""
        with self.lock:
            since = self._dirty_since
            if since is None or self.clock() - since < interval:
                return False
            self._drain()
            return True

    def close(self) -> None:
        with self.lock:
            self._rotate_after = 0.0  # a last attempt, whatever the back-off says
            self._drain()
            self._close_quietly()

    def _drain(self) -> None:
        """Write the buffer to the file; on OSError drop it with a count (lock held)."""
        if not self._buffer:
            return
        data = bytes(self._buffer)
        self._buffer.clear()
        self._dirty_since = None
        reported = self.dropped
        if reported:
            if self.clock() < self._rotate_after:
                self.dropped += data.count(b"\n")  # still backing off after a failure
                return
            note = f"{self.stamp()}[devserver] {reported} log lines dropped ({self.last_error})\n"
            data = note.encode("utf-8") + data
        try:
            self._write_block(data)
            self.dropped = 0
        except _Partial as failure:
            self.last_error = failure.error
            self._close_quietly()
            unwritten = data.count(b"\n", failure.done)
            # The note is the first line: when nothing got out, it was not written either.
            self.dropped = reported + unwritten - 1 if reported and failure.done == 0 else unwritten
            self._rotate_after = self.clock() + ROTATE_RETRY

    # -- the file --------------------------------------------------------------------------
    def _ensure_open(self) -> IO[bytes]:
        if self._file is not None and self.clock() >= self._check_at:
            # Someone deleted the log (POSIX allows it while we hold it open): without this,
            # lines would go into the unlinked file, unseen, until the next rotation.
            self._check_at = self.clock() + DELETED_CHECK
            if not self.moved and not self.path.exists():
                if self.path.parent.is_dir():
                    self._close_quietly()  # the file alone was deleted: start a new one
                else:
                    self._folder_gone(self._file)
        if self._file is None:
            if not self._opened:  # only the first open may create the folder: never again
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.opener(self.path)
            self._opened = True
            self._size = self._file.seek(0, os.SEEK_END)
        return self._file

    def _folder_gone(self, handle: IO[bytes]) -> None:
        """The log's folder was moved (the project folder renamed) or deleted.

        Recreating the old path would scatter the log over two places, so the writer keeps
        writing to the file it has open (it moved along with its folder) up to max_bytes,
        without rotation, and then stops with a marker.
        """
        self.moved = True
        self._write_note(
            handle,
            f"the log folder {self.path.parent} was moved or deleted: logging continues in "
            "this file without rotation up to log_max_bytes, then stops (restart the server "
            "from the project's new place)",
        )

    def _write_note(self, handle: IO[bytes], text: str) -> None:
        note = f"{self.stamp()}[devserver] {text}\n".encode()
        try:
            handle.write(note)
            self._size += len(note)
        except OSError:
            pass

    def _close_quietly(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            try:
                handle.close()
            except OSError:
                pass

    def _write_all(self, data: bytes) -> None:
        """Write every byte or none: a partial write is cut back so no torn line remains."""
        handle = self._ensure_open()
        start, done = self._size, 0
        try:
            while done < len(data):
                written = handle.write(data[done:])
                done += len(data) - done if written is None else written
        except OSError:
            if done:
                try:
                    handle.truncate(start)
                except OSError:
                    pass
            raise
        self._size += done

    def _write_block(self, block: bytes) -> None:
        """Write whole lines, rotating at line boundaries; _Partial says how far it got."""
        pos, end = 0, len(block)
        try:
            while pos < end:
                room = self.max_bytes - self._ensure_size()
                if end - pos <= room:
                    self._write_all(block[pos:] if pos else block)
                    return
                cut = block.rfind(b"\n", pos, pos + max(room, 0)) + 1
                if cut == 0 and self._size == 0:  # one line longer than the limit: alone
                    newline = block.find(b"\n", pos)
                    cut = newline + 1 if newline >= 0 else end
                if cut > pos:
                    self._write_all(block[pos:cut])
                    pos = cut
                self.rotate()
        except OSError as exc:
            raise _Partial(pos, exc) from exc

    def _ensure_size(self) -> int:
        self._ensure_open()
        return self._size

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def _move(self, src: Path, dst: Path) -> None:
        """Rename; when the OS refuses (an open file on Windows), copy then truncate."""
        try:
            self.rename(src, dst)
        except PermissionError:
            import shutil  # only on this rare path: the supervisor's start-up stays lean

            shutil.copyfile(src, dst)
            with open(src, "r+b") as handle:
                handle.truncate(0)

    def rotate(self) -> None:
        """Shift the backups up by one and start an empty current file."""
        if self.moved:
            if self._file is not None:
                self._write_note(self._file, "log full and its folder was moved: logging stops")
            self._close_quietly()
            raise FileNotFoundError(f"the log folder {self.path.parent} was moved or deleted")
        self._close_quietly()
        if self.backups <= 0:
            with open(self.path, "wb"):
                pass
        else:
            for index in range(self.backups - 1, 0, -1):
                if self._backup(index).exists():
                    self._move(self._backup(index), self._backup(index + 1))
            if self.path.exists():
                self._move(self.path, self._backup(1))
        self._size = 0
