"""``invoke stop``: one time budget, an honest account of how the server ended.

Why one budget: ``server.stop_timeout`` is what a person waits at most, whatever the server
does (hangs on SHUTDOWN, answers +OK and stays up, ignores SIGTERM). The budget is split:
the graceful request gets the first 70 %, SIGTERM the rest, then a kill. The one exception
is a server that is visibly saving (its log says so, or files in its data folder grow):
killing it would lose the data being written, so ``stop`` keeps waiting, with progress
reported through ``on_progress``, up to ``server.save_timeout``. The graceful request and
the save watch are in graceful.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from devserver.config import Settings
from devserver.errors import LockBusy, StateError, StopError, UntrustedState
from devserver.server.graceful import (
    GRACEFUL_SHARE,
    Request,
    SaveWatch,
    hopeless,
    save_progress,
    why_forced,
)
from devserver.server.identity import supervisor_alive
from devserver.server.state import (
    ServerState,
    current_state,
    project_lock,
    read_state,
)
from devserver.supervisor.fork import reap_forked
from devserver.system import kill, wsl

Progress = Callable[[str], None]

KILL_WAIT = 1.0  # after SIGKILL: the OS ends the process at once, this only guards a hang
PROGRESS_EVERY = 2.0


class StopStep(str, Enum):
    """The step a stop has reached, and in the end what ended the server: its own graceful
    exit (also after a plan's own terminate), SIGTERM, or a kill. A str: it compares equal
    to its value, and JSON and f-strings show the value ("kill")."""

    SHUTDOWN = "shutdown"
    SIGTERM = "SIGTERM"
    KILL = "kill"

    def __str__(self) -> str:  # f-strings and str() give the value, on every Python
        return self.value


@dataclass(frozen=True)
class StopResult:
    """What happened. ``method`` is the StopStep that ended the server ("" when nothing
    ran). ``data_at_risk``: a save was asked for and may not have happened (the caller exits
    1)."""

    state: ServerState | None
    was_running: bool
    forced: bool = False
    stale: bool = False
    seconds: float = 0.0
    method: StopStep | Literal[""] = ""
    refused: str = ""  # the server's error reply to SHUTDOWN
    problem: str = ""  # why the graceful request alone did not end it
    exit_status: str = ""  # "code 0", "signal SIGKILL"; "" when unknown
    saving_seconds: float = 0.0  # waited past the budget while the server saved
    data_at_risk: bool = False
    untrusted: str = ""  # the state file could not be trusted (why); nothing was signalled
    state_left: str = ""  # the state file could not be removed (why)
    found_by: str = ""  # "state", or "process scan" when the state file did not name it


def _gone(proc: Any) -> bool:
    """Exited (a zombie counts: the supervisor, its parent, reaps it)."""
    import psutil  # not at the top: a stop with nothing running never loads it (~40 ms)

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
    Where the lock file cannot be opened at all the stop goes on without it.
    """
    with ExitStack() as stack:
        try:
            stack.enter_context(project_lock(settings.lock_file))
        except LockBusy:
            if on_progress:
                on_progress("a start or stop of this project is in progress: asking it to end")
            stack.enter_context(_cancelling(settings))
        except StateError:
            pass  # the lock file cannot be opened (a read-only data folder): no start can
            # run there either, and a stop must not need a writable folder
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
    if not settings.data_dir.is_dir():  # no data folder (deleted with the project?)
        return _scan_and_stop(settings, save, on_progress, clock, began, StopResult(None, False))
    with _stop_lock(settings, on_progress):
        try:
            read_state(settings.state_file)
        except UntrustedState as exc:
            left = _remove(settings.state_file)
            base = StopResult(None, False, stale=True, untrusted=exc.message, state_left=left)
            return _scan_and_stop(settings, save, on_progress, clock, began, base)
        state, proc = current_state(settings)
        if state is None:
            base = StopResult(None, was_running=False)
            return _scan_and_stop(settings, save, on_progress, clock, began, base)
        if proc is None:
            left = _remove(settings.state_file)
            base = StopResult(state, was_running=False, stale=True, state_left=left)
            return _scan_and_stop(settings, save, on_progress, clock, began, base)
        result = _end(settings, state, proc, save, on_progress, clock, began)
        end_by = began + settings.stop_timeout + 1.2 + result.saving_seconds
        _wait_supervisor(state, settings.state_file, max(0.3, end_by - clock()))
        left = _remove(settings.state_file)
        reap_forked(state.supervisor_pid)  # forked from this process, so our child: no zombie
        return replace(result, seconds=clock() - began, state_left=left)


def _scan_and_stop(
    settings: Settings,
    save: bool,
    on_progress: Progress | None,
    clock: Callable[[], float],
    began: float,
    base: StopResult,
) -> StopResult:
    """No state file names a live server of ours: stop one the process scan finds (its
    state file lost, corrupt, or its project folder deleted), with the same budget and
    escalation; ``base`` (what the state file told) when there is none."""
    # Here: a normal stop never scans, nor imports the scan.
    from devserver.server.untracked import FOUND_BY_SCAN, end_supervisors, find_untracked

    found = find_untracked(settings)
    if found is None:
        return base
    if found.server is None or found.state is None:
        end_supervisors(found)  # supervisors of a server that is gone: nothing to save
        return base
    if on_progress:
        on_progress(found.describe().split(";")[0] + ": stopping it")
    if found.state.flavor:
        result = _end(settings, found.state, found.server, save, on_progress, clock, began)
    else:  # no flavor known, so no graceful command: end it as a kill would
        kill.kill_tree(found.server)
        result = StopResult(found.state, True, forced=True, method=StopStep.KILL)
    end_supervisors(found)
    return replace(
        result,
        seconds=clock() - began,
        found_by=FOUND_BY_SCAN,
        stale=base.stale,
        untrusted=base.untrusted,
        state_left=base.state_left,
    )


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
    request = Request(
        state, settings, save, budget * GRACEFUL_SHARE, budget + settings.save_timeout
    )
    request.start()
    watch = SaveWatch(settings.flavor_data_dir(state.flavor), Path(state.log_file), clock)
    method, problem, refused = StopStep.SHUTDOWN, "", ""
    kill_deadline = 0.0
    saving_since = 0.0
    next_progress = 0.0
    delay = 0.002
    while not _gone(proc):
        now = clock()
        answer = request.answer
        if answer.startswith("refused ") and not refused:
            refused = answer[len("refused ") :]
        if method == StopStep.SHUTDOWN and hopeless(request, refused):
            problem = why_forced(request, refused, budget)
            term_at = now  # a refusal or an unreachable server: no point waiting
        saving = save and watch.poll()
        due = (method == StopStep.SHUTDOWN and now >= term_at) or (
            method == StopStep.SIGTERM and now >= kill_at
        )
        if due and saving and not refused and now < save_limit:
            saving_since = saving_since or now
            if on_progress and now >= next_progress:
                next_progress = now + PROGRESS_EVERY
                on_progress(save_progress(watch, now - began, settings.save_timeout))
        elif due and method == StopStep.SHUTDOWN:
            problem = problem or why_forced(request, refused, budget)
            inside_wsl = wsl.escalate(settings, state, proc)  # "" unless run through WSL
            if inside_wsl:
                method = StopStep(inside_wsl)
            else:
                method = StopStep(kill.terminate(proc))
                # SIGTERM's share of the budget, also when a save ran past the budget first
                kill_at = max(kill_at, now + budget * (1 - GRACEFUL_SHARE))
                if method == StopStep.KILL:
                    kill_deadline = now + KILL_WAIT
        elif due and method == StopStep.SIGTERM:
            kill.kill_tree(proc)
            problem += "; SIGTERM did not end it either"
            method, kill_deadline = StopStep.KILL, now + KILL_WAIT
        elif method == StopStep.KILL and now >= kill_deadline:
            raise StopError(
                f"{state.flavor} (pid {state.pid}) did not exit even after a kill",
                hint="check it with your OS's process tools",
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.05)
    if method == StopStep.SHUTDOWN:
        left, why = wsl.stop_left_running(settings, state, proc)
        if left:
            method, problem = StopStep(left), why
    if not request.direct:  # the supervisor's "exited <status>" line follows at once
        request.done.wait(timeout=max(0.3, min(1.0, kill_at + 1.2 - clock())))
    if request.done.is_set():  # let the thread end, so a next start may fork (can_fork)
        request.join(timeout=0.5)
    exit_status = request.exit_status
    at_risk = save and (method == StopStep.KILL or exit_status not in ("", "code 0"))
    return StopResult(
        state,
        True,
        found_by="state",
        forced=method != StopStep.SHUTDOWN,
        method=method,
        refused=refused,
        problem=problem if method != StopStep.SHUTDOWN else "",
        exit_status=exit_status,
        saving_seconds=(clock() - saving_since) if saving_since else 0.0,
        data_at_risk=at_risk,
    )


def _wait_supervisor(state: ServerState, state_file: Path, timeout: float) -> None:
    """Let the supervisor log the exit before we go: it removes the state file once the exit
    marker is written (or ends without doing so, if it was killed)."""
    import psutil  # not at the top: a stop with nothing running never loads it (~40 ms)

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
