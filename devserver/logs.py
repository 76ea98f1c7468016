"""The supervisor's log writer: timestamped lines, size-based rotation, resilient to write errors.

Why it works on chunks rather than lines: the tee must keep up with a server that logs
hundreds of thousands of lines a second. It reads whatever the pipe holds (``read1``),
prefixes every complete line with one timestamp in a single ``str.replace``, and writes the
block through a large buffer. It flushes whenever a read found the pipe drained and at least
every 50 ms otherwise, so a reader sees a line within 100 ms without a flush per line.

Rotation scheme (portable to Windows): only the *writer* ever holds ``<flavor>.log`` open
for long; our own readers (``start``'s echo, ``tail -f``) open, read and close on each poll.
On rotation the writer closes its handle and renames ``.log -> .1`` (shifting ``.1 -> .2``...).
If a rename is refused (on Windows, another program such as an editor holds the file open),
the writer falls back to copy-then-truncate for that step, which needs no rename of an open
file; a reader then sees the file shrink and starts over from its beginning.
Lines are never split across files: a rotation happens only at a line boundary.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

Opener = Callable[[Path], IO[bytes]]


def _open_append(path: Path) -> IO[bytes]:
    return open(path, "ab", buffering=256 * 1024)  # noqa: SIM115 - owned by the writer


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
    """Append-only log file that rolls to ``.1 .. .N`` at ``max_bytes``; never raises on I/O.

    A failing write (disk full, permission) must not stop the tee from draining the server's
    pipe, or the server would block on a full pipe. Lines that could not be written are
    counted, and a marker with the count is written as soon as writing works again.
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        backups: int,
        opener: Opener = _open_append,
        rename: Callable[[Path, Path], None] = os.replace,
        stamp: Callable[[], str] | None = None,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.opener = opener
        self.rename = rename
        self.stamp = stamp or _Stamp()
        self.dropped = 0
        self.last_error: OSError | None = None
        self.lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._size = 0

    def _ensure_open(self) -> IO[bytes]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.opener(self.path)
            self._size = self._file.seek(0, os.SEEK_END)
        return self._file

    def _close_quietly(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            try:
                handle.close()
            except OSError:
                pass

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def _move(self, src: Path, dst: Path) -> None:
        """Rename, or copy-and-truncate when the OS refuses to rename an open file."""
        try:
            self.rename(src, dst)
        except PermissionError:
            shutil.copyfile(src, dst)
            with open(src, "r+b") as handle:
                handle.truncate(0)

    def rotate(self) -> None:
        """Shift the backups up by one and start an empty current file."""
        self._close_quietly()
        if self.backups == 0:
            with open(self.path, "wb"):
                pass
        else:
            for index in range(self.backups - 1, 0, -1):
                if self._backup(index).exists():
                    self._move(self._backup(index), self._backup(index + 1))
            if self.path.exists():
                self._move(self.path, self._backup(1))
        self._size = 0

    def _write_block(self, block: bytes) -> None:
        """Write complete lines, rotating at line boundaries so no line is torn."""
        view = block
        while view:
            handle = self._ensure_open()
            room = self.max_bytes - self._size
            if len(view) <= room:
                handle.write(view)
                self._size += len(view)
                return
            cut = view.rfind(b"\n", 0, room) + 1
            if cut == 0 and self._size == 0:
                cut = view.find(b"\n") + 1 or len(view)  # one line longer than the limit
            if cut:
                handle.write(view[:cut])
                self._size += cut
                view = view[cut:]
            self.rotate()

    def write(self, block: bytes, lines: int) -> None:
        """Append ``lines`` complete lines (``block`` ends with a newline)."""
        with self.lock:
            try:
                if self.dropped:
                    note = f"{self.stamp()}[devserver] {self.dropped} log lines dropped ({self.last_error})\n"
                    self._write_block(note.encode("utf-8"))
                    self.dropped = 0
                self._write_block(block)
            except OSError as exc:
                self.dropped += lines
                self.last_error = exc
                self._close_quietly()

    def marker(self, text: str) -> None:
        """A line of our own (start/exit markers), timestamped like the server's lines."""
        self.write(f"{self.stamp()}[devserver] {text}\n".encode(), 1)
        self.flush()

    def flush(self) -> None:
        with self.lock:
            if self._file is None:
                return
            try:
                self._file.flush()
            except OSError as exc:
                self.last_error = exc
                self.dropped += 1  # at least one line was lost with the buffer
                self._close_quietly()

    def close(self) -> None:
        self.flush()
        with self.lock:
            self._close_quietly()


def tee(
    stream: Any,
    writer: RotatingWriter,
    console: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    chunk: int = 65536,
    max_line: int = 1024 * 1024,
) -> int:
    """Copy a server's output stream to the writer until EOF; return the number of lines.

    ``stream`` is a binary stream with ``read1`` (a Popen pipe). Bytes are decoded as UTF-8
    with replacement (text mode would use the ANSI code page on Windows and can raise), CRLF
    becomes LF, and a partial line waits for its end (or is cut at ``max_line`` bytes).
    ``console`` gets each timestamped block (foreground mode's second sink).
    """
    pending = b""
    total = 0
    last_flush = clock()
    while True:
        data = stream.read1(chunk)
        if not data:
            break
        drained = len(data) < chunk
        if pending:
            data = pending + data
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) < max_line:
            pending = data
            continue
        if cut == 0:
            cut = len(data)
            data += b"\n"
        complete, pending = data[:cut], data[cut:]
        total += _emit(complete, writer, console)
        now = clock()
        if drained or now - last_flush >= 0.05:
            writer.flush()
            last_flush = now
    if pending:
        total += _emit(pending + b"\n", writer, console)
    writer.flush()
    return total


def _emit(complete: bytes, writer: RotatingWriter, console: Callable[[str], None] | None) -> int:
    text = complete.decode("utf-8", "replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.count("\n")
    prefix = writer.stamp()
    out = prefix + text[:-1].replace("\n", "\n" + prefix) + "\n"
    writer.write(out.encode("utf-8"), lines)
    if console is not None:
        console(out)
    return lines
