"""Talking to the person: colours, log-line highlighting, progress, JSON.

The rest of the library never prints; the tasks call these. Colour is used only when the
stream is a terminal and NO_COLOR is unset (https://no-color.org), and colorama makes ANSI
codes work on old Windows consoles. Messages go to stderr, data (JSON) to stdout, so
``--json`` output can be piped.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any, TextIO

from devserver.system import host

_RESET = "\033[0m"
_COLOURS = {
    "red": "\033[31m",
    "yellow": "\033[33m",
    "green": "\033[32m",
    "dim": "\033[2m",
    "bold": "\033[1m",
    "cyan": "\033[36m",
}
# Redis marks warnings with " # " (and notices with " * "); glog prefixes E/W/F plus date.
_ERROR_RE = re.compile(r"\b(ERROR|FATAL|CRITICAL|PANIC)\b|^(\[[^]]*\] )?[EF]\d{4} ")
_WARN_RE = re.compile(r"\bWARN(ING)?\b|^(\[[^]]*\] )?W\d{4} | # ", re.IGNORECASE)
_colour_ready: dict[int, bool] = {}


def use_colour(stream: TextIO) -> bool:
    """Colour only for a terminal, never when NO_COLOR is set."""
    key = id(stream)
    if key not in _colour_ready:
        enabled = bool(getattr(stream, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ
        if enabled:
            host.enable_ansi(stream)
        _colour_ready[key] = enabled
    return _colour_ready[key]


def paint(text: str, colour: str, stream: TextIO = sys.stderr) -> str:
    return f"{_COLOURS[colour]}{text}{_RESET}" if use_colour(stream) else text


# Redis/Valkey: "pid:role dd Mon yyyy hh:mm:ss.mmm <level> message", level one of
# . (debug) - (verbose) * (notice) # (warning), behind our tee's "[date time] " stamp.
_REDIS_LINE_RE = re.compile(
    r"^(?:\[[^]]*\] )?\d+:[A-Za-z] \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d\.\d{3} ([.*#-]) (.*)$"
)
# Redis logs some plain notices at "#" (the warning level) so they always show: its start and
# shutdown. They are not warnings to a person scanning with `tail --level`.
_REDIS_NOTICE_RE = re.compile(
    r"^(oO0OoO0OoO0Oo|Redis version=|Valkey version=|Configuration loaded|Server initialized|"
    r"User requested shutdown|Redis is now ready to exit|Valkey is now ready to exit|"
    r"Saving the final RDB snapshot|DB saved on disk|Received SIG\w+ scheduling shutdown)"
)
_REDIS_ERROR_RE = re.compile(
    r"\b(error|fatal|failed|can't|cannot|unable|unrecoverable|refus\w*)\b", re.IGNORECASE
)


def _redis_level(char: str, message: str) -> str:
    """The level Redis gave the line: only "#" can be a warning (or an error it describes)."""
    if char != "#" or _REDIS_NOTICE_RE.match(message):
        return "info"
    return "error" if _REDIS_ERROR_RE.search(message) else "warning"


def level_of(line: str) -> str:
    """'error', 'warning' or 'info' for a log line (Redis, glog and .NET styles)."""
    redis_line = _REDIS_LINE_RE.match(line)
    if redis_line:
        return _redis_level(redis_line.group(1), redis_line.group(2))
    if _ERROR_RE.search(line):
        return "error"
    if _WARN_RE.search(line):
        return "warning"
    return "info"


def tolerant_stdout() -> None:
    """Never crash on a character the console cannot show: replace it instead.

    Redirected on Windows, stdout is encoded with the ANSI code page (cp1252), and its
    default error handler is "strict": a server log line or a path with, say, Japanese
    characters would raise UnicodeEncodeError in the middle of ``invoke start``. (stderr
    already uses "backslashreplace".)
    """
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="replace")


def log_line(line: str, stream: TextIO | None = None) -> None:
    """Print a server log line, red for errors and yellow for warnings."""
    out = stream or sys.stdout
    level = level_of(line)
    if level == "error":
        line = paint(line, "red", out)
    elif level == "warning":
        line = paint(line, "yellow", out)
    out.write(line + "\n")
    out.flush()


def info(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def ok(text: str) -> None:
    print(paint(text, "green"), file=sys.stderr, flush=True)


def warn(text: str) -> None:
    print(paint("warning: ", "yellow") + text, file=sys.stderr, flush=True)


def error(message: str, hint: str = "") -> None:
    """The one-line reason, then the hint (possibly several lines) dimmed."""
    print(paint("error: ", "red") + message, file=sys.stderr)
    if hint:
        print(paint("hint: ", "dim") + hint, file=sys.stderr)
    sys.stderr.flush()


def print_json(data: Any) -> None:
    """JSON modes print the object and nothing else on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def human_seconds(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


class Progress:
    """A download progress bar on a terminal; a few plain lines (every 25%) otherwise."""

    def __init__(self, label: str, total: int | None, stream: TextIO = sys.stderr) -> None:
        self.label, self.total, self.stream = label, total, stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.done = 0
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._next_quarter = 25

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw >= 0.1:
                self._last_draw = now
                self._draw()
        elif self.total:
            percent = done * 100 // self.total
            while percent >= self._next_quarter and self._next_quarter < 100:
                self.stream.write(f"{self.label}: {self._next_quarter}%\n")
                self._next_quarter += 25

    def _draw(self) -> None:
        rate = self.done / max(time.monotonic() - self.started, 1e-6)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            text = (
                f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}% "
                f"{human_bytes(self.done)}/{human_bytes(self.total)} {human_bytes(rate)}/s"
            )
        else:
            text = f"\r{self.label} {human_bytes(self.done)} {human_bytes(rate)}/s"
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self._draw()
            self.stream.write("\n")
        else:
            self.stream.write(f"{self.label}: done, {human_bytes(self.done)}\n")
        self.stream.flush()


Cell = str | tuple[str, str]


def table(headers: list[str], rows: list[list[Cell]], stream: TextIO | None = None) -> None:
    """Aligned columns, header dimmed; a cell given as (text, colour) is painted.

    Padding is computed on the plain text, so colour codes never break the alignment.
    """
    out = stream or sys.stdout
    plain = [[c if isinstance(c, str) else c[0] for c in row] for row in rows]
    widths = [
        max([len(h)] + [len(r[i]) for r in plain if i < len(r)]) for i, h in enumerate(headers)
    ]
    out.write(
        "  ".join(
            paint(h.ljust(w), "dim", out) for h, w in zip(headers, widths, strict=True)
        ).rstrip()
        + "\n"
    )
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text, colour = (cell, "") if isinstance(cell, str) else cell
            padded = text.ljust(widths[i]) if i < len(row) - 1 else text
            cells.append(paint(padded, colour, out) if colour else padded)
        out.write("  ".join(cells) + "\n")
    out.flush()


def line(text: str, colour: str = "", stream: TextIO | None = None) -> None:
    """A line of report output on stdout (optionally painted), e.g. verify's summary."""
    out = stream or sys.stdout
    out.write((paint(text, colour, out) if colour else text) + "\n")
    out.flush()
