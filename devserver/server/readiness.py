"""Waiting for a started server: echo its log, poll PING, notice an early exit or a timeout.

mirakuru's shape: small boolean probes (``resp.ping``, the state file's status, the
supervisor's liveness) and one loop that polls them a few milliseconds apart.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from devserver.config import Settings
from devserver.errors import StartError, StateError
from devserver.server import resp
from devserver.server.state import ServerState, read_state
from devserver.system import kill, lifetime
from devserver.system.posix import Child
from devserver.tail import printable

LineSink = Callable[[str], None]


# Redis prints its ASCII-art logo as raw lines (no pid/time prefix) when it thinks it talks
# to a terminal (or with always-show-logo); the Windows builds do it through the pipe too.
# It is noise on a console; the log keeps it.
_ART_RE = re.compile(r"_\._|_\.-|-\._|\.-`|`-\.")
_TEE_STAMP_RE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] ?")
# What servers print when they cannot read the files in their data directory (Redis/Valkey
# RDB and AOF, Dragonfly snapshots, Garnet checkpoints). Only then is the data note useful.
_LOAD_FAILURE_RE = re.compile(
    r"can't handle rdb format|bad file format|wrong signature|short read|"
    r"fatal error loading|error (?:reading|loading|trying to load)|failed to (?:load|recover)|"
    r"unrecoverable error|corrupt|unexpected end of file|invalid (?:rdb|aof|snapshot)|"
    r"appendonly.*(?:truncated|invalid)|manifest",
    re.IGNORECASE,
)
_HINT_LINES = 20
_PID_MARKER = "[devserver] server pid "  # written by the supervisor just before its tee runs


def banner_line(line: str) -> bool:
    """Whether a log line is part of the server's start-up logo (blank lines included)."""
    text = _TEE_STAMP_RE.sub("", line, count=1)
    return not text.strip() or bool(_ART_RE.search(text))


class LogEcho:
    """Hands a sink what the log gained since the start, opening and closing it each time.

    Open-read-close per poll, so this reader never holds the file across a rotation (which
    Windows would refuse); lines are made terminal-safe like ``invoke tail`` does. It also
    keeps this run's last lines (never an earlier run's) for the message of a failed start,
    and leaves the start-up logo out of the live echo.
    """

    def __init__(self, path: Path, sink: LineSink | None) -> None:
        self.path, self.sink = path, sink
        try:
            self.offset = path.stat().st_size
        except OSError:
            self.offset = 0
        self.partial = b""
        self.recent: deque[str] = deque(maxlen=_HINT_LINES)
        self.load_failure = False  # the server said it could not read its data
        self.tee_pids: set[int] = set()  # the supervisor's "server pid N" markers seen

    def settle(
        self, pid: int = 0, quiet: float = 0.002, limit: float = 0.05, tee_wait: float = 1.0
    ) -> None:
        """After PING answered, show what the tee is still writing: lines the server printed
        before it answered can be a few milliseconds behind in the file. Stops once the log
        has not grown for ``quiet`` seconds, and after ``limit`` at most.

        ``pid``: first wait (up to ``tee_wait`` s) for the supervisor's ``server pid <pid>``
        marker, which it writes just before its tee starts. On POSIX the state file is
        written before that (supervisor/bootstrap.py), so PING can answer while the server's
        first lines are still in the pipe."""
        if self.sink is None:
            return
        if pid:
            until = time.monotonic() + tee_wait
            self.poll()
            while pid not in self.tee_pids:
                if time.monotonic() >= until:
                    break
                time.sleep(quiet)
                self.poll()
        if pid:
            # The tee reads the pipe before it writes the log: until it has read everything
            # the server printed before it answered, the log cannot be quiet yet.
            until = time.monotonic() + tee_wait
            while (lifetime.output_unread(pid) or 0) > 0 and time.monotonic() < until:
                time.sleep(quiet)
                self.poll()
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
        for raw in data[:cut].split(b"\n")[:-1]:
            line = printable(raw)
            if banner_line(line):
                continue
            self.recent.append(line)
            text = _TEE_STAMP_RE.sub("", line, count=1)
            own = text.startswith("[devserver]")
            if own and text.startswith(_PID_MARKER) and text[len(_PID_MARKER) :].isdigit():
                self.tee_pids.add(int(text[len(_PID_MARKER) :]))
            if not own and _LOAD_FAILURE_RE.search(line):
                self.load_failure = True
            if self.sink is not None:
                self.sink(line)

    def hint(self) -> str:
        """This run's lines for a failed start: shown once (live, or here when not echoed)."""
        if self.sink is not None:
            return f"the server's output is above; the whole log: `invoke tail` ({self.path})"
        body = "\n".join(self.recent) if self.recent else "(it wrote nothing)"
        return f"this start's last log lines ({self.path}):\n{body}"


def _exited(state: ServerState | None, echo: LogEcho) -> StartError | None:
    if state is not None and state.status == "exited":
        echo.poll()  # the last lines before the exit, so they are shown before the error
        return StartError(
            f"{state.flavor} exited during startup with {state.exit_status}",
            hint=echo.hint(),
        )
    return None


def _read(settings: Settings) -> ServerState | None:
    try:
        return read_state(settings.state_file)
    except StateError:
        return None  # being replaced right now: look again


def _cancelled(settings: Settings, since: float) -> bool:
    """A ``stop`` waiting for this start touches the cancel file (an old one is ignored)."""
    try:
        return settings.cancel_file.stat().st_mtime >= since
    except OSError:
        return False


def wait_ready(
    settings: Settings,
    sup: subprocess.Popen[bytes] | Child,
    echo: LogEcho,
    clock: Callable[[], float],
    began: float,
    reported: Callable[[], StartError | None] | None = None,
) -> ServerState:
    """Poll state file, log and PING until ready; raise StartError on exit or timeout.

    A NOAUTH answer counts as ready (the server is up; we may lack its password), LOADING
    does not (it is still reading its data). ``reported`` gives the supervisor's own account
    of a start-up failure, once it has exited (e.g. the state file could not be written).
    """
    deadline = began + settings.startup_timeout
    host = resp.connect_host(settings.host)
    since = time.time()
    while True:
        echo.poll()
        if _cancelled(settings, since):
            raise StartError(
                "the start was cancelled by `invoke stop`",
                hint="what it had started is stopped; run `invoke start` again when wanted",
            )
        state = _read(settings)
        failure = _exited(state, echo)
        if failure:
            raise failure
        if state is not None:
            answer = resp.ping(host, settings.port, timeout=0.25, password=settings.password)
            # Ready, unless the process we started has exited meanwhile: then what answers
            # is something it left behind (it forked and exited: daemonized), and the
            # supervisor marks the exit and stops that in a moment (supervisor/detached.py).
            if answer in ("ready", "auth") and not lifetime.surely_exited(state.pid):
                return state
        if sup.poll() is not None:
            echo.poll()
            said = reported() if reported is not None else None
            if said is not None:
                said.hint = "\n".join(filter(None, [said.hint, echo.hint()]))
                raise said
            # The supervisor marks the state "exited" before it ends: look once more.
            raise _exited(_read(settings), echo) or StartError(
                "the supervisor exited before the server was ready "
                f"({kill.describe_exit(sup.returncode)})",
                hint=echo.hint(),
            )
        if clock() >= deadline:
            raise StartError(
                f"the server did not answer PING within {settings.startup_timeout:g}s",
                hint=echo.hint() + "\n(raise server.startup_timeout or --timeout)",
            )
        time.sleep(0.002)
