"""Waiting for a started server: echo its log, poll PING, notice an early exit or a timeout.

mirakuru's shape: small boolean probes (``resp.ping``, the state file's status, the
supervisor's liveness) and one loop that polls them a few milliseconds apart.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from . import resp
from .config import Settings
from .errors import StartError, StateError
from .state import ServerState, read_state
from .tail import last_lines, printable

LineSink = Callable[[str], None]


class LogEcho:
    """Hands a sink what the log gained since the start, opening and closing it each time.

    Open-read-close per poll, so this reader never holds the file across a rotation (which
    Windows would refuse); lines are made terminal-safe like ``invoke tail`` does.
    """

    def __init__(self, path: Path, sink: LineSink | None) -> None:
        self.path, self.sink = path, sink
        try:
            self.offset = path.stat().st_size
        except OSError:
            self.offset = 0
        self.partial = b""

    def settle(self, quiet: float = 0.002, limit: float = 0.05) -> None:
        """After PING answered, show what the tee is still writing: lines the server printed
        before it answered can be a few milliseconds behind in the file. Stops once the log
        has not grown for ``quiet`` seconds, and after ``limit`` at most."""
        if self.sink is None:
            return
        deadline = time.monotonic() + limit
        while True:
            before = self.offset
            self.poll()
            if time.monotonic() >= deadline:
                return
            time.sleep(quiet)
            self.poll()
            if self.offset == before:
                return

    def poll(self) -> None:
        if self.sink is None:
            return
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(1 << 20)
        except OSError:
            return
        self.offset += len(data)
        data = self.partial + data
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        for line in data[:cut].split(b"\n")[:-1]:
            self.sink(printable(line))


def tail_hint(log_file: Path, count: int = 20) -> str:
    """The log's last lines, for the hint of a failed start."""
    lines = last_lines(log_file, count)
    body = "\n".join(lines) if lines else "(the log is empty)"
    return f"last log lines ({log_file}):\n{body}"


def _exited(state: ServerState | None, log_file: Path) -> StartError | None:
    if state is not None and state.status == "exited":
        return StartError(
            f"{state.flavor} exited during startup with {state.exit_status}",
            hint=tail_hint(log_file),
        )
    return None


def _read(settings: Settings) -> ServerState | None:
    try:
        return read_state(settings.state_file)
    except StateError:
        return None  # being replaced right now: look again


def wait_ready(
    settings: Settings,
    sup: subprocess.Popen[bytes],
    echo: LogEcho,
    clock: Callable[[], float],
    began: float,
) -> ServerState:
    """Poll state file, log and PING until ready; raise StartError on exit or timeout.

    A NOAUTH answer counts as ready (the server is up; we may lack its password), LOADING
    does not (it is still reading its data).
    """
    deadline = began + settings.startup_timeout
    host = resp.connect_host(settings.host)
    log_file = echo.path
    while True:
        echo.poll()
        state = _read(settings)
        failure = _exited(state, log_file)
        if failure:
            raise failure
        if state is not None:
            answer = resp.ping(host, settings.port, timeout=0.25, password=settings.password)
            if answer in ("ready", "auth"):
                return state
        if sup.poll() is not None:
            echo.poll()
            # The supervisor marks the state "exited" before it ends: look once more.
            raise _exited(_read(settings), log_file) or StartError(
                f"the supervisor exited before the server was ready (code {sup.returncode})",
                hint=tail_hint(log_file),
            )
        if clock() >= deadline:
            raise StartError(
                f"the server did not answer PING within {settings.startup_timeout:g}s",
                hint=tail_hint(log_file) + "\n(raise server.startup_timeout or --timeout)",
            )
        time.sleep(0.002)
