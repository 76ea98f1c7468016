"""The tee: the server's output copied, line-stamped, to the log writer and the console.

Why chunks rather than lines: the tee must keep up with a server that logs hundreds of
thousands of lines a second. It reads whatever the pipe holds (``read1``), prefixes every
complete line with one timestamp in a single ``replace``, and hands the block to the
writer (logs.py), which buffers whole lines and writes them out in few system calls.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from devserver.supervisor.logs import FLUSH_INTERVAL, RotatingWriter

CONSOLE_PENDING = 256  # blocks (each up to 64 KiB) a stalled console may fall behind


class BackgroundSink:
    """Feeds a slow consumer (the console) from its own thread; never blocks the caller.

    Why: foreground mode prints the log on the console too, and a console can stall
    (scroll-lock, a paused pager, a slow remote terminal). Called inline, it would stall the
    tee and then the server. Blocks beyond ``max_pending`` are dropped and counted; a note
    with the count follows once the consumer catches up (the log file has every line).
    """

    def __init__(self, sink: Callable[[str], object], max_pending: int = 0) -> None:
        self.sink = sink
        self.queue: queue.Queue[str | None] = queue.Queue(max_pending or CONSOLE_PENDING)
        self.dropped = 0
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="console-sink", daemon=True)
        self.thread.start()

    def __call__(self, text: str) -> None:
        try:
            self.queue.put_nowait(text)
        except queue.Full:
            with self._lock:
                self.dropped += text.count("\n")

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is not None:
                    self.sink(item)
                if item is None or self.queue.empty():
                    with self._lock:
                        dropped, self.dropped = self.dropped, 0
                    if dropped:
                        self.sink(
                            f"[devserver] the console fell behind: {dropped} log lines "
                            "not shown here (the log file has them all)\n"
                        )
            except Exception:  # a broken console must not end the tee
                pass
            if item is None:
                return

    def close(self, timeout: float = 2.0) -> None:
        """Let the consumer finish what is queued, but never wait longer than ``timeout``."""
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self.thread.join(timeout)


def _flusher(writer: RotatingWriter, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval / 2):
        writer.flush_if_due(interval)


def tee(
    stream: Any,
    writer: RotatingWriter,
    console: Callable[[str], None] | None = None,
    chunk: int = 65536,
    max_line: int = 1024 * 1024,
) -> int:
    """Copy a server's output stream to the writer until EOF; return the number of lines.

    ``stream`` is a binary stream with ``read1`` (a Popen pipe). Bytes are decoded as UTF-8
    with replacement (text mode would use the ANSI code page on Windows and can raise), CRLF
    becomes LF, and a partial line waits for its end (or is cut at ``max_line`` bytes).
    ``console`` gets each timestamped block through a :class:`BackgroundSink`.
    """
    sink = BackgroundSink(console) if console is not None else None
    stop = threading.Event()
    flusher = threading.Thread(target=_flusher, args=(writer, stop, FLUSH_INTERVAL), daemon=True)
    flusher.start()
    pending = b""
    total = 0
    try:
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
            total += _emit(complete, writer, sink)
            if drained:
                writer.flush()
            else:
                writer.flush_if_due()
        if pending:
            total += _emit(pending + b"\n", writer, sink)
    finally:
        stop.set()
        writer.flush()
        if sink is not None:
            sink.close()
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
