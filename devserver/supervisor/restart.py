"""After a crash: whether the supervisor starts the server again, when, and how.

Why restart at all: a server killed by the OOM killer, a bug or a kill -9 otherwise stays
down until someone notices, and the application's queue with it. The rule is systemd's
``Restart=on-failure`` with ``StartLimitBurst``/``StartLimitIntervalSec``:

- only a failure counts: a non-zero exit code or a signal, after the server once answered
  PING (a server that never came up is ``start``'s failure to report), with no stop asked
  for. SHUTDOWN from a client (exit code 0) and every stop, restart or reset of the tool
  never lead to a restart;
- the restart is the first launch again (same argv, environment, data folder, password
  route), after a back-off that grows from 0.5 s to a few seconds;
- more than ``restart_limit`` crashes within ``restart_window`` seconds and the supervisor
  gives up, leaving a record ``status`` reports.

A restart takes the project lock (as ``start`` and ``stop`` do) and goes ahead only while
the state file still names the server that crashed: a stop or start that ran meanwhile
(they remove or replace that record under the same lock) wins, and no restart races it.
Nothing here touches the server's data: the server loads what it saved (Redis's
append-only file, Dragonfly's snapshot) on its own.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from devserver.server import resp
from devserver.supervisor.statefile import mark_state, record_state
from devserver.supervisor.wire import Spec
from devserver.system import files, host, kill, lifetime

if TYPE_CHECKING:
    from devserver.supervisor.core import ServerProc, Supervisor

    Spawner = Callable[[Spec, str], ServerProc]

FIRST_DELAY = 0.5  # seconds before the first restart
MAX_DELAY = 4.0  # the back-off doubles up to this
LOCK_WAIT = 30.0  # a start or stop holding the project lock is done well within this
EXIT_GAVE_UP = 3  # the supervisor's exit code once it gave up (as systemd's "failed" unit)


def wanted(spec: Spec, code: int, answered: bool, stop_requested: bool) -> bool:
    """Whether this exit calls for a restart under the spec's policy (see the module doc)."""
    return (
        spec.get("restart", "no") == "on-failure" and answered and not stop_requested and code != 0
    )


class Policy:
    """The crash history of one supervisor: the back-off before the next restart, or None
    once there were more than ``limit`` crashes within ``window`` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.crashes: list[float] = []

    def crashed(self, now: float) -> float | None:
        """Count a crash at ``now`` (monotonic seconds): the delay before restarting, or
        None when this crash is one too many (give up)."""
        self.crashes = [t for t in self.crashes if now - t < self.window] + [now]
        count = len(self.crashes)
        if count > self.limit:
            return None
        return float(min(FIRST_DELAY * 2.0 ** (count - 1), MAX_DELAY))

    def gave_up_text(self, last_exit: str) -> str:
        """What ``status`` shows once the supervisor gave up."""
        return (
            f"crashed {len(self.crashes)} times in {self.window:g} s, gave up; "
            f"last exit: {last_exit}; see `invoke tail`"
        )


@contextmanager
def project_lock(
    path: str, stop: threading.Event | None = None, wait: float = LOCK_WAIT
) -> Iterator[bool]:
    """The project lock ``start`` and ``stop`` hold (server/state.py): True once held, False
    when it could not be had within ``wait`` seconds or ``stop`` was set while waiting (a
    ``stop`` holds the lock while it asks this supervisor to end: then no restart happens)."""
    try:
        handle = open(path, "a+b")  # noqa: SIM115 (closed by the with below)
    except OSError:
        yield False
        return
    with handle:
        deadline = time.monotonic() + wait
        while not files.try_lock(handle):
            if time.monotonic() >= deadline:
                yield False
                return
            if stop is not None and stop.wait(0.05):
                yield False
                return
            if stop is None:
                time.sleep(0.05)
        yield True


def still_ours(spec: Spec, pid: int) -> bool:
    """Whether the state file still names the server ``pid`` (no stop or start came since)."""
    try:
        with open(spec["state_file"], encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("pid") == pid


def secret_path(spec: Spec, secret_dir: str) -> str:
    """The password file the first launch used (kept until the supervisor ends)."""
    secret = spec.get("secret_file")
    if not secret_dir or not secret:
        return ""
    return os.path.join(secret_dir, secret[0])


def spawn_again(spec: Spec, secret: str, popen: Spawner | None) -> ServerProc:
    """The first launch again. POSIX: fork and exec as the bootstrap does, so the server gets
    the parent-death signal again (the supervisor has threads by now: the child runs only
    the os calls of ``posix._exec_child`` before exec, which touch no lock another thread
    may hold). Windows: ``popen`` (``starting.spawn_server``, as the first time). OSError
    when it cannot run."""
    if host.has_fork():
        from devserver.system import posix  # POSIX only

        return posix.spawn(spec, secret, posix.load_prctl())
    if popen is None:
        raise OSError("no way to start the server again here")
    return popen(spec, secret)


def wait_answered(
    spec: Spec, proc: ServerProc, give_up: Callable[[], bool], timeout: float
) -> float | None:
    """Poll PING as ``start`` does until the server answers: the seconds it took, or None
    when it exited, ``give_up()`` turned true (a stop) or ``timeout`` passed."""
    began = time.monotonic()
    address = resp.connect_host(spec["host"])
    delay = 0.005
    while time.monotonic() - began < timeout:
        if proc.poll() is not None or give_up():
            return None
        answer = resp.ping(address, spec["port"], timeout=0.25, password=spec["password"])
        if answer in ("ready", "auth"):
            return time.monotonic() - began
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)
    return None


def exit_record(status: str, at: float | None = None) -> dict[str, Any]:
    """The state file's fields for the last crash: its status ("signal SIGKILL") and when."""
    return {"last_exit": status, "last_exit_at": time.time() if at is None else at}


# --- the restart, as the supervisor's run loop calls it ---------------------------------------


def after_crash(sup: Supervisor, code: int, writer: Any) -> ServerProc | None:
    """After a crash: back off, then start the server again the same way and record it (the
    supervisor's ``proc`` is then the new server); None when the supervisor gives up or a
    stop or start of the project came first."""
    spec, old = sup.spec, sup.proc.pid
    status = kill.describe_exit(code)
    last = exit_record(status)
    delay = sup.policy.crashed(time.monotonic())
    if delay is None:
        sup.gave_up = sup.policy.gave_up_text(status)
        writer.marker(f"the server {sup.gave_up}")
        mark_state(spec, old, {"gave_up": sup.gave_up, "restarts": sup.restarts, **last})
        return None
    changes = {"status": "restarting", "exit_status": status, "restarts": sup.restarts}
    mark_state(spec, old, {**changes, **last})
    if sup.stop_requested.wait(delay):  # a stop during the back-off: finish_state removes
        writer.marker("not restarted: a stop or start of this project came first")  # the record
        return None
    with project_lock(spec["lock_file"], sup.stop_requested) as held:
        if not held or sup.stop_requested.is_set() or not still_ours(spec, old):
            writer.marker("not restarted: a stop or start of this project came first")
            return None
        try:
            proc = spawn_again(spec, secret_path(spec, sup.secret_dir), sup.popen)
        except OSError as exc:
            writer.marker(f"could not restart {spec['binary']}: {exc}")
            return None
        sup.proc = proc
        sup.job = lifetime.bind_to_this_process(proc)  # Windows: the new server in a job too
        sup.restarts += 1
        try:
            extra = {"restarts": sup.restarts, **last}
            record_state(spec, proc.pid, sup.control_port, sup.token, extra)
        except OSError as exc:
            proc.kill()
            proc.wait()
            writer.marker(f"could not record the restarted server, so it was killed: {exc}")
            return None
    return proc


def announce(sup: Supervisor, code: int, writer: Any) -> None:
    """The restart's one log line, once the new server answers PING (or could not); the
    foreground console gets it too."""
    timeout = float(sup.spec.get("startup_timeout", 30.0))
    interrupted = False
    try:
        took = wait_answered(sup.spec, sup.proc, sup.stop_requested.is_set, timeout)
    except KeyboardInterrupt:  # foreground Ctrl+C: the line first, then the stop
        took, interrupted = None, True
    how = f"answers PING after {took:.2f}s" if took is not None else "has not answered PING"
    line = (
        f"restarted the server after it crashed ({kill.describe_exit(code)}): "
        f"restart {sup.restarts}, pid {sup.proc.pid} {how}"
    )
    writer.marker(line)
    if sup.console:
        sup.console(f"[devserver] {line}\n")
    if interrupted:
        raise KeyboardInterrupt
