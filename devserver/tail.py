"""Reading the log: the last N lines (seeking from the end) and following it as it grows.

Why backwards in blocks: the cost of ``tail -n 50`` must not grow with the log's size (a log
can reach gigabytes), so we read fixed-size blocks from the end until enough lines are seen,
and continue into the rotated ``.1``, ``.2`` ... files when the current one is too short.
A line longer than ``MAX_LINE`` is shown as its last ``MAX_LINE`` bytes behind a marker and
ends the look-back: finding its start could mean reading gigabytes.

Why the follower opens, reads and closes on every poll instead of holding the file: on
Windows a file held open cannot be renamed, and rotation renames (see logs.py). Without a
handle it cannot use the file's identity to notice a rotation, so it uses content instead:
it remembers the bytes just before its offset (a fingerprint, timestamps included). If the
file no longer has them there, it was rotated, truncated or replaced; the follower then looks
for the fingerprint in ``.1``, ``.2`` ... to print what it had not yet seen of the old file,
and goes on from the start of the new one. The same code runs on every OS.

The library never prints: callers get ``str`` lines, already decoded (invalid UTF-8 becomes
U+FFFD) and stripped of terminal control sequences a server or stray binary might contain.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

BLOCK = 64 * 1024
MAX_LINE = 64 * 1024  # a longer line is shown truncated to its last MAX_LINE bytes
TRUNCATED = f"[truncated: a line longer than {MAX_LINE // 1024} KiB, showing its end] "
FINGERPRINT = 256  # bytes before the follower's offset that identify "the same file"
POLL_READ = 4 << 20  # at most this much per poll, so memory stays bounded while catching up
MAX_BACKUPS = 1000  # config allows log_backups up to 1000

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)?")
# C0 controls but tab, DEL, and C1 controls (some terminals act on U+009B as on ESC [).
_CONTROLS = {c: "\ufffd" for c in (*range(0, 9), *range(10, 32), *range(127, 160))}


def printable(raw: bytes, truncated: bool = False) -> str:
    """Decode one line for a terminal: UTF-8 with replacement, no escape or control codes."""
    text = raw.decode("utf-8", "replace")
    if text.endswith("\r"):
        text = text[:-1]
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    if not text.isprintable():
        text = text.translate(_CONTROLS)
    return TRUNCATED + text if truncated else text


def _line(raw: bytes, cut: bool = False) -> str:
    """A whole line; one longer than MAX_LINE is shown by its end, behind the marker."""
    if len(raw) > MAX_LINE:
        return printable(raw[-MAX_LINE:], truncated=True)
    return printable(raw, cut)


def backup(path: Path, index: int) -> Path:
    """``redis.log`` -> ``redis.log.<index>`` (the writer's rotation names)."""
    return path.with_name(f"{path.name}.{index}")


def _reversed_file_lines(path: Path, end: int | None) -> Iterator[tuple[bytes, bool]]:
    """(line, start_unknown) newest first, from ``end`` (default: EOF) back to the start.

    ``start_unknown``: the line's first MAX_LINE bytes back held no newline, so only its end
    is given and the look-back stops there.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError:
        return
    with handle:
        size = handle.seek(0, os.SEEK_END)
        pos = size if end is None else min(end, size)
        carry = b""
        first = True
        while pos > 0:
            step = min(BLOCK, pos)
            pos -= step
            handle.seek(pos)
            parts = (handle.read(step) + carry).split(b"\n")
            if first and len(parts) > 1 and not parts[-1]:
                parts.pop()  # the newline that ends the last line
            first = False
            carry = parts[0]
            for line in reversed(parts[1:]):
                yield line, False
            if len(carry) > MAX_LINE:
                yield carry[-MAX_LINE:], True
                return
        if not first:
            yield carry, False


def iter_lines_backwards(path: Path, end: int | None = None) -> Iterator[str]:
    """Every line of the log, newest first, continuing through ``.1``, ``.2`` ..."""
    for index in range(MAX_BACKUPS + 1):
        current = path if index == 0 else backup(path, index)
        if index and not current.exists():
            return
        for line, start_unknown in _reversed_file_lines(current, end if index == 0 else None):
            yield _line(line, start_unknown)
            if start_unknown:
                return  # its start (and anything older) is too far back to look for


def last_lines(
    path: Path,
    count: int,
    accept: Callable[[str], bool] | None = None,
    end: int | None = None,
) -> list[str]:
    """The last ``count`` lines (that ``accept`` lets through), oldest first.

    Reads only as many blocks from the end as it needs; with a filter it may read back
    through the rotated files, whose total size the writer keeps bounded.
    """
    found: list[str] = []
    if count <= 0:
        return found
    for line in iter_lines_backwards(path, end):
        if accept is None or accept(line):
            found.append(line)
            if len(found) >= count:
                break
    found.reverse()
    return found


class Follower:
    """Yields what a log gains, across rotation, truncation and deletion (see module doc)."""

    def __init__(self, path: Path, from_end: bool = True, backups: int = MAX_BACKUPS) -> None:
        self.path = path
        self.backups = backups
        self.offset = 0
        self.mark = b""  # the FINGERPRINT bytes before offset
        self.partial = b""  # an incomplete last line, waiting for its newline
        self.partial_cut = False
        self.behind = False  # the last poll stopped at POLL_READ; poll again at once
        self._misses = 0  # polls in a row that found our file neither current nor rotated
        if from_end:
            try:
                with open(path, "rb") as handle:
                    self.offset = handle.seek(0, os.SEEK_END)
                    handle.seek(max(0, self.offset - FINGERPRINT))
                    self.mark = handle.read(self.offset - handle.tell())
            except OSError:
                pass

    def _fetch_from(self, handle: BinaryIO, limit: int | None) -> tuple[str, bytes]:
        """("ok", bytes after our offset) if the file continues what we read, else ("moved", b"").

        One read covers both the fingerprint and the new bytes, so a rotation between "is it
        still our file?" and "what is new?" cannot mix two files.
        """
        handle.seek(self.offset - len(self.mark))
        data = handle.read() if limit is None else handle.read(len(self.mark) + limit)
        if len(data) < len(self.mark) or not data.startswith(self.mark):
            return "moved", b""
        return "ok", data[len(self.mark) :]

    def _fetch(self, path: Path, limit: int | None) -> tuple[str, bytes]:
        """Like _fetch_from, opening and closing ``path``; ("missing", b"") if unreadable."""
        try:
            with open(path, "rb") as handle:
                return self._fetch_from(handle, limit)
        except OSError:
            return "missing", b""

    def poll(self) -> list[str]:
        """New complete lines since the last poll (possibly none). Never raises OSError."""
        status, data = self._fetch(self.path, POLL_READ)
        if status == "missing":
            return []  # deleted, or rotated and not yet recreated: wait for it
        if status == "ok":
            return self._consume(data, POLL_READ)
        caught_up = self._catch_up_rotated() if self.offset else None
        if caught_up is None and self.offset and self._misses < 2:
            self._misses += 1  # perhaps a copy-and-truncate rotation still copying: look again
            return []
        self._misses = 0
        return caught_up if caught_up is not None else self._continue_with(self.path, POLL_READ)

    def _catch_up_rotated(self) -> list[str] | None:
        """The rest of the file we were reading and every newer one; None if it is gone.

        Opens the current file, then ``.1``, ``.2`` ... until one holds our fingerprint,
        and only then reads. Rotation moves files to higher numbers only, so opening in
        this order can meet a file twice (skipped: same identity) but never miss one, and
        an open handle keeps reading the same file even if it is renamed meanwhile. The
        handles are held for this one catch-up only.
        """
        handles: list[BinaryIO] = []
        seen: set[tuple[int, int]] = set()
        missing = 0
        try:
            for index in range(self.backups + 1):
                try:
                    path = self.path if index == 0 else backup(self.path, index)
                    handle: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed in finally
                except OSError:
                    missing += index > 0
                    if missing > 1:  # one gap is a rename in flight; two is the end
                        break
                    continue
                missing = 0
                info = os.fstat(handle.fileno())
                if info.st_ino and (info.st_dev, info.st_ino) in seen:
                    handle.close()
                    continue
                seen.add((info.st_dev, info.st_ino))
                handles.append(handle)
                if index and self._fetch_from(handle, 0)[0] == "ok":
                    lines: list[str] = []
                    for older_first in reversed(handles):
                        lines += self._continue_from(older_first)
                    return lines
            return None
        finally:
            for handle in handles:
                handle.close()

    def _continue_from(self, handle: BinaryIO, limit: int | None = None) -> list[str]:
        """Read on from our offset if ``handle`` continues what we read, else from its start.

        Checking rather than assuming "a new file" matters for copy-and-truncate rotation,
        where a backup can be a partial copy of the file still being copied. A new file that
        is still empty does not replace our fingerprint: with none, any later file would
        look like a continuation, and a quick second rotation would go unnoticed.
        """
        status, data = self._fetch_from(handle, limit)
        if status == "ok":
            return self._consume(data, limit)
        handle.seek(0)
        data = handle.read() if limit is None else handle.read(limit)
        if not data:
            return []
        return self._restart() + self._consume(data, limit)

    def _continue_with(self, path: Path, limit: int | None) -> list[str]:
        """_continue_from for a path, opened and closed here."""
        try:
            with open(path, "rb") as handle:
                return self._continue_from(handle, limit)
        except OSError:
            return []

    def _restart(self) -> list[str]:
        """Start over at the beginning of a new file; a cut-off last line is shown as is."""
        lines = [_line(self.partial, self.partial_cut)] if self.partial else []
        self.offset, self.mark, self.partial, self.partial_cut = 0, b"", b"", False
        return lines

    def _consume(self, data: bytes, limit: int | None) -> list[str]:
        """Advance past ``data`` and return the lines it completed."""
        self.behind = limit is not None and len(data) >= limit
        if not data:
            return []
        self.offset += len(data)
        self.mark = (self.mark + data[-FINGERPRINT:])[-FINGERPRINT:]
        parts = (self.partial + data).split(b"\n") if self.partial else data.split(b"\n")
        self.partial = parts.pop()
        if self.partial_cut and parts:
            parts[0] = parts[0][-MAX_LINE:]
        lines = [_line(part, index == 0 and self.partial_cut) for index, part in enumerate(parts)]
        if parts:
            self.partial_cut = False
        if len(self.partial) > MAX_LINE:
            self.partial, self.partial_cut = self.partial[-MAX_LINE:], True
        return lines


def follow(
    path: Path,
    stop: threading.Event,
    interval: float = 0.05,
    sleep: Callable[[float], object] | None = None,
    follower: Follower | None = None,
) -> Iterator[str]:
    """New lines of the log as they come, until ``stop`` is set.

    Polls every ``interval`` seconds (50 ms: with the writer's 50 ms flush a line shows
    within 100 ms). ``sleep`` defaults to ``stop.wait``, so setting ``stop`` ends it at once;
    tests pass their own. Pass a ``follower`` made before printing the last lines, so
    nothing written in between is lost.
    """
    follower = follower or Follower(path)
    pause = sleep or stop.wait
    while not stop.is_set():
        yield from follower.poll()
        if not follower.behind:
            pause(interval)
