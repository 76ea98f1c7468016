"""Reading the log: the last N lines, found by seeking from the end.

Why backwards in blocks: the cost of ``tail -n 50`` must not grow with the log's size (a log
can reach gigabytes), so we read fixed-size blocks from the end until enough newlines are
seen, and continue into the rotated ``.1`` file when the current one is too short.
"""

from __future__ import annotations

import os
from pathlib import Path

BLOCK = 64 * 1024
MAX_LINE = 64 * 1024  # a longer line is shown truncated to its last MAX_LINE bytes


def _last_lines_of_file(path: Path, count: int) -> list[bytes]:
    """Up to ``count`` last lines of one file (without newlines), reading from the end."""
    try:
        handle = open(path, "rb")
    except OSError:
        return []
    with handle:
        end = handle.seek(0, os.SEEK_END)
        pos = end
        chunks: list[bytes] = []
        newlines = 0
        read_bytes = 0
        while pos > 0 and newlines <= count and read_bytes < (count + 1) * MAX_LINE:
            size = min(BLOCK, pos)
            pos -= size
            handle.seek(pos)
            chunk = handle.read(size)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
            read_bytes += size
        data = b"".join(reversed(chunks))
    if data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        return []
    lines = data.split(b"\n")
    if pos > 0:
        lines = lines[1:] if len(lines) > 1 else [lines[0]]  # the first one may be partial
    return [line[-MAX_LINE:] for line in lines[-count:]]


def last_lines(path: Path, count: int) -> list[str]:
    """The last ``count`` lines of the log, continuing into rotated files if needed."""
    if count <= 0:
        return []
    collected: list[bytes] = []
    candidates = [path] + [path.with_name(f"{path.name}.{i}") for i in range(1, 100)]
    for candidate in candidates:
        if not candidate.exists():
            break
        need = count - len(collected)
        collected = _last_lines_of_file(candidate, need) + collected
        if len(collected) >= count:
            break
    return [line.decode("utf-8", "replace").rstrip("\r") for line in collected[-count:]]
