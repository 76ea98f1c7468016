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
_CONTROLS = {c: "\ufffd" for c in (*range(0, 9), *range(10, 32), 127)}


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
    """(line, truncated) newest first, from ``end`` (default: EOF) back to the start."""
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
        for line, truncated in _reversed_file_lines(current, end if index == 0 else None):
            yield printable(line, truncated)
            if truncated:
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
        if from_end:
            try:
                with open(path, "rb") as handle:
                    self.offset = handle.seek(0, os.SEEK_END)
                    self.mark = self._read_mark(handle, self.offset)
            except OSError:
                pass

    @staticmethod
    def _read_mark(handle: BinaryIO, offset: int) -> bytes:
        start = max(0, offset - FINGERPRINT)
        handle.seek(start)
        return handle.read(offset - start)

    def _continues(self, candidate: Path) -> bool:
        """Does ``candidate`` hold our fingerprint right before our offset?"""
        try:
            with open(candidate, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                return size >= self.offset and self._read_mark(handle, self.offset) == self.mark
        except OSError:
            return False

    def poll(self) -> list[str]:
        """New complete lines since the last poll (possibly none). Never raises OSError."""
        lines: list[str] = []
        if not self.path.exists():
            return lines  # deleted, or rotated and not yet recreated: wait for it
        if not self._continues(self.path):
            lines += self._catch_up_rotated()
            self.offset, self.mark = 0, b""
        lines += self._read(self.path, POLL_READ)
        return lines

    def _catch_up_rotated(self) -> list[str]:
        """The unseen end of the file we were reading, if rotation moved it to a backup."""
        lines: list[str] = []
        if self.offset or self.mark:
            for index in range(1, self.backups + 1):
                candidate = backup(self.path, index)
                if not candidate.exists():
                    break
                if self._continues(candidate):
                    lines += self._read(candidate, None)
                    for newer in range(index - 1, 0, -1):
                        self.offset, self.mark = 0, b""
                        lines += self._read(backup(self.path, newer), None)
                    break
        if self.partial:  # a file truncated mid-line: show what we had
            lines.append(printable(self.partial, self.partial_cut))
            self.partial, self.partial_cut = b"", False
        return lines

    def _read(self, path: Path, limit: int | None) -> list[str]:
        """Read from our offset to EOF (or ``limit`` bytes), closing the file before returning."""
        try:
            with open(path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read() if limit is None else handle.read(limit)
        except OSError:
            return []
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
