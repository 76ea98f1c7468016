"""Start the one managed server of a project directory in the background.

The library does not print: ``start`` reports log lines and progress through callbacks and
returns a result; failures are raised as DevServerError with a hint. Every signal goes
through an identity-checked psutil handle (see identity.py); a stale state file is removed,
never acted on. The supervisor is forked from this process when it can be (one thread, on
Linux), else spawned; a failed or interrupted start is undone by undo.py.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devserver.config import Settings
from devserver.errors import StartError
from devserver.fetch.binaries import Binary
from devserver.server import datadir
from devserver.server.identity import supervisor_alive
from devserver.server.marker import SUPERVISOR, marker_env
from devserver.server.prepare import prepare
from devserver.server.readiness import LineSink, LogEcho, wait_ready
from devserver.server.state import ServerState, current_state, project_lock
from devserver.server.undo import SupProc, discard, undo
from devserver.supervisor.fork import can_fork, fork_supervisor
from devserver.supervisor.launch import PACKAGE_PARENT, launch_supervisor, supervisor_env
from devserver.supervisor.owner import identity
from devserver.supervisor.wire import encode_spec
from devserver.system import signals, spawn


@dataclass(frozen=True)
class StartResult:
    state: ServerState
    already_running: bool
    stale: ServerState | None = None
    broke_away: bool = True
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()  # e.g. the log file cannot be written (the server runs)
    supervised: bool = True  # already running, but its supervisor is gone: log not captured


def start(
    settings: Settings,
    on_line: LineSink | None = None,
    on_binary: Callable[[Binary], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    supervisor: tuple[subprocess.Popen[bytes], bool] | None = None,
    owner_pid: int = 0,
    owner_folder: str = "",
) -> StartResult:
    """Start the server in the background and return once it answers PING.

    Already running: returns ``already_running=True`` and touches nothing. Failure (exit at
    once, timeout): kills what it started, removes the state file, raises StartError with
    the log's last lines in the hint. ``supervisor`` is one the caller launched early with
    :func:`launch_supervisor` (its start-up then overlaps our checks); it is told to exit,
    by closing its stdin without a spec, when nothing is to be started. ``owner_pid``: the
    server is stopped once that process has exited (supervisor/owner.py; ephemeral
    servers); ``owner_folder``: a folder the supervisor then removes too (the ephemeral
    server's temporary one, which its dead owner can no longer remove).

    Ctrl+C before the server was handed to its supervisor undoes the start (and raises
    KeyboardInterrupt); once handed over, a Ctrl+C is too late to matter and the start
    returns normally: the caller is never told "interrupted" about a server left running.

    With no ``supervisor`` given, on Linux in a single-threaded process, the supervisor is
    forked from this process once the checks passed (``fork.fork_supervisor``: no new
    interpreter before the server's spawn); elsewhere one is spawned at once, as above.
    """
    began = clock()
    sup: SupProc | None
    if supervisor is not None:
        sup, broke_away = supervisor
    elif can_fork():
        sup, broke_away = None, True
    else:
        sup, broke_away = launch_supervisor(marker_env(settings, SUPERVISOR))
    result: StartResult | None = None
    try:
        with signals.interrupt_once() as hurried:
            result = _start(
                settings,
                sup,
                broke_away,
                on_line,
                on_binary,
                clock,
                began,
                hurried,
                (owner_pid, owner_folder),
            )
    except KeyboardInterrupt:
        if result is None:
            raise
    assert result is not None
    return result


def _start(
    settings: Settings,
    sup: SupProc | None,
    broke_away: bool,
    on_line: LineSink | None,
    on_binary: Callable[[Binary], None] | None,
    clock: Callable[[], float],
    began: float,
    hurried: Callable[[], bool],
    owner: tuple[int, str] = (0, ""),
) -> StartResult:
    """The body of :func:`start`, run where a second Ctrl+C cannot abort the cleanup.

    ``sup`` None: fork the supervisor once the checks passed (no thread may start before)."""
    launched = handed_over = False
    try:
        with project_lock(settings.lock_file, wait=settings.startup_timeout):
            state, proc = current_state(settings)
            if state is not None and proc is not None:
                if sup is not None:
                    discard(sup)
                return StartResult(state, True, supervised=supervisor_alive(state))
            ready = prepare(settings, state, on_binary)
            if owner[0]:
                _pid, ready.spec["owner_create_time"], ready.spec["owner_start_ticks"] = identity(
                    owner[0]
                )
                ready.spec["owner_pid"] = owner[0]
                ready.spec["owner_folder"] = owner[1]
            echo = LogEcho(Path(ready.spec["log_file"]), on_line)
            launched = True  # from here on the supervisor may be running a server
            forked = False
            if sup is None and can_fork():  # checked again: still one thread?
                python = spawn.python_for_background()
                # A Ctrl+C now is delivered once ``sup`` holds the fork, so the undo sees it.
                with signals.sigint_blocked():
                    try:
                        env = supervisor_env(marker_env(settings, SUPERVISOR))
                        sup = fork_supervisor(ready.spec, python, env, PACKAGE_PARENT)
                        forked = True
                    except OSError:
                        pass  # no fork (EAGAIN, ENOMEM, EMFILE): spawn a supervisor instead
            if not forked:
                sup = sup or launch_supervisor(marker_env(settings, SUPERVISOR))[0]
                assert sup.stdin is not None
                sup.stdin.write(encode_spec(ready.spec))
                sup.stdin.flush()
            assert sup is not None
            report = SupervisorReport(sup)
            try:
                state = wait_ready(settings, sup, echo, clock, clock(), report.failure)
            except StartError as exc:
                if echo.load_failure and datadir.has_data(ready.data_dir):
                    exc.hint += (
                        f"\n(the data in {ready.data_dir} is kept; if the server cannot load "
                        "it, run the version that wrote it, or move the folder aside)"
                    )
                raise
            datadir.record_version(ready.data_dir, ready.binary.version)
            assert sup.stdin is not None
            sup.stdin.write(b"ok\n")  # the lifeline: the supervisor keeps the server now
            sup.stdin.close()
            if not forked and sup.stdout is not None:  # its report is for a failed start only
                sup.stdout.close()  # (a forked one's is closed when it is reaped)
            handed_over = True
    except KeyboardInterrupt:
        if not handed_over:  # Ctrl+C while checking or waiting: undo
            undo(settings, sup, launched, hurried)
            raise
    except BaseException:  # a failed check or a failed start
        undo(settings, sup, launched, hurried)
        raise
    try:
        echo.settle(state.pid if state is not None and ready.log_writable else 0)
    except KeyboardInterrupt:
        pass  # only the last log lines' echo is cut short: the server runs, tracked
    assert state is not None  # wait_ready's, as it was handed over
    return StartResult(state, False, ready.stale, broke_away, clock() - began, ready.warnings)


class SupervisorReport:
    """What a detached supervisor says on its stdout before it recorded the state: at most
    one JSON line naming a start-up failure (after it stopped the server).

    Read only once the supervisor has exited (then the pipe ends at once: nothing else holds
    its write end), by a short-lived thread so that no platform needs a non-blocking pipe and
    a read can never hang ``start``. No thread runs during a normal start: one would stop
    the next ``start.start`` of this process from forking its supervisor
    (``fork.can_fork``).
    """

    def __init__(self, sup: SupProc) -> None:
        self.sup = sup
        self.lines: list[bytes] = []

    def _read(self, stream: Any) -> None:
        try:
            for line in stream:
                self.lines.append(line)
        except (OSError, ValueError):
            pass
        finally:
            stream.close()

    def failure(self, wait: float = 1.0) -> StartError | None:
        """The reported failure, if any (waits up to ``wait`` s for the pipe to end)."""
        stream = self.sup.stdout
        if stream is None or self.sup.poll() is None:
            return None
        reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        reader.start()
        reader.join(wait)
        for line in list(self.lines):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("error"):
                return StartError(str(data["error"]), hint=str(data.get("hint") or ""))
        return None
