"""``invoke stop``: one time budget, an honest account of how the server ended.

Why one budget: ``server.stop_timeout`` is what a person waits at most, whatever the server
does (hangs on SHUTDOWN, answers +OK and stays up, ignores SIGTERM). The budget is split:
the graceful request gets the first 70 %, SIGTERM the rest, then a kill. The one exception
is a server that is visibly saving (its log says so, or files in its data folder grow):
killing it would lose the data being written, so ``stop`` keeps waiting, with progress
reported through ``on_progress``, up to ``server.save_timeout``.

The graceful request goes to the supervisor (it knows the password the server was started
with), which answers the outcome of SHUTDOWN (``ok``, ``refused <the server's error>``,
``failed <why>``) and later, on the same connection, the server's exit status. Without a
supervisor the flavor's stop commands are sent straight to the server. Both run in a thread
so the loop here can watch the process, the save and the clock together.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from devserver.catalog import get_flavor
from devserver.config import Settings
from devserver.errors import LockBusy, StopError, UntrustedState
from devserver.server import resp
from devserver.server.state import (
    ServerState,
    current_state,
    project_lock,
    read_state,
    supervisor_alive,
)
from devserver.supervisor.bootstrap import reap_forked
from devserver.system import kill, wsl

Progress = Callable[[str], None]

# A refused connect on loopback is immediate; a dead supervisor must not cost seconds.
CONTROL_CONNECT_TIMEOUT = 0.25
GRACEFUL_SHARE = 0.7  # of stop_timeout for SHUTDOWN; SIGTERM gets the rest
KILL_WAIT = 1.0  # after SIGKILL: the OS ends the process at once, this only guards a hang
SAVE_QUIET = 1.0  # data folder unchanged this long: no longer "visibly saving"
PROGRESS_EVERY = 2.0

# Log lines that open and close a save on shutdown (Redis, Valkey; Dragonfly shows its save
# through growing snapshot files instead).
SAVE_STARTED = ("Saving the final RDB snapshot", "Synchronously saving", "Saving snapshot")
SAVE_ENDED = ("DB saved on disk", "Error trying to save", "Failed opening the RDB file")


@dataclass(frozen=True)
class StopResult:
    """What happened. ``method`` is what ended the server: "shutdown" (its own graceful
    exit, also after a plan's own terminate), "SIGTERM" or "kill". ``data_at_risk``: a save
    was asked for and may not have happened (the caller exits 1)."""

    state: ServerState | None
    was_running: bool
    forced: bool = False
    stale: bool = False
    seconds: float = 0.0
    method: str = ""
    refused: str = ""  # the server's error reply to SHUTDOWN
    problem: str = ""  # why the graceful request alone did not end it
    exit_status: str = ""  # "code 0", "signal SIGKILL"; "" when unknown
    saving_seconds: float = 0.0  # waited past the budget while the server saved
    data_at_risk: bool = False
    untrusted: str = ""  # the state file could not be trusted (why); nothing was signalled
    state_left: str = ""  # the state file could not be removed (why)


class _Request(threading.Thread):
    """The graceful request, through the supervisor or straight to the server."""

    def __init__(
        self, state: ServerState, settings: Settings, save: bool, timeout: float, patience: float
    ) -> None:
        super().__init__(daemon=True)
        self.state, self.settings, self.save = state, settings, save
        self.timeout = timeout  # for a direct SHUTDOWN
        self.patience = patience  # for the supervisor's answers, which follow the server's end
        self.answer = ""  # "", then "ok", "refused ...", "failed ...", "unreachable"
        self.exit_status = ""
        self.direct = False
        self.done = threading.Event()

    def run(self) -> None:
        try:
            if not self._via_supervisor():
                self.direct = True
                self._direct()
        finally:
            self.done.set()

    def _via_supervisor(self) -> bool:
        state = self.state
        if not state.control_port:
            return False
        try:
            conn = socket.create_connection(
                ("127.0.0.1", state.control_port), timeout=CONTROL_CONNECT_TIMEOUT
            )
        except OSError:
            return False
        with conn:
            try:
                mode = "save" if self.save else "nosave"
                conn.sendall(f"{state.control_token} stop {mode}\n".encode())
                conn.settimeout(self.patience)
                reader = conn.makefile("rb")
                first = reader.readline().decode("utf-8", "replace").strip()
            except TimeoutError:
                return True  # no answer yet: the request is under way
            except OSError:
                first = ""
            if first in ("", "denied"):
                return False  # closed unanswered (too many clients?) or not our supervisor
            if first.startswith("graceful shutdown failed: "):  # an older supervisor
                first = "failed " + first.split(": ", 1)[1]
            self.answer = first
            try:
                second = reader.readline().decode("utf-8", "replace").strip()
            except OSError:
                return True
            if second.startswith("exited "):
                self.exit_status = second[len("exited ") :]
        return True

    def _direct(self) -> None:
        settings, state = self.settings, self.state
        commands, _ = get_flavor(state.flavor).stop_plan(self.save)
        if not commands:
            self.answer = "ok"
            return
        try:
            resp.call(
                resp.connect_host(state.host),
                state.port,
                commands,
                timeout=self.timeout,
                password=settings.password,
            )
        except resp.ConnectionClosed:
            self.answer = "ok"
        except resp.RespError as exc:
            self.answer = f"refused {exc}"
        except TimeoutError:
            self.answer = ""  # no answer: maybe saving, maybe hung; the loop decides
        except OSError as exc:
            self.answer = f"failed {exc.strerror or exc}"
        else:
            self.answer = "ok"


class _SaveWatch:
    """Is the server visibly saving? Its log since the stop began, and its data folder."""

    def __init__(self, data_dir: Path, log_file: Path, clock: Callable[[], float]) -> None:
        self.data_dir, self.log_file, self.clock = data_dir, log_file, clock
        self.offset = _size(log_file)
        self.first = self._snapshot()
        self.last = self.first
        self.changed_at = -1e9
        self.log_saving = False

    def _snapshot(self) -> dict[str, int]:
        try:
            with os.scandir(self.data_dir) as entries:
                return {e.name: e.stat().st_size + e.stat().st_mtime_ns for e in entries}
        except OSError:
            return {}

    def poll(self) -> bool:
        now = self.clock()
        snap = self._snapshot()
        if snap != self.last:
            self.last, self.changed_at = snap, now
        try:
            with open(self.log_file, "rb") as handle:
                if handle.seek(0, os.SEEK_END) < self.offset:
                    self.offset = 0  # rotated meanwhile
                handle.seek(self.offset)
                text = handle.read(1 << 20).decode("utf-8", "replace")
                self.offset += len(text.encode("utf-8", "replace"))
        except OSError:
            text = ""
        for line in text.splitlines():
            if any(mark in line for mark in SAVE_STARTED):
                self.log_saving = True
            if any(mark in line for mark in SAVE_ENDED):
                self.log_saving = False
        return self.log_saving or now - self.changed_at < SAVE_QUIET

    def written(self) -> int:
        """Bytes in data files that appeared or changed since the stop began."""
        total = 0
        try:
            with os.scandir(self.data_dir) as entries:
                for entry in entries:
                    if self.first.get(entry.name) != self.last.get(entry.name):
                        total += entry.stat().st_size
        except OSError:
            pass
        return total


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _gone(proc: Any) -> bool:
    """Exited (a zombie counts: the supervisor, its parent, reaps it)."""
    import psutil

    try:
        return bool(proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@contextmanager
def _stop_lock(settings: Settings, on_progress: Progress | None) -> Iterator[None]:
    """The project lock; when a start holds it (still waiting for PING), ask it to give up.

    The cancel file is touched while we wait, so only a start that is running now sees a
    fresh one (a file left by a stop that was killed goes stale); the start then stops what
    it spawned and releases the lock. A stop holding the lock simply finishes first.
    """
    with ExitStack() as stack:
        try:
            stack.enter_context(project_lock(settings.lock_file))
        except LockBusy:
            if on_progress:
                on_progress("a start or stop of this project is in progress: asking it to end")
            stack.enter_context(_cancelling(settings))
        yield


@contextmanager
def _cancelling(settings: Settings) -> Iterator[None]:
    """Hold the lock once the start (or stop) in progress released it, touching the cancel
    file until then."""
    done = threading.Event()

    def touch() -> None:
        while not done.is_set():
            try:
                settings.cancel_file.touch()
            except OSError:
                return
            done.wait(0.05)

    toucher = threading.Thread(target=touch, daemon=True)
    toucher.start()
    try:
        wait = settings.startup_timeout + settings.stop_timeout + 10
        with project_lock(settings.lock_file, wait=wait):
            done.set()
            toucher.join()
            _remove(settings.cancel_file)
            yield
    finally:
        done.set()
        toucher.join()
        _remove(settings.cancel_file)


def _remove(path: Path) -> str:
    """Remove the state file; the reason when that is refused (e.g. an immutable data/)."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


def stop(
    settings: Settings,
    save: bool = True,
    on_progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> StopResult:
    """Stop our server within ``stop_timeout`` (longer only while it saves); drop the state."""
    began = clock()
    if not settings.data_dir.is_dir():  # no data folder (or a file there): nothing runs
        return StopResult(None, was_running=False)
    with _stop_lock(settings, on_progress):
        try:
            read_state(settings.state_file)
        except UntrustedState as exc:
            left = _remove(settings.state_file)
            return StopResult(None, False, stale=True, untrusted=exc.message, state_left=left)
        state, proc = current_state(settings)
        if state is None:
            return StopResult(None, was_running=False)
        if proc is None:
            left = _remove(settings.state_file)
            return StopResult(state, was_running=False, stale=True, state_left=left)
        result = _end(settings, state, proc, save, on_progress, clock, began)
        end_by = began + settings.stop_timeout + 1.2 + result.saving_seconds
        _wait_supervisor(state, settings.state_file, max(0.3, end_by - clock()))
        left = _remove(settings.state_file)
        reap_forked(state.supervisor_pid)  # forked from this process, so our child: no zombie
        return replace(result, seconds=clock() - began, state_left=left)


def _end(
    settings: Settings,
    state: ServerState,
    proc: Any,
    save: bool,
    on_progress: Progress | None,
    clock: Callable[[], float],
    began: float,
) -> StopResult:
    """Request, watch, escalate; the loop behind :func:`stop`."""
    budget = wsl.stop_timeout(settings, state)  # longer for Dragonfly under WSL2
    term_at, kill_at = began + budget * GRACEFUL_SHARE, began + budget
    save_limit = began + budget + settings.save_timeout
    request = _Request(
        state, settings, save, budget * GRACEFUL_SHARE, budget + settings.save_timeout
    )
    request.start()
    watch = _SaveWatch(settings.flavor_data_dir(state.flavor), Path(state.log_file), clock)
    method, problem, refused = "shutdown", "", ""
    kill_deadline = 0.0
    saving_since = 0.0
    next_progress = 0.0
    delay = 0.002
    while not _gone(proc):
        now = clock()
        answer = request.answer
        if answer.startswith("refused ") and not refused:
            refused = answer[len("refused ") :]
        if method == "shutdown" and _hopeless(request, refused):
            problem = _why(request, refused, budget)
            term_at = now  # a refusal or an unreachable server: no point waiting
        saving = save and watch.poll()
        due = (method == "shutdown" and now >= term_at) or (method == "SIGTERM" and now >= kill_at)
        if due and saving and not refused and now < save_limit:
            saving_since = saving_since or now
            if on_progress and now >= next_progress:
                next_progress = now + PROGRESS_EVERY
                on_progress(_save_progress(watch, now - began, settings.save_timeout))
        elif due and method == "shutdown" and wsl.is_wsl_server(state.exe, state.argv):
            problem = problem or _why(request, refused, budget)
            method = wsl.escalate(settings, state, proc)  # inside WSL, then wsl.exe last
        elif due and method == "shutdown":
            problem = problem or _why(request, refused, budget)
            method = kill.terminate(proc)
            # SIGTERM's share of the budget, also when a save ran past the budget first
            kill_at = max(kill_at, now + budget * (1 - GRACEFUL_SHARE))
            if method == "kill":
                kill_deadline = now + KILL_WAIT
        elif due and method == "SIGTERM":
            kill.kill_tree(proc)
            problem += "; SIGTERM did not end it either"
            method, kill_deadline = "kill", now + KILL_WAIT
        elif method == "kill" and now >= kill_deadline:
            raise StopError(
                f"{state.flavor} (pid {state.pid}) did not exit even after a kill",
                hint="check it with your OS's process tools",
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.05)
    if method == "shutdown" and wsl.left_running(settings, state):
        # wsl.exe is gone (killed?) but Dragonfly still runs inside WSL: not stopped yet
        problem = "wsl.exe exited but dragonfly kept running inside WSL"
        method = wsl.escalate(settings, state, proc)
    if not request.direct:  # the supervisor's "exited <status>" line follows at once
        request.done.wait(timeout=max(0.3, min(1.0, kill_at + 1.2 - clock())))
    if request.done.is_set():  # let the thread end, so a next start may fork (can_fork)
        request.join(timeout=0.5)
    exit_status = request.exit_status
    at_risk = save and (method == "kill" or exit_status not in ("", "code 0"))
    return StopResult(
        state,
        True,
        forced=method != "shutdown",
        method=method,
        refused=refused,
        problem=problem if method != "shutdown" else "",
        exit_status=exit_status,
        saving_seconds=(clock() - saving_since) if saving_since else 0.0,
        data_at_risk=at_risk,
    )


def _hopeless(request: _Request, refused: str) -> bool:
    """The graceful request cannot succeed: refused, or the server cannot be reached."""
    return bool(refused) or request.answer.startswith("failed ")


def _why(request: _Request, refused: str, budget: float) -> str:
    """Why SIGTERM was needed, in words."""
    via = "the supervisor did not answer, and " if request.direct else ""
    if refused:
        return f"{via}the server refused to stop: {refused}"
    if request.answer.startswith("failed "):
        return f"{via}SHUTDOWN could not be sent: {request.answer[len('failed ') :]}"
    waited = f"{budget * GRACEFUL_SHARE:.1f}s"
    if request.answer == "ok":
        return f"{via}the server accepted SHUTDOWN but was still running after {waited}"
    return f"{via}SHUTDOWN got no answer within {waited}"


def _save_progress(watch: _SaveWatch, elapsed: float, limit: float) -> str:
    written = watch.written()
    size = f"{written / 1024:.0f} KiB" if written < 1 << 20 else f"{written / 1048576:.1f} MiB"
    size = f"{size} written, " if written else ""
    return (
        f"the server is saving its data ({size}{elapsed:.0f}s so far); waiting for it, "
        f"up to server.save_timeout ({limit:g}s)"
    )


def _wait_supervisor(state: ServerState, state_file: Path, timeout: float) -> None:
    """Let the supervisor log the exit before we go: it removes the state file once the exit
    marker is written (or ends without doing so, if it was killed)."""
    import psutil

    if not supervisor_alive(state):  # the same clock-step-proof check as status uses
        return
    try:
        sup = psutil.Process(state.supervisor_pid)
    except psutil.Error:
        return
    deadline = time.monotonic() + min(timeout, 3.0)
    delay = 0.001
    while state_file.exists() and time.monotonic() < deadline:
        if _gone(sup):
            return
        time.sleep(delay)
        delay = min(delay * 1.5, 0.05)
